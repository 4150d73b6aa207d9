// The legacy OMEMO state written by the engine as it was before it moved onto the gateway's own
// ratchet (libsignal-protocol-typescript records): sealed keystores of three hosted JIDs, what they
// had published, and messages written then but not yet delivered. `generate` wrote
// test/fixtures/omemo-legacy-libsignal/ with that engine (commit f8c9212) and is kept to document
// how; running it today would write the new format, so the committed files are the fixture.
//   node dist/test/unit/helpers/omemo-carryover.js generate <dir>
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeNetwork, makePeer, openTestKeystore, send, Clock, type Peer } from './omemo-net.js';
import { NODE_DEVICELIST, bundleNode } from '../../../bridges/omemo/constants.js';
import { parse } from 'ltx';
import type Element from 'ltx/lib/Element.js';

export const FIXTURE_DIR = new URL('../../../../test/fixtures/omemo-legacy-libsignal/', import.meta.url).pathname;

export const JIDS = { A: 'alice@gw.example.org', B: 'bob\\40example.org@gw.example.org', C: 'carol@gw.example.org' } as const;
export type Name = keyof typeof JIDS;

export interface PendingMessage {
  from: Name;
  to: Name;
  body: string;
  /** Whether it is a PreKey message (a session the receiver has not seen yet). */
  prekey: boolean;
  xml: string;
}

export interface Manifest {
  clock: number;
  peers: Record<Name, { jid: string; name: string; deviceId: number; fingerprint: string }>;
  /** Every pubsub item as published then: owner, node, item id, publisher, payload XML. */
  items: Array<{ publisher: string; owner: string; node: string; id: string; xml: string }>;
  /** Written before the upgrade, delivered after it (in this order). */
  pending: PendingMessage[];
}

async function generate(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const net = new FakeNetwork();
  const clock = new Clock();
  const peers = {} as Record<Name, Peer>;
  for (const n of ['A', 'B', 'C'] as const) {
    peers[n] = await makePeer(net, JIDS[n], { ks: openTestKeystore(join(dir, `${n}.sqlite`)), clock, name: `engine:${n}` });
  }
  const { A, B } = peers;
  const deliver = async (from: Peer, to: Peer, text: string): Promise<void> => {
    const d = await to.engine.decrypt(to.jid, await send(from, to.jid, text));
    if (!d.ok || d.body !== text) throw new Error(`fixture exchange failed: ${JSON.stringify(d)}`);
    for (const r of d.replies) {
      const back = await from.engine.decrypt(from.jid, parse(r.toString()) as unknown as Element);
      if (!back.ok) throw new Error('fixture reply failed');
    }
  };
  // A and B: a session with several ratchet turns both ways.
  await deliver(A, B, 'a1');
  for (let i = 0; i < 3; i++) await deliver(A, B, `a->b ${i}`);
  for (let i = 0; i < 3; i++) await deliver(B, A, `b->a ${i}`);
  await deliver(A, B, 'a turn');
  await deliver(B, A, 'b turn');
  const pending: PendingMessage[] = [];
  const hold = async (from: Name, to: Name, body: string): Promise<void> => {
    const st = await send(peers[from], JIDS[to], body);
    const prekey = st.getChild('encrypted')!.getChild('header')!.getChildren('key').some((k) => k.attrs.prekey === 'true');
    pending.push({ from, to, body, prekey, xml: st.toString() });
  };
  // In flight at the upgrade: A->B two on the current chain, one of them overtaken by a later one
  // delivered now (a skipped key stored in the old format), B->A one.
  await hold('A', 'B', 'in flight a->b 1');
  const overtaking = await send(A, JIDS.B, 'delivered before the upgrade');
  const d = await B.engine.decrypt(JIDS.B, overtaking);
  if (!d.ok) throw new Error('fixture overtaking message failed');
  await hold('B', 'A', 'in flight b->a 1');
  // C starts a session with B from B's bundle: the PreKey message is still in flight (B's one-time
  // prekey is used after the upgrade; C's record still has the pending prekey).
  await hold('C', 'B', 'in flight c->b prekey');
  await hold('C', 'B', 'in flight c->b second prekey');
  const items: Manifest['items'] = [];
  for (const n of ['A', 'B', 'C'] as const) {
    const p = peers[n];
    const port = net.port(p.name);
    for (const node of [NODE_DEVICELIST, bundleNode(p.deviceId)]) {
      for (const it of port.localItems(p.jid, node)) items.push({ publisher: p.name, owner: p.jid, node, id: it.id, xml: it.payload.toString() });
    }
  }
  const manifest: Manifest = {
    clock: clock.t,
    peers: Object.fromEntries(
      await Promise.all((['A', 'B', 'C'] as const).map(async (n) => [n, { jid: peers[n].jid, name: peers[n].name, deviceId: peers[n].deviceId, fingerprint: await peers[n].engine.fingerprint(peers[n].jid) }])),
    ) as Manifest['peers'],
    items,
    pending,
  };
  for (const p of Object.values(peers)) {
    p.engine.flush?.();
    p.ks.close();
  }
  writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`);
}

export function readManifest(): Manifest {
  return JSON.parse(readFileSync(join(FIXTURE_DIR, 'manifest.json'), 'utf8')) as Manifest;
}

/** Copies the fixture's keystores into `dir` (tests write to them). */
export function copyKeystores(dir: string): Record<Name, string> {
  const out = {} as Record<Name, string>;
  for (const n of ['A', 'B', 'C'] as const) {
    out[n] = join(dir, `${n}.sqlite`);
    copyFileSync(join(FIXTURE_DIR, `${n}.sqlite`), out[n]);
  }
  return out;
}

if (process.argv[2] === 'generate') await generate(process.argv[3] ?? FIXTURE_DIR);
