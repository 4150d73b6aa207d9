// Our configuration, measured on the path the gateway takes: createOmemoEngine (own X3DH and Double
// Ratchet on node:crypto, cached session records) on real SQLite keystores in temporary files, stanzas in and out. The pubsub
// network is in memory, so no network time is included.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Element from 'ltx/lib/Element.js';
import { FakeNetwork, chat, makePeer, openTestKeystore, type Peer } from '../test/unit/helpers/omemo-net.js';
import type { Samples, Sizes } from './omemo-library.js';
import { openFloors, type Floors } from './omemo-floor.js';
import { Interleaved } from './interleaved.js';

/** Which floor operation (omemo-floor.ts) each row is compared with. */
export type FloorOf = Record<keyof Samples, Exclude<keyof Floors, 'body'>>;

/** Samples between two floor blocks in the steady rows (both stay warm within a block). */
const BLOCK = 100;

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

/**
 * The engine's rows; with `floors` (row -> floor operation), also each row's floor, timed in blocks
 * between the row's samples (see Interleaved) and returned as `floors` (ms per device).
 */
export async function benchEngine(n: Sizes, opts: { floors?: FloorOf } = {}): Promise<Samples & { floors?: Record<keyof Samples, number[]> }> {
  const dir = mkdtempSync(join(tmpdir(), 'omemo-bench-'));
  const keystores: Array<{ close(): void }> = [];
  const opened = opts.floors ? openFloors({ steady: n.steady, turn: n.pingpong, build: n.build }) : undefined;
  if (opened) keystores.push(opened);
  const fl = opened && opts.floors ? new Interleaved(opened.ops, opts.floors, { encrypt3: 3 }) : undefined;
  const floor = (row: keyof Samples, count: number): void => fl?.run(row, count);
  const peer = async (jid: string, name: string, net: FakeNetwork) => {
    const ks = openTestKeystore(join(dir, `${name}.db`));
    // WAL checkpoints on the worker thread from the start, as in the gateway: the keystore starts it
    // from a timer once the WAL has grown, and a timer never fires while the bench awaits only
    // promises that are already resolved, so every commit past 1000 WAL pages would checkpoint inline.
    ks.startCheckpointWorker();
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
      floor('buildInitiator', 1);
    }
    const buildResponder: number[] = [];
    for (const m of firsts) {
      await b.engine.internals.sessions.delete(B, A, a.deviceId);
      await must(b, m, buildResponder);
      floor('buildResponder', 1);
    }
    // One session, confirmed both ways.
    await forget();
    const hello = await b.engine.decrypt(B, await send(a, B, 'hello'));
    for (const r of hello.replies) await a.engine.decrypt(A, r);
    await must(a, await send(b, A, 'hi'));

    const steady = async (count: number, withFloors: boolean) => {
      const msgs: Element[] = [];
      const enc: number[] = [];
      const dec: number[] = [];
      for (let i = 0; i < count; i++) {
        msgs.push(await send(a, B, `steady message ${i}`, enc));
        if (withFloors && (i + 1) % BLOCK === 0) floor('encrypt1', BLOCK);
      }
      for (let i = 0; i < count; i++) {
        await must(b, msgs[i]!, dec);
        if (withFloors && (i + 1) % BLOCK === 0) floor('decrypt1', BLOCK);
      }
      return { enc, dec };
    };
    // The JIT settles over the first thousand messages or so.
    await steady(Math.min(1000, n.steady), false);
    const s1 = await steady(n.steady, true);

    // A contact with three devices (three engines hosting C, each its own keystore).
    const cs = [await peer(C, 'carol1', net), await peer(C, 'carol2', net), await peer(C, 'carol3', net)];
    const setup = await send(a, C, 'setup');
    for (const c of cs) {
      const d = await c.engine.decrypt(C, setup);
      for (const r of d.replies) await a.engine.decrypt(A, r);
    }
    // Warm-up, as for the steady rows: the three engines' caches and keystores are new.
    for (let i = 0; i < Math.min(300, n.three); i++) {
      const m = await send(a, C, `three warm-up ${i}`);
      for (const c of cs) await must(c, m);
    }
    const msgs3: Element[] = [];
    const encrypt3: number[] = [];
    const decrypt3: number[] = [];
    // Blocks of a third: a message is three devices' work (per device, BLOCK calls each way).
    const block3 = Math.ceil(BLOCK / 3);
    for (let i = 0; i < n.three; i++) {
      msgs3.push(await send(a, C, `three ${i}`, encrypt3));
      if ((i + 1) % block3 === 0) floor('encrypt3', block3);
    }
    for (let i = 0; i < n.three; i++) {
      const t = performance.now();
      for (const c of cs) await must(c, msgs3[i]!);
      decrypt3.push(performance.now() - t);
      if ((i + 1) % block3 === 0) floor('decrypt3', 3 * block3);
    }

    // Ping-pong between Alice and Bob.
    const encryptTurn: number[] = [];
    const decryptTurn: number[] = [];
    for (let i = 0; i < n.pingpong; i++) {
      const [x, y, to] = i % 2 === 0 ? [a, b, B] : [b, a, A];
      await must(y, await send(x, to, `ping-pong ${i}`, encryptTurn), decryptTurn);
      if ((i + 1) % 10 === 0) {
        floor('encryptTurn', 10);
        floor('decryptTurn', 10);
      }
    }
    const rows = { buildInitiator, buildResponder, encrypt1: s1.enc, decrypt1: s1.dec, encrypt3, decrypt3, encryptTurn, decryptTurn };
    return fl ? { ...rows, floors: fl.samples } : rows;
  } finally {
    for (const ks of keystores) ks.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
