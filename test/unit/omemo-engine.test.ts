// The engine's contract around the message flows: errors with codes, reachability, coalesced fetches,
// prekey and signed prekey upkeep, metrics, logs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeNetwork, makePeer, send, encryptedOf, reparse, timeoutError } from './helpers/omemo-net.js';
import { NODE_DEVICELIST, bundleNode } from '../../bridges/omemo/constants.js';
import { parseBundle } from '../../bridges/omemo/wire.js';
import { RawPeer } from './helpers/omemo-raw-peer.js';
import type { Decrypted } from '../../bridges/engine.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';
const code = (c: string) => (e: { code?: string }) => e.code === c;

function body(d: Decrypted): string | null {
  assert.equal(d.ok, true, d.ok ? '' : `decrypt failed: ${d.reason}`);
  return d.ok ? d.body : null;
}

test('no device list: no_encryption_available; reachability no; an empty list likewise', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  await assert.rejects(a.engine.encrypt(A, 'nobody@example.net', 'hi'), code('no_encryption_available'));
  assert.equal(await a.engine.reachability(A, 'nobody@example.net'), 'no');
  net.setDeviceList('empty@example.net', []);
  await assert.rejects(a.engine.encrypt(A, 'empty@example.net', 'hi'), code('no_encryption_available'));
});

test('reachability: needs-session, then ready; remote failures surface as remote_timeout', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  await makePeer(net, B);
  assert.equal(await a.engine.reachability(A, B), 'needs-session');
  await send(a, B, 'x');
  assert.equal(await a.engine.reachability(A, B), 'ready');
  // A contact whose server does not answer.
  net.intercept = (f) => (f.to === 'slow@example.net' ? timeoutError() : undefined);
  await assert.rejects(a.engine.reachability(A, 'slow@example.net'), code('remote_timeout'));
  await assert.rejects(a.engine.encrypt(A, 'slow@example.net', 'x'), code('remote_timeout'));
  // A stale list is used at once while it is refreshed in the background, even if that fails.
  net.intercept = (f) => (f.to === B && f.node === NODE_DEVICELIST ? timeoutError() : undefined);
  a.clock.advance(a.engine.internals.opts.deviceListTtlMs + 1);
  const n = net.fetchCount(B, NODE_DEVICELIST);
  assert.equal(await a.engine.reachability(A, B), 'ready');
  await a.engine.settled();
  assert.equal(net.fetchCount(B, NODE_DEVICELIST), n + 1);
  const d = await send(a, B, 'still works');
  assert.equal(encryptedOf(d).getChild('header')!.getChildren('key').length, 1);
  // An explicit refresh waits for the answer, and falls back to the cached list on failure.
  assert.equal((await a.engine.contactDevices(A, B, { refresh: true })).length, 1);
  assert.equal(net.fetchCount(B, NODE_DEVICELIST), n + 3);
});

test('bundle fetch failures for every device: the remote error is reported', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  await makePeer(net, B);
  net.intercept = (f) => (f.node.startsWith('eu.siacs.conversations.axolotl.bundles') ? timeoutError() : undefined);
  await assert.rejects(a.engine.encrypt(A, B, 'x'), code('remote_timeout'));
  // The failure is remembered for a while: the next send fails at once, without asking again.
  const asked = net.fetches.length;
  await assert.rejects(a.engine.encrypt(A, B, 'x'), code('remote_timeout'));
  assert.equal(net.fetches.length, asked);
  // A device whose bundle is missing or broken is skipped; no device left: no_encryption_available.
  a.clock.advance(a.engine.internals.opts.missingListTtlMs);
  net.intercept = (f) => (f.node.startsWith('eu.siacs.conversations.axolotl.bundles') ? null : undefined);
  await assert.rejects(a.engine.encrypt(A, B, 'x'), code('no_encryption_available'));
  // Once it is readable again (and the memory expired), sending works.
  net.intercept = null;
  a.clock.advance(a.engine.internals.opts.missingListTtlMs);
  await a.engine.encrypt(A, B, 'x');
});

test('parallel sends to a new contact: one list fetch, one bundle fetch and one session per device', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const bs = [await makePeer(net, B), await makePeer(net, B)];
  const msgs = await Promise.all(Array.from({ length: 5 }, (_, i) => send(a, B, `parallel ${i}`)));
  assert.equal(net.fetchCount(B, NODE_DEVICELIST), 1);
  for (const b of bs) assert.equal(net.fetchCount(B, bundleNode(b.deviceId)), 1);
  const builds = (await a.metrics.render()).body.match(/gateway_crypto_operation_seconds_count\{protocol="omemo",operation="session_build"\} (\d+)/);
  assert.equal(builds?.[1], '2', 'one session build per device');
  // Every message is a PreKey message of the same session per device.
  for (const b of bs) {
    for (let i = 0; i < msgs.length; i++) assert.equal(body(await b.engine.decrypt(B, msgs[i]!)), `parallel ${i}`);
    assert.equal(b.engine.internals.keyring.preKeyIds(B).used.length, 1);
  }
});

test('each consumed prekey leaves the published bundle and its replacement joins it, as the stored prekeys say', async () => {
  const net = new FakeNetwork();
  const b = await makePeer(net, B);
  const published = () => parseBundle(net.items(B, bundleNode(b.deviceId))!)!;
  const before = published().preKeys.map((p) => p.id);
  // Three contacts, three PreKey messages: the bundle is updated three times in a row.
  for (const jid of ['c1@gw.example.org', 'c2@gw.example.org', 'c3@gw.example.org']) {
    const c = await makePeer(net, jid);
    assert.equal(body(await b.engine.decrypt(B, await send(c, B, 'hello'))), 'hello');
  }
  const { unused, used } = b.engine.internals.keyring.preKeyIds(B);
  assert.equal(used.length, 3);
  const now = published();
  assert.deepEqual(now.preKeys.map((p) => p.id), unused);
  // A used prekey was published before, or is a replacement made during the test (a later sender
  // may draw the one an earlier message added); none is published now.
  const maxBefore = Math.max(...before);
  for (const id of used) assert.ok((before.includes(id) || id > maxBefore) && !now.preKeys.some((p) => p.id === id), `prekey ${id}`);
  assert.equal(now.preKeys.length, before.length);
  // The published keys are the stored ones (a fresh read of the store, not the engine's copy).
  b.engine.internals.keyring.forgetBundles();
  assert.deepEqual(b.engine.internals.keyring.bundle(B), now);
});

test('parallel and out-of-order decrypts of one sender are serialized correctly', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const d0 = await b.engine.decrypt(B, await send(a, B, 'start'));
  for (const r of d0.replies) await a.engine.decrypt(A, reparse(r));
  const msgs: Awaited<ReturnType<typeof send>>[] = [];
  for (let i = 0; i < 12; i++) msgs.push(await send(a, B, `p${i}`));
  const order = [5, 0, 11, 3, 7, 1, 9, 2, 10, 4, 8, 6];
  const res = await Promise.all(order.map((i) => b.engine.decrypt(B, msgs[i]!)));
  assert.deepEqual(res.map((r) => body(r)), order.map((i) => `p${i}`));
});

test('concurrent first use of a hosted JID creates one identity', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const results = await Promise.all(Array.from({ length: 4 }, () => a.engine.identity('new@gw.example.org')));
  const ids = new Set(results.map((r) => r.omemo![0]!.device_id));
  assert.equal(ids.size, 1);
  assert.equal(net.publishes.filter((p) => p.owner === 'new@gw.example.org' && p.node === NODE_DEVICELIST).length, 1);
});

test('signed prekey rotation: new key after a period, the old one honoured for one more period', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const period = a.engine.internals.opts.signedPreKeyRotationMs;
  const spkId = () => parseBundle(net.items(A, bundleNode(a.deviceId))!)!.signedPreKey.id;
  const first = spkId();
  // Two senders build on the bundle with the first signed prekey and send later.
  const r = await RawPeer.create('rita@example.net', 31);
  const late = await RawPeer.create('late@example.net', 32);
  for (const p of [r, late]) {
    p.publish(net);
    await p.startSession(net, A, a.deviceId);
  }
  a.clock.advance(period / 2);
  await a.engine.maintain!();
  assert.equal(spkId(), first, 'not yet');
  a.clock.advance(period / 2);
  await a.engine.maintain!();
  const second = spkId();
  assert.ok(second > first);
  assert.equal(net.publishes.filter((p) => p.node === bundleNode(a.deviceId)).length, 2, 'republished after the rotation');
  assert.equal(body(await a.engine.decrypt(A, await r.message(A, a.deviceId, 'built on the old signed prekey'))), 'built on the old signed prekey');
  // One more period: rotated again, and the first signed prekey is deleted.
  a.clock.advance(period);
  await a.engine.maintain!();
  assert.ok(spkId() > second);
  assert.equal(a.engine.internals.keyring.hasSignedPreKey(A, first), false);
  assert.equal(a.engine.internals.keyring.hasSignedPreKey(A, second), true);
  const d = await a.engine.decrypt(A, await late.message(A, a.deviceId, 'too late'));
  assert.equal(!d.ok && d.reason, 'unknown-prekey');
});

test('metrics: messages, failures by reason, crypto timings, sessions gauge', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const m = await send(a, B, 'count me');
  await b.engine.decrypt(B, m);
  await b.engine.decrypt(B, m);
  const text = (await b.metrics.render()).body;
  assert.match(text, /gateway_messages_total\{protocol="omemo",direction="in",result="ok"\} 1/);
  assert.match(text, /gateway_messages_total\{protocol="omemo",direction="out",result="completion"\} 1/);
  assert.match(text, /gateway_decrypt_failures_total\{protocol="omemo",reason="duplicate"\} 1/);
  assert.match(text, /gateway_crypto_operation_seconds_count\{protocol="omemo",operation="session_build"\} 1/);
  assert.match(text, /gateway_sessions\{protocol="omemo"\} 1/);
  // Tracked after the first count: a new session and a deleted one.
  const c = await makePeer(net, 'carol@gw.example.org');
  await b.engine.decrypt(B, await send(c, B, 'another session'));
  assert.match((await b.metrics.render()).body, /gateway_sessions\{protocol="omemo"\} 2/);
  await b.engine.internals.sessions.delete(B, A, a.deviceId);
  assert.match((await b.metrics.render()).body, /gateway_sessions\{protocol="omemo"\} 1/);
  const ta = (await a.metrics.render()).body;
  assert.match(ta, /gateway_crypto_operation_seconds_count\{protocol="omemo",operation="encrypt"\} 1/);
  assert.match(ta, /gateway_crypto_operation_seconds_count\{protocol="omemo",operation="session_build"\} 1/);
});

test('no plaintext and no key material in logs, on success and failure paths', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const canary = 'CANARY-7f3a9-do-not-log';
  const m = await send(a, B, canary);
  const d = await b.engine.decrypt(B, m);
  assert.equal(body(d), canary);
  await b.engine.decrypt(B, m); // duplicate
  const broken = await send(a, B, canary);
  encryptedOf(broken).getChild('payload')!.children = [Buffer.from('x'.repeat(40)).toString('base64')];
  assert.equal((await b.engine.decrypt(B, broken)).ok, false);
  const payloadB64 = encryptedOf(m).getChildText('payload')!;
  const keyB64 = encryptedOf(m).getChild('header')!.getChildText('key')!;
  const logs = [...a.logs, ...b.logs].join('\n');
  assert.ok(logs.length > 0);
  assert.ok(logs.includes('omemo'), 'the engines did log');
  for (const secret of [canary, payloadB64, keyB64, Buffer.from(canary).toString('base64')]) assert.ok(!logs.includes(secret));
});
