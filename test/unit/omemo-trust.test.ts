// Trust decisions of the OMEMO engine under the TrustStore policies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeNetwork, makePeer, send, encryptedOf, reparse, type Peer } from './helpers/omemo-net.js';
import { NODE_DEVICELIST } from '../../bridges/omemo/constants.js';
import type { Decrypted } from '../../bridges/engine.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';

function body(d: Decrypted): string | null {
  assert.equal(d.ok, true, d.ok ? '' : `decrypt failed: ${d.reason}`);
  return d.ok ? d.body : null;
}
const rids = (m: ReturnType<typeof encryptedOf>) => m.getChild('header')!.getChildren('key').map((k) => Number(k.attrs.rid)).sort();
const code = (c: string) => (e: { code?: string }) => e.code === c;
/** The +notify event a contact's server sends when its device list changes. */
const notify = (p: Peer, net: FakeNetwork, contact: string) => p.engine.onPepEvent!(p.jid, contact, NODE_DEVICELIST, net.items(contact, NODE_DEVICELIST)!);

test('btbv: new devices are trusted until one is verified; after that new ones wait', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A, { policy: 'btbv' });
  const b1 = await makePeer(net, B);
  const b2 = await makePeer(net, B);
  const m = await send(a, B, 'blind trust');
  assert.deepEqual(rids(encryptedOf(m)), [b1.deviceId, b2.deviceId].sort());
  const d = await b1.engine.decrypt(B, m);
  assert.equal(body(d), 'blind trust');
  // Bob's own view of Alice: trusted blindly too.
  assert.equal(d.ok && d.sender.trust, 'trusted');
  // Alice's admin verifies b1's key.
  const fp1 = (await b1.engine.fingerprint(B));
  assert.ok(a.trust.set(B, 'omemo', fp1, 'verified'));
  // A third device appears: no longer trusted blindly.
  const b3 = await makePeer(net, B);
  await notify(a, net, B);
  const m2 = await send(a, B, 'after verification');
  assert.deepEqual(rids(encryptedOf(m2)), [b1.deviceId, b2.deviceId].sort());
  const r3 = a.trust.list(B, 'omemo').find((r) => r.deviceId === String(b3.deviceId));
  assert.equal(r3?.trust, 'untrusted');
  assert.equal(r3?.fingerprint, await b3.engine.fingerprint(B));
  // Messages from it are delivered, marked untrusted.
  const d3 = await a.engine.decrypt(A, await send(b3, A, 'from the new device'));
  assert.equal(body(d3), 'from the new device');
  assert.equal(d3.ok && d3.sender.trust, 'untrusted');
  assert.equal(d3.ok && d3.sender.deviceId, b3.deviceId);
  // Once the admin trusts it, it gets keys.
  a.trust.set(B, 'omemo', await b3.engine.fingerprint(B), 'trusted');
  const m4 = await send(a, B, 'welcome b3');
  assert.deepEqual(rids(encryptedOf(m4)), [b1.deviceId, b2.deviceId, b3.deviceId].sort());
  assert.equal(body(await b3.engine.decrypt(B, m4)), 'welcome b3');
});

test('manual: nothing is encrypted before an admin decides; the sender is delivered marked untrusted', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A, { policy: 'manual' });
  const b = await makePeer(net, B);
  assert.equal(await a.engine.reachability(A, B), 'no');
  await assert.rejects(a.engine.encrypt(A, B, 'too early'), code('no_trusted_devices'));
  // The key was seen (its bundle read): an admin can now see and trust it.
  const rec = a.trust.list(B, 'omemo');
  assert.equal(rec.length, 1);
  assert.equal(rec[0]!.fingerprint, await b.engine.fingerprint(B));
  assert.equal(rec[0]!.trust, 'untrusted');
  const d = await a.engine.decrypt(A, await send(b, A, 'hello alice'));
  assert.equal(body(d), 'hello alice');
  assert.equal(d.ok && d.sender.trust, 'untrusted');
  // The session made by Bob's PreKey message is answered (protocol only, no content).
  assert.equal(d.replies.length, 1);
  assert.equal(encryptedOf(d.replies[0]!).getChild('payload'), undefined);
  a.trust.set(B, 'omemo', rec[0]!.fingerprint, 'verified');
  assert.equal(await a.engine.reachability(A, B), 'ready');
  const m = await send(a, B, 'now you are verified');
  assert.equal(body(await b.engine.decrypt(B, reparse(d.replies[0]!))), null);
  assert.equal(body(await b.engine.decrypt(B, m)), 'now you are verified');
});

test('a distrusted device: its messages are refused, nothing is encrypted to it', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  assert.equal(body(await b.engine.decrypt(B, await send(a, B, 'before'))), 'before');
  a.trust.set(B, 'omemo', await b.engine.fingerprint(B), 'distrusted');
  const d = await a.engine.decrypt(A, await send(b, A, 'ignored'));
  assert.equal(d.ok, false);
  assert.equal(!d.ok && d.reason, 'distrusted');
  assert.equal(d.replies.length, 0);
  await assert.rejects(a.engine.encrypt(A, B, 'no'), code('no_trusted_devices'));
  assert.equal(await a.engine.reachability(A, B), 'no');
  // A distrusted key is refused in a PreKey message too (no session is started for it).
  const c = await makePeer(net, B);
  await notify(a, net, B);
  await a.engine.contactDevices(A, B, { bundles: true });
  assert.ok(a.trust.set(B, 'omemo', await c.engine.fingerprint(B), 'distrusted'));
  const pre = await a.engine.decrypt(A, await send(c, A, 'prekey from distrusted'));
  assert.equal(!pre.ok && pre.reason, 'distrusted');
  assert.equal(a.engine.internals.sessions.openSession(A, B, c.deviceId), undefined);
});

test('tofu: the first key is trusted, later new keys wait', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A, { policy: 'tofu' });
  const b1 = await makePeer(net, B);
  assert.equal(body(await b1.engine.decrypt(B, await send(a, B, 'first'))), 'first');
  const b2 = await makePeer(net, B);
  await notify(a, net, B);
  const m = await send(a, B, 'second device appears');
  assert.deepEqual(rids(encryptedOf(m)), [b1.deviceId]);
  assert.equal(a.trust.list(B, 'omemo').find((r) => r.deviceId === String(b2.deviceId))?.trust, 'untrusted');
});

test('contactDevices lists devices with fingerprints, trust, activity and sessions', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b1 = await makePeer(net, B);
  const b2 = await makePeer(net, B);
  // Before anything: the list is read, bundles only on request.
  const bare = await a.engine.contactDevices(A, B);
  assert.deepEqual(bare.map((d) => [d.device_id, d.fingerprint, d.session]).sort(), [[b1.deviceId, null, false], [b2.deviceId, null, false]].sort());
  const full = await a.engine.contactDevices(A, B, { bundles: true });
  for (const d of full) {
    const peer = d.device_id === b1.deviceId ? b1 : b2;
    assert.equal(d.fingerprint, await peer.engine.fingerprint(B));
    assert.equal(d.trust, 'trusted');
    assert.equal(d.active, true);
  }
  await send(a, B, 'x');
  assert.ok((await a.engine.contactDevices(A, B)).every((d) => d.session));
});
