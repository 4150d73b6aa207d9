// Our configuration, measured on the path the gateway takes: createOmemoEngine (own X3DH and Double
// Ratchet on node:crypto, cached session records) on real SQLite keystores in temporary files, stanzas in and out. The pubsub
// network is in memory, so no network time is included.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Element from 'ltx/lib/Element.js';
import { FakeNetwork, chat, makePeer, openTestKeystore, type Peer } from '../test/unit/helpers/omemo-net.js';
import type { Samples, Sizes } from './omemo-library.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';
const C = 'carol\\40example.org@gw.example.org';

/** Encrypts (timed into `times`), then builds the stanza the network would deliver (not timed). */
async function send(x: Peer, to: string, body: string, times?: number[]): Promise<Element> {
  const t = performance.now();
  const e = await x.engine.encrypt(x.jid, to, body);
  times?.push(performance.now() - t);
  return chat(x, to, e.children);
}

/** Decrypts (timed into `times`); a failure aborts the benchmark. */
async function must(p: Peer, m: Element, times?: number[]): Promise<void> {
  const t = performance.now();
  const d = await p.engine.decrypt(p.jid, m);
  times?.push(performance.now() - t);
  if (!d.ok) throw new Error(`bench: decrypt failed (${d.reason})`);
}

export async function benchEngine(n: Sizes): Promise<Samples> {
  const dir = mkdtempSync(join(tmpdir(), 'omemo-bench-'));
  const keystores: Array<{ close(): void }> = [];
  const peer = async (jid: string, name: string, net: FakeNetwork) => {
    const ks = openTestKeystore(join(dir, `${name}.db`));
    keystores.push(ks);
    // The per-contact bundle fetch limit (limits.ts) would stop the repeated session builds measured here.
    // Logs at the gateway's default level (the tests' helper logs debug lines into memory).
    return makePeer(net, jid, { ks, name, engine: { bundleFetchesPerMinute: 1e9 }, logLevel: 'info' });
  };
  try {
    const net = new FakeNetwork();
    const a = await peer(A, 'alice', net);
    const b = await peer(B, 'bob', net);
    const forget = async () => {
      await a.engine.internals.sessions.delete(A, B, b.deviceId);
      await b.engine.internals.sessions.delete(B, A, a.deviceId);
    };
    // Warm up the build path once (first XEdDSA call initialises the asm.js curve).
    await must(b, await send(a, B, 'warm-up'));
    const firsts: Element[] = [];
    const buildInitiator: number[] = [];
    for (let i = 0; i < n.build; i++) {
      await forget();
      firsts.push(await send(a, B, 'first message', buildInitiator));
    }
    const buildResponder: number[] = [];
    for (const m of firsts) {
      await b.engine.internals.sessions.delete(B, A, a.deviceId);
      await must(b, m, buildResponder);
    }
    // One session, confirmed both ways.
    await forget();
    const hello = await b.engine.decrypt(B, await send(a, B, 'hello'));
    for (const r of hello.replies) await a.engine.decrypt(A, r);
    await must(a, await send(b, A, 'hi'));

    const steady = async (count: number) => {
      const msgs: Element[] = [];
      const enc: number[] = [];
      const dec: number[] = [];
      for (let i = 0; i < count; i++) msgs.push(await send(a, B, `steady message ${i}`, enc));
      for (const m of msgs) await must(b, m, dec);
      return { enc, dec };
    };
    await steady(Math.min(200, n.steady));
    const s1 = await steady(n.steady);

    // A contact with three devices (three engines hosting C, each its own keystore).
    const cs = [await peer(C, 'carol1', net), await peer(C, 'carol2', net), await peer(C, 'carol3', net)];
    const setup = await send(a, C, 'setup');
    for (const c of cs) {
      const d = await c.engine.decrypt(C, setup);
      for (const r of d.replies) await a.engine.decrypt(A, r);
    }
    const msgs3: Element[] = [];
    const encrypt3: number[] = [];
    const decrypt3: number[] = [];
    for (let i = 0; i < n.three; i++) msgs3.push(await send(a, C, `three ${i}`, encrypt3));
    for (const m of msgs3) {
      const t = performance.now();
      for (const c of cs) await must(c, m);
      decrypt3.push(performance.now() - t);
    }

    // Ping-pong between Alice and Bob.
    const encryptTurn: number[] = [];
    const decryptTurn: number[] = [];
    for (let i = 0; i < n.pingpong; i++) {
      const [x, y, to] = i % 2 === 0 ? [a, b, B] : [b, a, A];
      await must(y, await send(x, to, `ping-pong ${i}`, encryptTurn), decryptTurn);
    }
    return { buildInitiator, buildResponder, encrypt1: s1.enc, decrypt1: s1.dec, encrypt3, decrypt3, encryptTurn, decryptTurn };
  } finally {
    for (const ks of keystores) ks.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
