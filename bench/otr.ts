// OTR benchmark: the engine's AKE (query to an established session, both sides in one process, no
// network) and per-message encrypt and decrypt in a ping-pong conversation (so DH keys rotate as in
// a real one), against python3-potr doing the same operations in the same run
// (test/interop/otr_bench.py). Every message is checked to arrive intact.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { Keystore } from '../keystore/keystore.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { TrustStore } from '../keystore/trust-store.js';
import { ContactStore } from '../keystore/contact-store.js';
import { Metrics } from '../http/metrics.js';
import { parseXml, xml, type Element } from '../component/xml.js';
import type { EnginePorts } from '../bridges/engine.js';
import { createOtrEngine, type OtrEngine } from '../bridges/otr/engine.js';
import { OMEMO_PYTHON, OMEMO_USER_SCRIPT } from '../test/harness/omemo-user.js';
import { fmtMs, summarize, table, type Stat } from './stats.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';

function engine(): OtrEngine {
  const ks = Keystore.open(':memory:', 'bench-passphrase', { kdf: { N: 1024, r: 8, p: 1 } });
  const ports: EnginePorts = {
    store: createProtocolStore(ks, 'otr'),
    trust: new TrustStore(ks, 'btbv'),
    contacts: new ContactStore(ks),
    keystore: ks,
    pubsub: { publish: () => undefined, retract: () => undefined, localItems: () => [], fetch: async () => null },
    metrics: new Metrics({ processMetrics: false }),
    log: pino({ level: 'silent' }),
    now: () => Date.now(),
    resource: 'gw',
  };
  return createOtrEngine(ports);
}

async function deliver(engines: Record<string, OtrEngine>, first: Element[]): Promise<string[]> {
  const queue = [...first];
  const bodies: string[] = [];
  while (queue.length) {
    const st = parseXml(queue.shift()!.toString());
    const to = String(st.attrs.to).split('/')[0]!;
    const r = await engines[to]!.decrypt(to, st);
    queue.push(...r.replies);
    if (r.ok && r.body !== null) bodies.push(r.body);
  }
  return bodies;
}

async function ours(nAke: number, nMsg: number): Promise<Record<string, Stat>> {
  const ake: number[] = [];
  let a = engine();
  let b = engine();
  await a.ensureIdentity(A);
  await b.ensureIdentity(B);
  for (let i = 0; i < nAke; i++) {
    // A full AKE each time (on the same contexts; the long-term keys are made once, as in use).
    const t = performance.now();
    const sent = await deliver({ [A]: a, [B]: b }, [xml('message', { from: `${A}/gw`, to: B, type: 'chat' }, xml('body', {}, '?OTRv23?'))]);
    ake.push(performance.now() - t);
    if (!b.hasSession(B, `${A}/gw`) || !a.hasSession(A, `${B}/gw`) || sent.length) throw new Error('AKE failed');
  }
  a = engine();
  b = engine();
  await deliver({ [A]: a, [B]: b }, [xml('message', { from: `${A}/gw`, to: B, type: 'chat' }, xml('body', {}, '?OTRv23?'))]);
  const enc: number[] = [];
  const dec: number[] = [];
  const engines = { [A]: a, [B]: b };
  for (let i = 0; i < nMsg; i++) {
    for (const [from, to] of [[A, B], [B, A]] as const) {
      const body = `alert #${i}: disk ${50 + (i % 50)}% full on db-${i % 7}`;
      const t = performance.now();
      const out = await engines[from]!.encrypt(from, to, body);
      const t1 = performance.now();
      const r = await engines[to]!.decrypt(to, parseXml(xml('message', { from: `${from}/gw`, to, type: 'chat' }, ...out.children).toString()));
      const t2 = performance.now();
      if (!r.ok || r.body !== body) throw new Error('OTR round trip failed');
      enc.push(t1 - t);
      dec.push(t2 - t1);
    }
  }
  return { ake: summarize(ake), encrypt: summarize(enc), decrypt: summarize(dec) };
}

function potr(nAke: number, nMsg: number): { stats: Record<string, Stat>; impl: string } | string {
  const script = join(OMEMO_USER_SCRIPT, '..', 'otr_bench.py');
  const r = spawnSync(OMEMO_PYTHON, [script, String(nAke), String(nMsg)], { encoding: 'utf8', timeout: 300000 });
  if (r.status !== 0) return (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').slice(-1)[0]!;
  const last = r.stdout.trim().split('\n').pop()!;
  const j = JSON.parse(last) as { implementation: string; results: Array<{ op: string; median_us: number; p90_us: number; n: number }> };
  return { impl: j.implementation, stats: Object.fromEntries(j.results.map((x) => [x.op, { n: x.n, median: x.median_us / 1000, p90: x.p90_us / 1000 }])) };
}

export async function runOtrBench(): Promise<boolean> {
  const nAke = 10;
  const nMsg = 150;
  console.log(`\n# OTR: AKE (query to session, in process) and per message, ping-pong (${2 * nMsg} messages)`);
  const mine = await ours(nAke, nMsg);
  const ref = potr(nAke, nMsg);
  const rows = (['ake', 'encrypt', 'decrypt'] as const).map((op) => {
    const m = mine[op]!;
    const p = typeof ref === 'string' ? undefined : ref.stats[op];
    return [op, fmtMs(m.median), fmtMs(m.p90), p ? fmtMs(p.median) : 'n/a', p ? fmtMs(p.p90) : 'n/a', p ? `${(p.median / m.median).toFixed(1)}x` : 'n/a'];
  });
  console.log(table(['operation', 'gateway median', 'gateway p90', 'potr median', 'potr p90', 'potr/gateway'], rows));
  if (typeof ref === 'string') console.log(`(potr not measured: ${ref})`);
  else console.log(`reference: ${ref.impl}, same run, same operations (v2 there, v3 here)`);
  return true;
}
