// OMEMO 2 on the path the gateway takes: createOmemo2Engine (beside legacy OMEMO, sharing identity)
// on real SQLite keystores in temporary files, stanzas in and out, pubsub in memory (no network).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { FakeNetwork, openTestKeystore, reparse } from '../test/unit/helpers/omemo-net.js';
import { makeDual, type Dual } from '../test/unit/helpers/omemo2-net.js';
import type { Samples, Sizes } from './omemo-library.js';
import { Interleaved } from './interleaved.js';
import { openOmemo2Floors, type Omemo2Floors } from './omemo2-floor.js';

/** Samples between two floor blocks in the steady rows (both stay warm within a block). */
const BLOCK = 100;

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';
const C = 'carol\\40example.org@gw.example.org';

async function send(x: Dual, to: string, body: string, times?: number[]): Promise<Element> {
  const t = performance.now();
  const e = await x.omemo2.encrypt(x.jid, to, body);
  times?.push(performance.now() - t);
  return reparse(xml('message', { from: `${x.jid}/gw`, to, type: 'chat', id: 'b' }, ...e.children));
}

async function must(p: Dual, m: Element, times?: number[]): Promise<Element[]> {
  const t = performance.now();
  const d = await p.omemo2.decrypt(p.jid, m);
  times?.push(performance.now() - t);
  if (!d.ok) throw new Error(`bench: omemo2 decrypt failed (${d.reason})`);
  return d.replies;
}

/**
 * The samples, and the length of a steady session's stored record (the row written per message,
 * before sealing); with `floors` (row -> floor operation of omemo2-floor.ts), also each row's floor,
 * timed in blocks between the row's own samples (bench/interleaved.ts), as `floors` (ms per device).
 */
export async function benchOmemo2Engine(
  n: Sizes,
  opts: { floors?: Record<keyof Samples, keyof Omemo2Floors> } = {},
): Promise<Samples & { recordBytes: number; floors?: Record<keyof Samples, number[]> }> {
  const dir = mkdtempSync(join(tmpdir(), 'omemo2-bench-'));
  const keystores: Array<{ close(): void }> = [];
  let fl: Interleaved<keyof Samples, keyof Omemo2Floors> | undefined;
  const floor = (row: keyof Samples, count: number): void => fl?.run(row, count);
  const peer = async (jid: string, name: string, net: FakeNetwork) => {
    const ks = openTestKeystore(join(dir, `${name}.db`));
    // WAL checkpoints on the worker thread from the start, as in the gateway (see omemo-engine.ts:
    // the keystore starts it from a timer, which never fires in these loops).
    ks.startCheckpointWorker();
    keystores.push(ks);
    // The per-contact bundle fetch limit (limits.ts) would stop the repeated session builds measured here.
    // Logs at the gateway's default level (the tests' helper logs debug lines into memory).
    return makeDual(net, jid, { ks, name, options: { bundleFetchesPerMinute: 1e9 }, logLevel: 'info' });
  };
  try {
    const net = new FakeNetwork();
    const a = await peer(A, 'alice', net);
    const b = await peer(B, 'bob', net);
    const forget = () => {
      a.omemo2.internals.sessions.delete(A, B, b.deviceId);
      b.omemo2.internals.sessions.delete(B, A, a.deviceId);
    };
    // A session confirmed both ways first: the floors write rows of a steady session's length.
    for (const r of await must(b, await send(a, B, 'warm-up'))) await a.omemo2.decrypt(A, reparse(r));
    await must(a, await send(b, A, 'warm-up reply'));
    await must(b, await send(a, B, 'steady'));
    if (opts.floors) {
      const recordBytes = createProtocolStore(a.ks, 'omemo2').get(A, 'session', `${B}\0${b.deviceId}`)?.length ?? 0;
      const opened = openOmemo2Floors({ steady: n.steady + 3 * n.three, turn: n.pingpong, build: n.build, recordBytes });
      keystores.push(opened);
      fl = new Interleaved(opened.ops, opts.floors, { encrypt3: 3 });
    }
    const firsts: Element[] = [];
    const buildInitiator: number[] = [];
    for (let i = 0; i < n.build; i++) {
      forget();
      firsts.push(await send(a, B, 'first message', buildInitiator));
      floor('buildInitiator', 1);
    }
    const buildResponder: number[] = [];
    for (const m of firsts) {
      b.omemo2.internals.sessions.delete(B, A, a.deviceId);
      await must(b, m, buildResponder);
      floor('buildResponder', 1);
    }
    forget();
    for (const r of await must(b, await send(a, B, 'hello'))) await a.omemo2.decrypt(A, reparse(r));
    await must(a, await send(b, A, 'hi'));
    const steady = async (count: number, withFloors: boolean) => {
      const msgs: Element[] = [];
      const enc: number[] = [];
      const dec: number[] = [];
      for (let i = 0; i < count; i++) {
        msgs.push(await send(a, B, `steady message ${i}`, enc));
        if (withFloors && (i + 1) % BLOCK === 0) floor('encrypt1', BLOCK);
      }
      // Heartbeats b sends (one per chain) are not delivered: the chain stays the same, as in python's case.
      for (let i = 0; i < count; i++) {
        await must(b, msgs[i]!, dec);
        if (withFloors && (i + 1) % BLOCK === 0) floor('decrypt1', BLOCK);
      }
      return { enc, dec };
    };
    await steady(Math.min(200, n.steady), false);
    const s1 = await steady(n.steady, true);
    const recordBytes = createProtocolStore(a.ks, 'omemo2').get(A, 'session', `${B}\0${b.deviceId}`)?.length ?? 0;

    const cs = [await peer(C, 'carol1', net), await peer(C, 'carol2', net), await peer(C, 'carol3', net)];
    const setup = await send(a, C, 'setup');
    for (const c of cs) for (const r of await must(c, setup)) await a.omemo2.decrypt(A, reparse(r));
    // The three engines are new here: warmed up as the steady rows are (their first messages read slower).
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
    const rows = { recordBytes, buildInitiator, buildResponder, encrypt1: s1.enc, decrypt1: s1.dec, encrypt3, decrypt3, encryptTurn, decryptTurn };
    return fl ? { ...rows, floors: fl.samples } : rows;
  } finally {
    for (const ks of keystores) ks.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
