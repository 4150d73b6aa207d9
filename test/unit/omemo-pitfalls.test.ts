// The interop pitfalls of legacy OMEMO (protocols.md §1.8, §7), one test each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import { FakeNetwork, makePeer, send, encryptedOf, reparse, type Peer } from './helpers/omemo-net.js';
import { RawPeer } from './helpers/omemo-raw-peer.js';
import { NODE_DEVICELIST, NS_OMEMO, bundleNode } from '../../bridges/omemo/constants.js';
import { parseBundle } from '../../bridges/omemo/wire.js';
import { MAX_SKIPPED_KEYS, openSession } from '../../bridges/omemo/legacy-protocol.js';
import type { Decrypted } from '../../bridges/engine.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';
const R = 'rita@example.net';

function body(d: Decrypted): string | null {
  assert.equal(d.ok, true, d.ok ? '' : `decrypt failed: ${d.reason}`);
  return d.ok ? d.body : null;
}

const listItems = (ids: number[]) => [xml('item', { id: 'current' }, xml('list', { xmlns: NS_OMEMO }, ...ids.map((id) => xml('device', { id: String(id) }))))];

/** Alice and Bob with a confirmed session (Bob's completion delivered). */
async function pair(net = new FakeNetwork()): Promise<{ net: FakeNetwork; a: Peer; b: Peer }> {
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const d = await b.engine.decrypt(B, await send(a, B, 'setup'));
  for (const r of d.replies) await a.engine.decrypt(A, reparse(r));
  return { net, a, b };
}

test('16-byte IVs are read; 12-byte IVs are sent', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const r = await RawPeer.create(R, 4242);
  r.publish(net);
  await r.startSession(net, A, a.deviceId);
  assert.equal(body(await a.engine.decrypt(A, await r.message(A, a.deviceId, 'iv sixteen', { ivLength: 16 }))), 'iv sixteen');
  assert.equal(body(await a.engine.decrypt(A, await r.message(A, a.deviceId, 'iv twelve', { ivLength: 12 }))), 'iv twelve');
  const out = await send(a, R, 'reply');
  assert.equal(Buffer.from(encryptedOf(out).getChild('header')!.getChildText('iv')!, 'base64').length, 12);
});

test('a 16-byte key with the tag appended to the payload (very old senders) is accepted', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const r = await RawPeer.create(R, 4243);
  r.publish(net);
  await r.startSession(net, A, a.deviceId);
  assert.equal(body(await a.engine.decrypt(A, await r.message(A, a.deviceId, 'old format', { format: 'tag-in-payload' }))), 'old format');
  assert.equal(body(await a.engine.decrypt(A, await r.message(A, a.deviceId, 'old format, 16 byte iv', { format: 'tag-in-payload', ivLength: 16 }))), 'old format, 16 byte iv');
});

test('key transports with 16- and 32-byte keys are accepted as empty messages', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const r = await RawPeer.create(R, 4244);
  r.publish(net);
  await r.startSession(net, A, a.deviceId);
  for (const size of [16, 32] as const) {
    const d = await a.engine.decrypt(A, await r.message(A, a.deviceId, '', { keyTransport: size }));
    assert.equal(body(d), null);
  }
});

test('sessions are built right before sending, not when a device is announced', async () => {
  const { net, a, b } = await pair();
  const b2 = await makePeer(net, B);
  const bundleFetches = () => net.fetchCount(B, 'eu.siacs.conversations.axolotl.bundles');
  const before = bundleFetches();
  // Bob's new device shows up in a +notify event: the cache is updated, nothing else happens.
  await a.engine.onPepEvent!(A, B, NODE_DEVICELIST, listItems([b.deviceId, b2.deviceId]));
  assert.deepEqual(a.engine.internals.devices.cached(B)?.sort(), [b.deviceId, b2.deviceId].sort());
  assert.equal(bundleFetches(), before);
  assert.equal(a.engine.internals.sessions.openSession(A, B, b2.deviceId), undefined);
  // The next message builds the session with the new device (and only with it).
  const m = await send(a, B, 'now both');
  assert.equal(bundleFetches(), before + 1);
  const keys = encryptedOf(m).getChild('header')!.getChildren('key');
  assert.equal(keys.find((k) => k.attrs.rid === String(b2.deviceId))?.attrs.prekey, 'true');
  assert.equal(keys.find((k) => k.attrs.rid === String(b.deviceId))?.attrs.prekey, undefined);
  assert.equal(body(await b2.engine.decrypt(B, m)), 'now both');
  assert.equal(body(await b.engine.decrypt(B, m)), 'now both');
});

test('a device list is refreshed on its +notify event and on a message from an unknown device', async () => {
  const { net, a, b } = await pair();
  const listFetches = () => net.fetchCount(B, NODE_DEVICELIST);
  const n0 = listFetches();
  await a.engine.onPepEvent!(A, `${B}/phone`, NODE_DEVICELIST, listItems([b.deviceId, 777]));
  assert.deepEqual(a.engine.internals.devices.cached(B)?.sort(), [777, b.deviceId].sort());
  assert.equal(listFetches(), n0, 'the event itself carries the list');
  // A device Alice's cache does not list writes to her: the list is read again (in the background).
  const b2 = await makePeer(net, B);
  await a.engine.onPepEvent!(A, B, NODE_DEVICELIST, listItems([b.deviceId]));
  const d = await a.engine.decrypt(A, await send(b2, A, 'hello from a new device'));
  assert.equal(body(d), 'hello from a new device');
  await a.engine.settled();
  assert.equal(listFetches(), n0 + 1);
  assert.ok(a.engine.internals.devices.cached(B)?.includes(b2.deviceId));
  // A known device does not cause a fetch.
  await a.engine.decrypt(A, await send(b, A, 'known'));
  await a.engine.settled();
  assert.equal(listFetches(), n0 + 1);
});

test('devices that left the list are marked inactive and get no keys', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b1 = await makePeer(net, B);
  const b2 = await makePeer(net, B);
  const m = await send(a, B, 'both');
  assert.equal(encryptedOf(m).getChild('header')!.getChildren('key').length, 2);
  assert.ok(a.trust.list(B, 'omemo').every((r) => r.active));
  await a.engine.onPepEvent!(A, B, NODE_DEVICELIST, listItems([b1.deviceId]));
  const recs = a.trust.list(B, 'omemo');
  assert.equal(recs.find((r) => r.deviceId === String(b2.deviceId))?.active, false);
  assert.equal(recs.find((r) => r.deviceId === String(b1.deviceId))?.active, true);
  const m2 = await send(a, B, 'only one');
  assert.deepEqual(encryptedOf(m2).getChild('header')!.getChildren('key').map((k) => Number(k.attrs.rid)), [b1.deviceId]);
});

test(`skipped message keys are capped at ${MAX_SKIPPED_KEYS} per session, the oldest evicted`, async () => {
  const { a, b } = await pair();
  const msgs = [];
  for (let i = 0; i < MAX_SKIPPED_KEYS + 100; i++) msgs.push(await send(a, B, `m${i}`));
  // Only the last one arrives: every earlier message key is stored as skipped, then trimmed.
  assert.equal(body(await b.engine.decrypt(B, msgs[msgs.length - 1]!)), `m${msgs.length - 1}`);
  const held = await b.engine.internals.sessions.withRecord(B, A, a.deviceId, (r) => openSession(r)!.ratchet.skipped.size);
  assert.equal(held, MAX_SKIPPED_KEYS);
  // The newest skipped ones still decrypt, the oldest were evicted.
  assert.equal(body(await b.engine.decrypt(B, msgs[msgs.length - 2]!)), `m${msgs.length - 2}`);
  assert.equal(body(await b.engine.decrypt(B, msgs[99]!)), 'm99');
  const evicted = await b.engine.decrypt(B, msgs[98]!);
  assert.equal(evicted.ok, false);
  const evicted0 = await b.engine.decrypt(B, msgs[0]!);
  assert.equal(evicted0.ok, false);
});

test('used prekeys are kept until a grace period after the last reconnect, then deleted', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const grace = a.engine.internals.opts.preKeyGraceMs;
  const bundleBefore = parseBundle(net.items(A, bundleNode(a.deviceId))!)!;
  const pk = bundleBefore.preKeys[5]!.id;
  // Two devices of Rita picked the same prekey from the same bundle (collisions are normal).
  const r1 = await RawPeer.create(R, 501);
  const r2 = await RawPeer.create(R, 502);
  const r3 = await RawPeer.create(R, 503);
  for (const r of [r1, r2, r3]) {
    r.publish(net);
    await r.startSession(net, A, a.deviceId, pk);
  }
  assert.equal(body(await a.engine.decrypt(A, await r1.message(A, a.deviceId, 'from r1'))), 'from r1');
  // The prekey left the bundle at once, replaced under a new, never used id.
  const after = parseBundle(net.items(A, bundleNode(a.deviceId))!)!;
  assert.equal(after.preKeys.length, bundleBefore.preKeys.length);
  assert.ok(!after.preKeys.some((p) => p.id === pk));
  assert.ok(Math.max(...after.preKeys.map((p) => p.id)) > Math.max(...bundleBefore.preKeys.map((p) => p.id)));
  // The gateway goes offline; while offline and until `grace` after the reconnect, the key stays.
  a.engine.onConnectionChange(false);
  a.clock.advance(grace * 2);
  await a.engine.maintain!();
  assert.deepEqual(a.engine.internals.keyring.preKeyIds(A).used, [pk]);
  a.engine.onConnectionChange(true);
  a.clock.advance(grace / 2);
  await a.engine.maintain!();
  // The backlog arrives: r2's message with the same prekey still decrypts.
  assert.equal(body(await a.engine.decrypt(A, await r2.message(A, a.deviceId, 'from r2, late'))), 'from r2, late');
  a.clock.advance(grace / 2);
  await a.engine.maintain!();
  assert.deepEqual(a.engine.internals.keyring.preKeyIds(A).used, []);
  // Now it is gone: a third device using it gets a repair (key transport on a new session).
  const d3 = await a.engine.decrypt(A, await r3.message(A, a.deviceId, 'from r3, too late'));
  assert.equal(d3.ok, false);
  assert.equal(!d3.ok && d3.reason, 'unknown-prekey');
  assert.equal(d3.replies.length, 1);
  const kt = d3.replies[0]!;
  assert.equal(kt.attrs.to, R);
  assert.equal((await r3.receive(reparse(kt))).length, 16);
  // r3's next message uses the session the repair started.
  assert.equal(body(await a.engine.decrypt(A, await r3.message(A, a.deviceId, 'repaired'))), 'repaired');
});

test('a heartbeat goes out after 53 messages on one chain with no reply, once per chain', async () => {
  const { a, b } = await pair();
  // Alice's chain started when she received Bob's completion: counters 0, 1, 2, ...
  const replyAt: number[] = [];
  for (let i = 0; i < 70; i++) {
    const d = await b.engine.decrypt(B, await send(a, B, `n${i}`));
    assert.equal(body(d), `n${i}`);
    if (d.replies.length > 0) replyAt.push(i);
    if (i === 53) {
      // The heartbeat is an empty message on the session; Alice's ratchet turns when she reads it.
      assert.equal(d.replies[0]!.getChild('body'), undefined);
      assert.equal(body(await a.engine.decrypt(A, reparse(d.replies[0]!))), null);
    }
  }
  assert.deepEqual(replyAt, [53]);
});

test('trust is held per (bare JID, identity key): a reinstalled device under the same id is untrusted', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const r1 = await RawPeer.create(R, 900);
  r1.publish(net, 'rita-phone');
  await r1.startSession(net, A, a.deviceId);
  const d1 = await a.engine.decrypt(A, await r1.message(A, a.deviceId, 'first install'));
  assert.equal(d1.ok && d1.sender.trust, 'trusted');
  const fp1 = d1.ok ? d1.sender.fingerprint : '';
  a.trust.set(R, 'omemo', fp1!, 'verified');
  // Same device id, new identity key (reinstall).
  const r2 = await RawPeer.create(R, 900);
  net.port('rita-phone').retract(R, bundleNode(900));
  r2.publish(net, 'rita-phone');
  await r2.startSession(net, A, a.deviceId);
  const d2 = await a.engine.decrypt(A, await r2.message(A, a.deviceId, 'reinstalled'));
  assert.equal(body(d2), 'reinstalled');
  assert.equal(d2.ok && d2.sender.trust, 'untrusted');
  assert.notEqual(d2.ok && d2.sender.fingerprint, fp1);
  // The verified key keeps its trust; the new one is not used for sending.
  assert.equal(a.trust.get(R, 'omemo', fp1!)?.trust, 'verified');
  await assert.rejects(a.engine.encrypt(A, R, 'to rita'), (e: { code?: string }) => e.code === 'no_trusted_devices');
});
