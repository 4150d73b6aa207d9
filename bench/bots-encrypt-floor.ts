// The floor the bots benchmark compares the gateway's CPU per message with: the gateway's own OMEMO
// engine encrypting for ONE device on an established session, on the same keystore kind as the
// gateway under test (a SQLite file keystore, WAL), in this process. CPU time (user + system) of the
// encrypt calls alone, so other work on a shared machine does not inflate it; each message is
// decrypted by the peer outside the timed part (its ratchet stays in step, as with a real receiver).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeNetwork, chat, makePeer, openTestKeystore, send } from '../test/unit/helpers/omemo-net.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';

/** Mean CPU milliseconds of one engine.encrypt for one device, over `n` messages (after a warm-up). */
export async function encryptFloorMs(n = 1500): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'bots-floor-'));
  const keystores: Array<{ close(): void }> = [];
  try {
    const net = new FakeNetwork();
    const peer = async (jid: string, name: string) => {
      const ks = openTestKeystore(join(dir, `${name}.db`));
      keystores.push(ks);
      return makePeer(net, jid, { ks, name, engine: { bundleFetchesPerMinute: 1e9 } });
    };
    const a = await peer(A, 'alice');
    const b = await peer(B, 'bob');
    // A session confirmed both ways, then a warm-up (JIT, caches).
    const hello = await b.engine.decrypt(B, await send(a, B, 'hello'));
    for (const r of hello.replies) await a.engine.decrypt(A, r);
    await a.engine.decrypt(A, await send(b, A, 'hi'));
    const body = 'bench r1 123 deploy of service-x finished on host-y; 3 warnings, 0 errors; see the dashboard for details.';
    let cpu = 0;
    for (let i = 0; i < 300 + n; i++) {
      const c0 = process.cpuUsage();
      const e = await a.engine.encrypt(A, B, body);
      const c = process.cpuUsage(c0);
      if (i >= 300) cpu += (c.user + c.system) / 1000;
      const d = await b.engine.decrypt(B, chat(a, B, e.children));
      if (!d.ok) throw new Error(`bench: floor decrypt failed (${d.reason})`);
    }
    return cpu / n;
  } finally {
    for (const ks of keystores) ks.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
