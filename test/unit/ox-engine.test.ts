// The OX engine (XEP-0373/0374) against an OX peer on openpgp.js: published nodes, outbound
// signcrypt, every inbound case of the README table, trust, PEP events, the shared replay store.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as openpgp from 'openpgp';
import { parseXml, xml } from '../../component/xml.js';
import { GatewayError } from '../../errors.js';
import { keyNode, NODE_METADATA, NS_OX, parseContent } from '../../bridges/ox/wire.js';
import { BOT, PROXY, counterValue, makeOxRig, OxPeer, type OxRig } from './ox-setup.js';

const DAVE = 'dave@ox.example';
const CANARY = 'canary-ox-51c2 plaintext that must never be logged';

let dave: OxPeer;
let other: OxPeer;

before(async () => {
  [dave, other] = await Promise.all([OxPeer.create(DAVE), OxPeer.create('eve@ox.example')]);
});

async function localPublic(rig: OxRig, local = PROXY): Promise<openpgp.PublicKey> {
  return (await rig.engine.localKey(local)).publicKey;
}

async function failures(rig: OxRig, reason: string): Promise<number> {
  return counterValue(rig.metrics.decryptFailures, { protocol: 'ox', reason });
}

test('a hosted JID gets a key with user ID xmpp:<JID as on the wire>, published key node first, then metadata', async () => {
  const rig = makeOxRig();
  const id = await rig.engine.identity(PROXY);
  assert.match(id.ox!.fingerprint, /^[0-9A-F]{40}$/);
  assert.deepEqual(rig.publishes, [keyNode(id.ox!.fingerprint), NODE_METADATA]);
  const meta = rig.local.get(`${PROXY}\0${NODE_METADATA}`)![0]!;
  assert.equal(meta.id, 'current');
  assert.ok(meta.payload.is('public-keys-list', NS_OX));
  const m = meta.payload.getChild('pubkey-metadata')!;
  assert.equal(m.attrs['v4-fingerprint'], id.ox!.fingerprint);
  const keyItem = rig.local.get(`${PROXY}\0${keyNode(id.ox!.fingerprint)}`)![0]!;
  assert.equal(keyItem.id, m.attrs.date, 'the key item id is its date');
  assert.ok(keyItem.payload.is('pubkey', NS_OX));
  const data = keyItem.payload.getChildText('data')!;
  const key = await openpgp.readKey({ binaryKey: Buffer.from(data, 'base64') });
  assert.equal(key.isPrivate(), false);
  assert.deepEqual(key.getUserIDs(), [`xmpp:${PROXY}`]);
  assert.equal(key.getFingerprint().toUpperCase(), id.ox!.fingerprint);
  assert.match(id.ox!.public_key, /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
  // Idempotent: no second publish.
  await rig.engine.ensureIdentity(PROXY);
  assert.equal(rig.publishes.length, 2);
});

test('outbound: signcrypt to the contact, signed by the hosted JID, encrypted to every trusted key and to our own', async () => {
  const rig = makeOxRig();
  const second = await OxPeer.create(DAVE);
  dave.publish(rig, [dave.key, second.key]);
  assert.equal(await rig.engine.reachability(PROXY, DAVE), 'ready');
  const enc = await rig.engine.encrypt(PROXY, DAVE, CANARY);
  const stanza = parseXml(xml('message', {}, ...enc.children).toString());
  assert.ok(stanza.getChild('encryption', 'urn:xmpp:eme:0')?.attrs.namespace === NS_OX);
  assert.ok(stanza.getChild('store', 'urn:xmpp:hints'));
  assert.doesNotMatch(stanza.getChildText('body')!, /canary/);
  const me = await rig.engine.localKey(PROXY);
  const got = await dave.read(stanza, me.publicKey);
  const c = parseContent(got.text);
  assert.equal(c.kind, 'signcrypt');
  assert.deepEqual(c.to, [DAVE]);
  assert.ok(Math.abs(c.time - Date.now()) < 60_000);
  assert.equal(c.body, CANARY);
  assert.match(got.text, /<rpad>[^<]+<\/rpad>/);
  const ids = new Set(got.recipients);
  for (const k of [dave.key, second.key, me.privateKey]) {
    assert.ok(k.getSubkeys().some((s) => ids.has(s.getKeyID().toHex().toUpperCase())), 'encrypted to each key');
  }
  // the second key decrypts too
  await second.read(stanza, me.publicKey);
  // rpad length varies
  const lengths = new Set<number>();
  for (let i = 0; i < 8; i++) {
    const e = await rig.engine.encrypt(PROXY, DAVE, 'x');
    lengths.add(e.children[0]!.getText().length);
  }
  assert.ok(lengths.size > 1, 'padding changes the ciphertext length');
  assert.ok(!rig.logs.join('').includes(CANARY));
});

test('no OX node: not reachable, no_encryption_available; keys without the user ID are not used', async () => {
  const rig = makeOxRig();
  assert.equal(await rig.engine.reachability(PROXY, 'nobody@ox.example'), 'no');
  await assert.rejects(rig.engine.encrypt(PROXY, 'nobody@ox.example', 'x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_encryption_available');
  const impostor = await OxPeer.create('mallory@ox.example', 'xmpp:someone-else@ox.example');
  impostor.publish(rig);
  assert.equal(await rig.engine.reachability(PROXY, 'mallory@ox.example'), 'no');
});

test('trust: a new key of a contact whose key was verified stays untrusted (btbv)', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  await rig.engine.reachability(PROXY, DAVE);
  rig.ports.trust.set(DAVE, 'ox', dave.fingerprint, 'verified');
  const newKey = await OxPeer.create(DAVE);
  newKey.publish(rig, [newKey.key]);
  rig.engine.internals.contacts.forgetKey(DAVE, newKey.fingerprint);
  const keys = await rig.engine.contactKeys(PROXY, DAVE, { refresh: true });
  assert.deepEqual(keys.map((k) => [k.fingerprint, k.trust]), [[newKey.fingerprint, 'untrusted']]);
  await assert.rejects(rig.engine.encrypt(PROXY, DAVE, 'x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_trusted_devices');
  assert.equal(rig.ports.trust.get(DAVE, 'ox', dave.fingerprint)?.active, false, 'the withdrawn key is inactive');
});

test('inbound signcrypt from an announced key: delivered with fingerprint and trust', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  const b64 = await dave.message(PROXY, await localPublic(rig), { body: CANARY });
  const r = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, b64));
  assert.ok(r.ok);
  assert.equal(r.body, CANARY);
  assert.equal(r.sender.fingerprint, dave.fingerprint);
  assert.equal(r.sender.trust, 'trusted');
  assert.equal(r.plaintext, undefined);
  assert.ok(!rig.logs.join('').includes(CANARY));
});

test('inbound refusals: each with its own reason and metric', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  const pub = await localPublic(rig);
  const cases: Array<[string, () => Promise<string>, string[]?]> = [
    ['bad-signature', () => dave.message(PROXY, pub, { tamper: true })],
    ['wrong-recipient', () => dave.message(PROXY, pub, { to: ['someone@gw.example.org'] })],
    ['stale-time', () => dave.message(PROXY, pub, { time: Date.now() - 3600_000 })],
    ['unknown-key', () => dave.message(PROXY, pub, { signer: other.key })],
    ['wrong-key', () => dave.message(PROXY, other.key.toPublic())],
    ['bad-signature', () => dave.message(PROXY, pub, { signer: null })],
    ['malformed', async () => 'not base64!'],
    ['plaintext', () => dave.message(PROXY, null, { kind: 'sign' })],
  ];
  for (const [reason, make] of cases) {
    const before = await failures(rig, reason);
    const r = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, await make()));
    assert.equal(r.ok ? 'ok' : r.reason, reason);
    assert.equal(await failures(rig, reason), before + 1, `${reason} counted`);
  }
  // A message to another hosted JID's key is wrong-key there.
  const toBot = await dave.message(BOT, await localPublic(rig, BOT));
  const r = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, toBot));
  assert.equal(r.ok ? 'ok' : r.reason, 'wrong-key');
});

test('time: an old message from offline storage is accepted within the skew of its <delay> stamp', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  const pub = await localPublic(rig);
  const sent = Date.now() - 5 * 3600_000;
  const b64 = await dave.message(PROXY, pub, { time: sent });
  const delay = xml('delay', { xmlns: 'urn:xmpp:delay', stamp: new Date(sent + 2000).toISOString() });
  const r = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, b64, [delay]));
  assert.ok(r.ok, 'delayed message accepted');
  const skewed = makeOxRig({ skewMs: 60_000 });
  dave.publish(skewed);
  const m = await dave.message(PROXY, await localPublic(skewed), { time: Date.now() + 120_000 });
  const r2 = await skewed.engine.decrypt(PROXY, dave.stanza(PROXY, m));
  assert.equal(r2.ok ? 'ok' : r2.reason, 'stale-time', 'the skew is configurable');
});

test('replay: a ciphertext is accepted once, in OX or XEP-0027 (one store)', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  const b64 = await dave.message(PROXY, await localPublic(rig));
  assert.ok((await rig.engine.decrypt(PROXY, dave.stanza(PROXY, b64))).ok);
  const again = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, b64));
  assert.equal(again.ok ? 'ok' : again.reason, 'duplicate');
  assert.equal(await counterValue(rig.metrics.replaysDropped, { protocol: 'ox' }), 1);
  // The same store the XEP-0027 engine claims from.
  const bytes = Buffer.from(b64, 'base64');
  const { encryptedDataBody } = await import('../../bridges/pgp/packets.js');
  const { payloadDigest } = await import('../../bridges/pgp/replay-guard.js');
  assert.equal(rig.replay.claim(payloadDigest(encryptedDataBody(bytes)!)), false);
  // A copy with a trailing packet openpgp skips (unknown non-critical tag, also cut short) is the
  // same message (found by the fuzz, seed 197358681: the digest was taken over the whole payload).
  for (const tail of [[0xeb, 0xcc], [0xeb, 0x01, 0x00]]) {
    const r = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, Buffer.concat([bytes, Buffer.from(tail)]).toString('base64')));
    assert.equal(r.ok ? 'ok' : r.reason, 'duplicate', `tail ${tail.join(',')}`);
  }
  // A refused copy does not burn the digest of the genuine message.
  const fresh = await dave.message(PROXY, await localPublic(rig));
  const wrongTo = parseXml(dave.stanza(PROXY, fresh).toString());
  wrongTo.attrs.from = 'eve@ox.example/x';
  assert.equal((await rig.engine.decrypt(PROXY, wrongTo)).ok, false);
  assert.ok((await rig.engine.decrypt(PROXY, dave.stanza(PROXY, fresh))).ok);
});

test('crypt is delivered untrusted without fingerprint; sign is plaintext, delivered only where allowed', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  const r = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, await dave.message(PROXY, await localPublic(rig), { kind: 'crypt' })));
  assert.ok(r.ok);
  assert.equal(r.sender.trust, 'untrusted');
  assert.equal(r.sender.fingerprint, undefined);
  rig.plaintext.allowed = true;
  const s = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, await dave.message(PROXY, null, { kind: 'sign', body: 'signed only' })));
  assert.ok(s.ok);
  assert.equal(s.plaintext, true);
  assert.equal(s.body, 'signed only');
  assert.equal(s.sender.fingerprint, dave.fingerprint);
});

test('an unknown signer makes the engine re-read the PEP once: a key published since is found', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  await rig.engine.reachability(PROXY, DAVE);
  const newKey = await OxPeer.create(DAVE);
  newKey.publish(rig, [dave.key, newKey.key]);
  const b64 = await newKey.message(PROXY, await localPublic(rig));
  const r = await rig.engine.decrypt(PROXY, dave.stanza(PROXY, b64));
  assert.ok(r.ok, 'found after a refresh');
  assert.equal(r.sender.fingerprint, newKey.fingerprint);
});

test('+notify events: with a payload the listed keys are read, without one the node is fetched', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  assert.equal(await rig.engine.reachability(PROXY, DAVE), 'ready');
  const fetchesBefore = rig.fetches.length;
  // A key change announced with no payload (deliver_payloads=false): the node is read.
  const newKey = await OxPeer.create(DAVE);
  newKey.publish(rig, [newKey.key]);
  await rig.engine.onPepEvent!(PROXY, `${DAVE}/phone`, NODE_METADATA, [xml('item', { id: 'current' })]);
  assert.ok(rig.fetches.slice(fetchesBefore).includes(`${DAVE} ${NODE_METADATA}`));
  const keys = await rig.engine.contactKeys(PROXY, DAVE);
  assert.deepEqual(keys.map((k) => k.fingerprint), [newKey.fingerprint]);
  // With a payload: its fingerprints are used.
  dave.publish(rig, [dave.key]);
  const item = rig.remote.get(DAVE)!.get(NODE_METADATA)![0]!;
  await rig.engine.onPepEvent!(PROXY, `${DAVE}/phone`, NODE_METADATA, [item]);
  assert.deepEqual((await rig.engine.contactKeys(PROXY, DAVE)).map((k) => k.fingerprint), [dave.fingerprint]);
});

test('a key node holding an armored key inside the base64 (Profanity announcing an armored file) is read too', async () => {
  const rig = makeOxRig();
  dave.publish(rig);
  const node = rig.remote.get(DAVE)!.get(keyNode(dave.fingerprint))!;
  const armored = dave.key.toPublic().armor();
  node[0] = xml('item', { id: 'x' }, xml('pubkey', { xmlns: NS_OX }, xml('data', {}, Buffer.from(armored).toString('base64'))));
  assert.deepEqual((await rig.engine.contactKeys(PROXY, DAVE)).map((k) => k.fingerprint), [dave.fingerprint]);
});

test('a metadata node listing many keys costs at most MAX_KEYS_PER_CONTACT key reads', async () => {
  const { MAX_KEYS_PER_CONTACT } = await import('../../bridges/ox/contact-keys.js');
  const rig = makeOxRig();
  const list = Array.from({ length: 200 }, (_, i) => xml('pubkey-metadata', { 'v4-fingerprint': i.toString(16).padStart(40, '0').toUpperCase(), date: '2026-01-01T00:00:00Z' }));
  rig.remote.set(DAVE, new Map([[NODE_METADATA, [xml('item', { id: 'current' }, xml('public-keys-list', { xmlns: NS_OX }, ...list))]]]));
  assert.equal(await rig.engine.reachability(PROXY, DAVE), 'no');
  assert.equal(rig.fetches.filter((f) => f.includes(':public-keys:')).length, MAX_KEYS_PER_CONTACT);
});
