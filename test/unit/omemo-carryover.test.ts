// Stored legacy OMEMO state carries over: keystores written by the engine before it moved onto the
// gateway's own ratchet (libsignal records; test/fixtures/omemo-legacy-libsignal, see
// helpers/omemo-carryover.ts) are opened by today's engine. Messages written then decrypt now,
// sessions go on both ways without a new key exchange (no PreKey message, no bundle fetch), and a
// one-time prekey published then still starts a session.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'ltx';
import type Element from 'ltx/lib/Element.js';
import { Clock, FakeNetwork, encryptedOf, makePeer, openTestKeystore, reparse, send, type Peer } from './helpers/omemo-net.js';
import { copyKeystores, readManifest, JIDS, type Name } from './helpers/omemo-carryover.js';
import { NODE_BUNDLES_PREFIX, bundleNode } from '../../bridges/omemo/constants.js';
import type { Decrypted } from '../../bridges/engine.js';

const isPreKey = (st: Element): boolean => encryptedOf(st).getChild('header')!.getChildren('key').some((k) => k.attrs.prekey === 'true');

function body(d: Decrypted): string | null {
  assert.equal(d.ok, true, d.ok ? '' : `decrypt failed: ${d.reason}`);
  return d.ok ? d.body : null;
}

test('sessions, identities and prekeys written by the libsignal-based engine carry over', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'omemo-carryover-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const m = readManifest();
  const paths = copyKeystores(dir);
  const net = new FakeNetwork();
  for (const it of m.items) net.port(it.publisher).publish(it.owner, it.node, it.id, parse(it.xml) as unknown as Element);
  const clock = new Clock();
  clock.t = m.clock + 60_000;
  const peers = {} as Record<Name, Peer>;
  for (const n of ['A', 'B', 'C'] as const) {
    peers[n] = await makePeer(net, JIDS[n], { ks: openTestKeystore(paths[n]), clock, name: m.peers[n].name });
    t.after(() => peers[n].ks.close());
    // Same device and identity: nothing was regenerated.
    assert.equal(peers[n].deviceId, m.peers[n].deviceId);
    assert.equal(await peers[n].engine.fingerprint(JIDS[n]), m.peers[n].fingerprint);
  }
  const { A, B, C } = peers;

  // A new contact reads B's bundle as published before the upgrade and starts a session with it.
  const published = m.items.filter((i) => i.owner === JIDS.B && i.node === bundleNode(B.deviceId)).map((i) => i.xml);
  assert.deepEqual(
    net.items(JIDS.B, bundleNode(B.deviceId))!.map((i) => String(i.children[0])),
    published,
  );
  const D = await makePeer(net, 'dave@gw.example.org', { clock });
  t.after(() => D.ks.close());
  const fromD = await send(D, JIDS.B, 'new contact, old prekey');
  assert.equal(isPreKey(fromD), true);
  const dd = await B.engine.decrypt(JIDS.B, fromD);
  assert.equal(body(dd), 'new contact, old prekey');
  for (const r of dd.replies) body(await D.engine.decrypt(D.jid, reparse(r)));

  // Messages written before the upgrade, delivered now.
  for (const p of m.pending) {
    const st = parse(p.xml) as unknown as Element;
    assert.equal(isPreKey(st), p.prekey);
    const d = await peers[p.to].engine.decrypt(JIDS[p.to], st);
    assert.equal(body(d), p.body, `${p.from}->${p.to}: ${p.body}`);
    for (const r of d.replies) body(await peers[p.from].engine.decrypt(JIDS[p.from], reparse(r)));
  }

  const fetchesBefore = net.fetches.filter((f) => f.node.startsWith(NODE_BUNDLES_PREFIX)).length;
  // Sessions go on both ways, with ratchet turns, and none needs a new key exchange.
  const pairs: Array<[Peer, Peer]> = [[A, B], [B, A], [C, B], [B, C], [A, B], [A, B], [B, A], [B, C], [C, B]];
  for (const [i, [from, to]] of pairs.entries()) {
    const st = await send(from, to.jid, `after the upgrade ${i}`);
    assert.equal(isPreKey(st), false, `${from.jid} -> ${to.jid} needed a PreKey message`);
    const d = await to.engine.decrypt(to.jid, st);
    assert.equal(body(d), `after the upgrade ${i}`);
  }
  assert.equal(net.fetches.filter((f) => f.node.startsWith(NODE_BUNDLES_PREFIX)).length, fetchesBefore, 'no bundle was fetched');
});
