// Legacy OMEMO engines exchanging messages through an in-memory pubsub network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeNetwork, makePeer, send, chat, encryptedOf, openTestKeystore, reparse, type Peer } from './helpers/omemo-net.js';
import type { Decrypted } from '../../bridges/engine.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';

function body(d: Decrypted): string | null {
  assert.equal(d.ok, true, d.ok ? '' : `decrypt failed: ${d.reason}`);
  return d.ok ? d.body : null;
}

async function deliver(from: Peer, to: Peer, text: string): Promise<Decrypted> {
  return to.engine.decrypt(to.jid, await send(from, to.jid, text));
}

test('first message is a PreKey message; the reply completes the session', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const m1 = await send(a, B, 'hello bob');
  const key = encryptedOf(m1).getChild('header')!.getChildren('key');
  assert.equal(key.length, 1);
  assert.equal(key[0]!.attrs.rid, String(b.deviceId));
  assert.equal(key[0]!.attrs.prekey, 'true');
  const d1 = await b.engine.decrypt(B, m1);
  assert.equal(body(d1), 'hello bob');
  assert.ok(d1.ok && d1.sender.jid === A && d1.sender.deviceId === a.deviceId);
  assert.equal(d1.ok && d1.sender.fingerprint, await a.engine.fingerprint(A));
  assert.equal(d1.ok && d1.sender.trust, 'trusted');
  // Bob answers at once with an empty message so Alice stops sending PreKey messages.
  assert.equal(d1.replies.length, 1);
  const completion = d1.replies[0]!;
  assert.equal(completion.attrs.from, `${B}/gw`);
  assert.equal(completion.attrs.to, A);
  assert.equal(completion.getChild('body'), undefined);
  assert.ok(completion.getChild('store', 'urn:xmpp:hints'));
  const enc = encryptedOf(completion);
  assert.equal(enc.getChild('payload'), undefined);
  assert.equal(enc.getChild('header')!.getChild('key')!.attrs.prekey, undefined);
  const dc = await a.engine.decrypt(A, reparse(completion));
  assert.equal(body(dc), null);
  // From now on Alice sends normal messages.
  const m2 = await send(a, B, 'second');
  assert.equal(encryptedOf(m2).getChild('header')!.getChild('key')!.attrs.prekey, undefined);
  assert.equal(body(await b.engine.decrypt(B, m2)), 'second');
});

test('20 messages each way, then ping-pong', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  for (let i = 0; i < 20; i++) assert.equal(body(await deliver(a, b, `a->b ${i}`)), `a->b ${i}`);
  for (let i = 0; i < 20; i++) assert.equal(body(await deliver(b, a, `b->a ${i}`)), `b->a ${i}`);
  for (let i = 0; i < 10; i++) {
    assert.equal(body(await deliver(a, b, `ping ${i}`)), `ping ${i}`);
    assert.equal(body(await deliver(b, a, `pong ${i}`)), `pong ${i}`);
  }
});

test('messages delivered out of order and late still decrypt (skipped keys)', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  assert.equal(body(await deliver(a, b, 'start')), 'start');
  const msgs = [];
  for (let i = 0; i < 5; i++) msgs.push(await send(a, B, `n${i}`));
  for (const i of [4, 0, 2, 1, 3]) assert.equal(body(await b.engine.decrypt(B, msgs[i]!)), `n${i}`);
});

test('a contact with three devices gets one key per device, and each device reads the message', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const bs = [await makePeer(net, B), await makePeer(net, B), await makePeer(net, B)];
  const m = await send(a, B, 'to all of you');
  const rids = encryptedOf(m).getChild('header')!.getChildren('key').map((k) => Number(k.attrs.rid)).sort();
  assert.deepEqual(rids, bs.map((b) => b.deviceId).sort());
  for (const b of bs) assert.equal(body(await b.engine.decrypt(B, m)), 'to all of you');
  // And each of them can answer.
  for (const b of bs) assert.equal(body(await deliver(b, a, `from ${b.deviceId}`)), `from ${b.deviceId}`);
  const m2 = await send(a, B, 'again');
  for (const b of bs) assert.equal(body(await b.engine.decrypt(B, m2)), 'again');
});

test('a key-transport message decrypts to no body', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const first = await deliver(a, b, 'hi');
  const kt = first.replies[0]!;
  const d = await a.engine.decrypt(A, reparse(kt));
  assert.equal(d.ok, true);
  assert.equal(d.ok && d.body, null);
  assert.equal(d.ok && d.sender.deviceId, b.deviceId);
});

test('duplicates and replays are rejected, by memory and by the ratchet after a restart', async () => {
  const net = new FakeNetwork();
  const ksB = openTestKeystore();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B, { ks: ksB, name: 'bob' });
  const m1 = await send(a, B, 'once');
  assert.equal(body(await b.engine.decrypt(B, m1)), 'once');
  const again = await b.engine.decrypt(B, m1);
  assert.equal(again.ok, false);
  assert.equal(!again.ok && again.reason, 'duplicate');
  const m2 = await send(a, B, 'normal one');
  assert.equal(body(await b.engine.decrypt(B, m2)), 'normal one');
  // A new engine object on the same keystore has no memory of digests: the ratchet refuses.
  const b2 = await makePeer(net, B, { ks: ksB, name: 'bob' });
  for (const m of [m1, m2]) {
    const r = await b2.engine.decrypt(B, m);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.reason, 'duplicate');
  }
  assert.equal(body(await b2.engine.decrypt(B, await send(a, B, 'still fine'))), 'still fine');
});

test('an old message replayed after many ratchet turns is a duplicate and starts no repair', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const first = await send(a, B, 'first');
  assert.equal(body(await b.engine.decrypt(B, first)), 'first');
  // Enough turns that the chain of `first` is gone from the session record.
  for (let i = 0; i < 14; i++) {
    assert.equal(body(await deliver(b, a, `pong ${i}`)), `pong ${i}`);
    assert.equal(body(await deliver(a, b, `ping ${i}`)), `ping ${i}`);
  }
  const r = await b.engine.decrypt(B, first);
  assert.equal(!r.ok && r.reason, 'duplicate');
  assert.equal(r.replies.length, 0);
  assert.equal(body(await deliver(a, b, 'still fine')), 'still fine');
});

test('an engine restarted on the same keystore keeps identity and sessions', async () => {
  const net = new FakeNetwork();
  const ksA = openTestKeystore();
  const a = await makePeer(net, A, { ks: ksA, name: 'alice' });
  const b = await makePeer(net, B);
  assert.equal(body(await deliver(a, b, 'before')), 'before');
  assert.equal(body(await deliver(b, a, 'reply')), 'reply');
  const fetchesBefore = net.fetches.length;
  const a2 = await makePeer(net, A, { ks: ksA, name: 'alice' });
  assert.equal(a2.deviceId, a.deviceId);
  assert.equal(await a2.engine.fingerprint(A), await a.engine.fingerprint(A));
  const m = await send(a2, B, 'after restart');
  // No new session: a normal message, and no bundle was fetched.
  assert.equal(encryptedOf(m).getChild('header')!.getChild('key')!.attrs.prekey, undefined);
  assert.equal(net.fetches.slice(fetchesBefore).filter((f) => f.node.includes('bundles')).length, 0);
  assert.equal(body(await b.engine.decrypt(B, m)), 'after restart');
  assert.equal(body(await deliver(b, a2, 'welcome back')), 'welcome back');
  // Nothing had to be republished: the items on the pubsub service were current.
  assert.equal(net.publishes.filter((p) => p.publisher === 'alice').length, 2);
});

test('identity facts: device id and a 64-hex fingerprint; bundle and list published open', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const facts = await a.engine.identity(A);
  assert.equal(facts.omemo?.length, 1);
  const [dev] = facts.omemo!;
  assert.ok(dev!.device_id >= 1 && dev!.device_id <= 0x7fffffff);
  assert.match(dev!.fingerprint, /^[0-9a-f]{64}$/);
  assert.ok(net.publishes.every((p) => p.opts?.accessModel === 'open'));
  assert.deepEqual(net.publishes.map((p) => p.node).sort(), [`eu.siacs.conversations.axolotl.bundles:${dev!.device_id}`, 'eu.siacs.conversations.axolotl.devicelist']);
});

test('a corrupted ciphertext is rejected and the session keeps working', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  assert.equal(body(await deliver(a, b, 'setup')), 'setup');
  assert.equal(body(await deliver(b, a, 'ack')), 'ack');
  const m = await send(a, B, 'will be damaged');
  const damaged = reparse(m);
  const keyEl = encryptedOf(damaged).getChild('header')!.getChild('key')!;
  const raw = Buffer.from(keyEl.getText(), 'base64');
  raw[raw.length - 12]! ^= 0x01; // inside the AES-CBC ciphertext, before the MAC
  keyEl.children = [raw.toString('base64')];
  const bad = await b.engine.decrypt(B, damaged);
  assert.equal(bad.ok, false);
  assert.equal(!bad.ok && bad.reason, 'bad-mac');
  // Nothing changed: the intact copy of the same message still decrypts.
  assert.equal(body(await b.engine.decrypt(B, m)), 'will be damaged');
  // A bad MAC changes nothing either.
  const forged = reparse(await send(a, B, 'next'));
  const fk = encryptedOf(forged).getChild('header')!.getChild('key')!;
  const fraw = Buffer.from(fk.getText(), 'base64');
  fraw[fraw.length - 9]! ^= 0xff; // the last MAC byte
  fk.children = [fraw.toString('base64')];
  assert.equal((await b.engine.decrypt(B, forged)).ok, false);
  // The replies (repairs on a new session) are not delivered: the old session must still work.
  for (let i = 0; i < 3; i++) assert.equal(body(await deliver(a, b, `after ${i}`)), `after ${i}`);
  assert.equal(body(await deliver(b, a, 'back')), 'back');
});

test('a corrupted payload is rejected and the session keeps working', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  assert.equal(body(await deliver(a, b, 'setup')), 'setup');
  const m = await send(a, B, 'payload to damage');
  const p = encryptedOf(m).getChild('payload')!;
  const raw = Buffer.from(p.getText(), 'base64');
  raw[0]! ^= 0xff;
  p.children = [raw.toString('base64')];
  const bad = await b.engine.decrypt(B, m);
  assert.equal(bad.ok, false);
  assert.equal(!bad.ok && bad.reason, 'bad-mac');
  assert.equal(bad.replies.length, 0, 'no repair for a payload error: the session is fine');
  assert.equal(body(await deliver(a, b, 'next')), 'next');
  assert.equal(body(await deliver(b, a, 'reply')), 'reply');
});

test('a missing session is answered by a key transport that re-establishes it', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const ksB = openTestKeystore();
  const b = await makePeer(net, B, { ks: ksB, name: 'bob' });
  const setup = await deliver(a, b, 'setup');
  assert.equal(body(setup), 'setup');
  // Alice gets Bob's completion, so she sends normal (not PreKey) messages from now on.
  assert.equal(body(await a.engine.decrypt(A, reparse(setup.replies[0]!))), null);
  // Bob loses his session with Alice (e.g. restored an old backup).
  b.engine.internals.sessions.clearCache();
  ksB.db.prepare("DELETE FROM kv WHERE protocol = 'omemo' AND kind = 'session'").run();
  const lost = await b.engine.decrypt(B, await send(a, B, 'lost'));
  assert.equal(lost.ok, false);
  assert.equal(!lost.ok && lost.reason, 'no-session');
  assert.equal(lost.replies.length, 1);
  const kt = lost.replies[0]!;
  assert.equal(encryptedOf(kt).getChild('header')!.getChild('key')!.attrs.prekey, 'true');
  assert.equal(kt.getChild('body'), undefined);
  const dk = await a.engine.decrypt(A, reparse(kt));
  assert.equal(body(dk), null);
  // Alice's next message uses the new session.
  const found = await send(a, B, 'found again');
  assert.equal(encryptedOf(found).getChild('header')!.getChild('key')!.attrs.prekey, undefined);
  assert.equal(body(await b.engine.decrypt(B, found)), 'found again');
  // A second failure within the interval is not answered again.
  b.engine.internals.sessions.clearCache();
  ksB.db.prepare("DELETE FROM kv WHERE protocol = 'omemo' AND kind = 'session'").run();
  const again = await b.engine.decrypt(B, await send(a, B, 'lost again'));
  assert.equal(!again.ok && again.reason, 'no-session');
  assert.equal(again.replies.length, 0);
  b.clock.advance(b.engine.internals.opts.repairIntervalMs);
  const later = await b.engine.decrypt(B, await send(a, B, 'lost later'));
  assert.equal(later.replies.length, 1);
});

test('a message for another device only is not-for-this-device', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const c = await makePeer(net, 'carol@gw.example.org');
  const m = await send(a, B, 'for bob');
  const r = await c.engine.decrypt(c.jid, chat(a, c.jid, [encryptedOf(m)]));
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.reason, 'not-for-this-device');
  assert.equal(body(await b.engine.decrypt(B, m)), 'for bob');
});
