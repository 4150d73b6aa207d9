// Hostile first contact (issue 15, found bug 3): a device-list read of a new proxy creates only what
// it needs (device id and identity key), the bundle is made on the first read of its own bundle node
// in slices that yield to the event loop, and junk OMEMO with made-up device ids does not make the
// gateway fetch a bundle per id.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { FakeNetwork, makePeer, openTestKeystore, reparse, type Peer } from './helpers/omemo-net.js';
import { NODE_BUNDLES_PREFIX, NODE_DEVICELIST, bundleNode } from '../../bridges/omemo/constants.js';
import { buildEncrypted, parseBundle } from '../../bridges/omemo/wire.js';
import xml from '@xmpp/xml';

const A = 'alerts@gw.example.org';
const P = (i: number) => `user${i}\\40example.org@gw.example.org`;
const ATTACKER = 'mallory@example.org';

const kvRows = (p: Peer, owner: string): number =>
  p.ks.db.prepare<[string], { n: number }>("SELECT count(*) AS n FROM kv WHERE protocol = 'omemo' AND owner = ?").get(owner)!.n;
const kvBytes = (p: Peer): number => p.ks.db.prepare<[], { n: number }>("SELECT coalesce(sum(length(value)), 0) AS n FROM kv WHERE protocol = 'omemo'").get()!.n;

test('a device-list read of a new proxy creates an identity without prekeys; its bundle read completes it', async () => {
  const net = new FakeNetwork();
  const gw = await makePeer(net, A, { ks: openTestKeystore() });
  const before = kvBytes(gw);
  await gw.engine.prepareNode!(P(1), NODE_DEVICELIST);
  const [dev] = await gw.engine.devices(P(1));
  assert.ok(dev && dev.device_id > 0 && /^[0-9a-f]{64}$/.test(dev.fingerprint));
  // The device list is published; no bundle, no signed prekey, no one-time prekeys yet.
  assert.ok(net.items(P(1), NODE_DEVICELIST));
  assert.equal(net.items(P(1), bundleNode(dev.device_id)), null);
  assert.deepEqual(gw.engine.internals.keyring.preKeyIds(P(1)), { unused: [], used: [] });
  assert.equal(gw.engine.internals.keyring.hasBundle(P(1)), false);
  assert.equal(kvRows(gw, P(1)), 1, 'one identity row');
  assert.ok(kvBytes(gw) - before < 1024, `a lazy identity is small (${kvBytes(gw) - before} bytes)`);
  // A read of a made-up bundle node does not complete it either.
  await gw.engine.prepareNode!(P(1), `${NODE_BUNDLES_PREFIX}${dev.device_id + 1}`);
  assert.equal(gw.engine.internals.keyring.hasBundle(P(1)), false);
  // Its own bundle node: signed prekey and 100 one-time prekeys, published.
  await gw.engine.prepareNode!(P(1), bundleNode(dev.device_id));
  const bundle = parseBundle(net.items(P(1), bundleNode(dev.device_id))!);
  assert.ok(bundle);
  assert.equal(bundle.preKeys.length, 100);
  assert.equal(bundle.signedPreKey.id, 1);
  assert.equal(gw.engine.internals.keyring.preKeyIds(P(1)).unused.length, 100);
  // The device id and identity key did not change.
  assert.deepEqual(await gw.engine.devices(P(1)), [dev]);
  assert.equal(Buffer.from(bundle.identityKey).subarray(1).toString('hex'), dev.fingerprint);
  // Maintenance leaves lazy identities alone (no signed prekey for a JID nobody read the bundle of).
  await gw.engine.prepareNode!(P(2), NODE_DEVICELIST);
  await gw.engine.maintain!();
  assert.equal(gw.engine.internals.keyring.hasBundle(P(2)), false);
});

test('a lazily created proxy works end to end: a contact builds a session from its bundle', async () => {
  const net = new FakeNetwork();
  const gw = await makePeer(net, A);
  const bob = await makePeer(net, 'bob@example.org');
  await gw.engine.prepareNode!(P(3), NODE_DEVICELIST);
  const [dev] = await gw.engine.devices(P(3));
  await gw.engine.prepareNode!(P(3), bundleNode(dev!.device_id));
  const enc = await bob.engine.encrypt('bob@example.org', P(3), 'hello lazy proxy');
  const d = await gw.engine.decrypt(P(3), reparse(xml('message', { from: 'bob@example.org/x', to: P(3), type: 'chat' }, ...enc.children)));
  assert.equal(d.ok && d.body, 'hello lazy proxy');
});

test('a burst of first device-list reads: cheap identities, bundles completed in slices that yield to the event loop', async () => {
  const net = new FakeNetwork();
  const gw = await makePeer(net, A);
  const before = kvBytes(gw);
  const n = 200;
  await Promise.all(Array.from({ length: n }, (_, i) => gw.engine.prepareNode!(P(100 + i), NODE_DEVICELIST)));
  assert.equal(gw.engine.internals.keyring.created.identities, n + 1);
  assert.equal(gw.engine.internals.keyring.created.bundles, 1, 'only the peer made by makePeer has a bundle');
  const perIdentity = (kvBytes(gw) - before) / n;
  assert.ok(perIdentity < 1024, `keystore growth per identity: ${perIdentity} bytes`);

  // Completing bundles lets other work run in between: count event-loop turns while 3 complete.
  let turns = 0;
  let done = false;
  const spin = () => {
    turns++;
    if (!done) setImmediate(spin);
  };
  setImmediate(spin);
  const ids = await Promise.all([100, 101, 102].map(async (i) => (await gw.engine.devices(P(i)))[0]!.device_id));
  await Promise.all([100, 101, 102].map((i, k) => gw.engine.prepareNode!(P(i), bundleNode(ids[k]!))));
  done = true;
  // 100 prekeys in slices of 10 per bundle, two bundles at a time: at least 10 turns per pair.
  assert.ok(turns >= 20, `event-loop turns during completion: ${turns}`);
});

/** A junk OMEMO message from `from`'s made-up device `sid`, with a <key> for the gateway's device. */
function junk(from: string, to: string, rid: number, sid: number) {
  const enc = buildEncrypted({ sid, keys: [{ rid, prekey: false, data: randomBytes(60) }], iv: randomBytes(12), payload: randomBytes(20) });
  return reparse(xml('message', { from: `${from}/x`, to, type: 'chat', id: `j${sid}` }, enc));
}

test('junk OMEMO with made-up device ids: bundle fetches deduplicated and limited per sender', async () => {
  const net = new FakeNetwork();
  const gw = await makePeer(net, A);
  // The attacker has a real device list with one device.
  net.setDeviceList(ATTACKER, [1111]);
  const n = 600;
  for (let i = 0; i < n; i++) {
    const d = await gw.engine.decrypt(A, junk(ATTACKER, A, gw.deviceId, randomInt(2, 0x7fffffff)));
    assert.equal(d.ok, false);
  }
  await gw.engine.settled();
  const bundles = net.fetchCount(ATTACKER, NODE_BUNDLES_PREFIX);
  const lists = net.fetchCount(ATTACKER, NODE_DEVICELIST);
  // Before: one bundle fetch per made-up id. Now: ids missing from the sender's list are not
  // repaired, and the list is re-read at most once per interval.
  assert.ok(bundles <= 1, `bundle fetches for ${n} junk messages: ${bundles}`);
  assert.ok(lists <= 2, `device list fetches for ${n} junk messages: ${lists}`);

  // A hostile device list with hundreds of ids: fetches stop at the per-contact budget.
  const many = Array.from({ length: 300 }, (_, i) => 10_000 + i);
  net.setDeviceList('eve@example.org', many);
  await gw.engine.encrypt(A, 'eve@example.org', 'x').catch(() => undefined);
  for (const sid of many.slice(0, 100)) await gw.engine.decrypt(A, junk('eve@example.org', A, gw.deviceId, sid));
  const eveFetches = net.fetchCount('eve@example.org', NODE_BUNDLES_PREFIX);
  const budget = gw.engine.internals.opts.bundleFetchesPerMinute;
  assert.ok(eveFetches <= budget, `bundle fetches for eve: ${eveFetches} (budget ${budget})`);
  assert.ok(gw.engine.internals.devices.fetches.refused > 0);
  assert.match(await gw.metrics.registry.metrics(), /gateway_limited_total\{limit="bundle_fetches"\} [1-9]/);
  // The budget refills: a minute later a fetch is made again.
  gw.clock.advance(61_000);
  const before = net.fetchCount('eve@example.org', NODE_BUNDLES_PREFIX);
  await gw.engine.internals.devices.bundle(A, 'eve@example.org', 20_000).catch(() => undefined);
  assert.equal(net.fetchCount('eve@example.org', NODE_BUNDLES_PREFIX), before + 1);
});
