// XEP-0027 messages between the engine and a legacy user played by the real GnuPG 2.2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as openpgp from 'openpgp';
import { GpgUser, clientStrip as clientStripArmor } from '../harness/gpg.js';
import { GatewayError } from '../../errors.js';
import { parseStripped } from '../../bridges/pgp/armor.js';
import { BOT, PROXY, counterValue, encryptedStanza, makeRig, type TestRig } from './pgp-setup.js';

const CAROL = 'carol@legacy.example';
const DAVE = 'dave@legacy.example';
const CANARY = 'canary-7f3e9a plaintext that must never be logged';
const BODIES: Record<string, string> = {
  ascii: 'disk 91% full on db-2',
  unicode: 'Grüße, 你好, مرحبا, 🔐👩🏽‍💻 e\u0301 \u00a0nbsp',
  newlines: 'line one\nline two\r\nline three\n\n  indented\ttab  \n',
  bom: '\ufeffstarts with a BOM',
  big: ('0123456789abcdef'.repeat(4) + '\n').repeat(1008).slice(0, 64 * 1024),
};

/** The first two packets (PKESKs, definite lengths) and the rest, split by their RFC 4880 §4.2 headers. */
function splitTwoPackets(bytes: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const packetEnd = (at: number): number => {
    const ctb = bytes[at]!;
    assert.ok(ctb & 0x80, 'packet header');
    if (ctb & 0x40) {
      const tag = ctb & 0x3f;
      assert.equal(tag, 1, 'a PKESK');
      const l0 = bytes[at + 1]!;
      if (l0 < 192) return at + 2 + l0;
      if (l0 < 224) return at + 3 + ((l0 - 192) << 8) + bytes[at + 2]! + 192;
      return at + 6 + Buffer.from(bytes.subarray(at + 2, at + 6)).readUInt32BE(0);
    }
    assert.equal((ctb >> 2) & 0x0f, 1, 'a PKESK');
    const lenType = ctb & 3;
    if (lenType === 0) return at + 2 + bytes[at + 1]!;
    if (lenType === 1) return at + 3 + Buffer.from(bytes.subarray(at + 1, at + 3)).readUInt16BE(0);
    return at + 5 + Buffer.from(bytes.subarray(at + 1, at + 5)).readUInt32BE(0);
  };
  const e1 = packetEnd(0);
  const e2 = packetEnd(e1);
  return [bytes.subarray(0, e1), bytes.subarray(e1, e2), bytes.subarray(e2)];
}

let carol: GpgUser;
let dave: GpgUser;

before(async () => {
  [carol, dave] = await Promise.all([GpgUser.create(`xmpp:${CAROL}`), GpgUser.create(`xmpp:${DAVE}`)]);
});
after(() => {
  carol?.destroy();
  dave?.destroy();
});

/** A rig where carol's key is registered and carol knows the hosted JID's public key. */
async function rigWithCarol(opts: Parameters<typeof makeRig>[0] = {}, local = PROXY): Promise<{ rig: TestRig; localFpr: string }> {
  const rig = makeRig(opts);
  await rig.engine.registerContactKey(CAROL, await carol.exportPublic(), { viaAdmin: false });
  const id = await rig.engine.identity(local);
  await carol.importKey(id.pgp!.public_key);
  return { rig, localFpr: id.pgp!.fingerprint };
}

test('the hosted key: v4, EdDSA + cv25519, user ID is xmpp: and the escaped JID, GnuPG imports it', async () => {
  const rig = makeRig();
  const id = await rig.engine.identity(PROXY);
  assert.match(id.pgp!.fingerprint, /^[0-9A-F]{40}$/);
  assert.equal(await rig.engine.publicKeyArmored(PROXY), id.pgp!.public_key);
  assert.equal((await rig.engine.identity(PROXY)).pgp!.fingerprint, id.pgp!.fingerprint, 'stable');
  assert.equal(id.pgp!.public_key.includes('PRIVATE'), false);
  const key = await openpgp.readKey({ armoredKey: id.pgp!.public_key });
  assert.equal(key.keyPacket.version, 4);
  assert.ok(key.subkeys.every((s) => s.keyPacket.version === 4));
  assert.deepEqual(key.getUserIDs(), ['xmpp:bob\\40example.org@gw.example.org']);

  assert.deepEqual(await carol.importKey(id.pgp!.public_key), [id.pgp!.fingerprint]);
  assert.deepEqual(await carol.userIds(id.pgp!.fingerprint), ['xmpp:bob\\40example.org@gw.example.org']);
  const listing = (await carol.run(['--with-colons', '--list-keys', id.pgp!.fingerprint])).stdout.toString();
  assert.match(listing, /^pub:[^:]*:255:22:/m, 'EdDSA primary');
  assert.match(listing, /^sub:[^:]*:255:18:.*:cv25519:/m, 'ECDH cv25519 subkey');
  // a different hosted JID has a different key
  assert.notEqual((await rig.engine.identity(BOT)).pgp!.fingerprint, id.pgp!.fingerprint);
});

test('gpg encrypts and signs to a hosted JID: the engine decrypts the exact bytes and authenticates the sender', async () => {
  const { rig, localFpr } = await rigWithCarol();
  for (const [name, body] of Object.entries(BODIES)) {
    const stripped = await carol.encrypt(body, localFpr, { sign: true });
    const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped));
    assert.ok(r.ok, `${name}: ${r.ok ? '' : r.reason}`);
    assert.equal(r.body, body, name);
    assert.deepEqual(r.sender, { jid: CAROL, fingerprint: carol.fingerprint, trust: 'trusted' });
  }
  const n = Object.keys(BODIES).length;
  assert.equal(await counterValue(rig.metrics.messages, { protocol: 'pgp', direction: 'in', result: 'ok' }), n);
  const hist = await rig.metrics.cryptoSeconds.get();
  const count = (op: string) => hist.values.find((v) => v.labels.operation === op && v.metricName?.endsWith('_count'))?.value ?? 0;
  assert.equal(count('decrypt'), n);
  assert.equal(count('verify'), n);
});

test('gpg --textmode messages (CRLF-canonical literal data) come out with the sender\'s LF line ends', async () => {
  const { rig, localFpr } = await rigWithCarol();
  const body = 'first line\nsecond line\n\nlast, with Ünïcode';
  for (const sign of [true, false]) {
    const stripped = await carol.encrypt(body, localFpr, { sign, textmode: true });
    const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped));
    assert.ok(r.ok, r.ok ? '' : r.reason);
    assert.equal(r.body, body);
    assert.equal(r.sender.trust, sign ? 'trusted' : 'untrusted');
  }
});

test('unsigned messages are delivered as untrusted, or refused with requireSignedMessages', async () => {
  const { rig, localFpr } = await rigWithCarol();
  const stripped = await carol.encrypt(BODIES.unicode!, localFpr);
  const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped));
  assert.ok(r.ok);
  assert.equal(r.body, BODIES.unicode);
  assert.deepEqual(r.sender, { jid: CAROL, trust: 'untrusted' });

  const strict = rig.restart({ requireSignedMessages: true });
  const again = await carol.encrypt('unsigned again', localFpr);
  const s = await strict.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, again));
  assert.deepEqual(s, { ok: false, reason: 'bad-signature', replies: [] });
});

test('signed by another key than the registered one, or by a sender with no key: unknown-key', async () => {
  const { rig, localFpr } = await rigWithCarol();
  await dave.importKey(await rig.engine.publicKeyArmored(PROXY));
  // dave signs, the stanza claims to come from carol
  const forged = await dave.encrypt('I am carol', localFpr, { sign: true });
  const r1 = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, forged));
  assert.deepEqual(r1, { ok: false, reason: 'unknown-key', replies: [] });
  // dave writes as himself, with no registered key
  const own = await dave.encrypt('hello from dave', localFpr, { sign: true });
  const r2 = await rig.engine.decrypt(PROXY, encryptedStanza(`${DAVE}/gajim`, PROXY, own));
  assert.deepEqual(r2, { ok: false, reason: 'unknown-key', replies: [] });
  assert.equal(await counterValue(rig.metrics.decryptFailures, { protocol: 'pgp', reason: 'unknown-key' }), 2);
  // once dave registers, the same ciphertext (not burnt by the failure) is accepted
  await rig.engine.registerContactKey(DAVE, await dave.exportPublic(), { viaAdmin: false });
  const r3 = await rig.engine.decrypt(PROXY, encryptedStanza(`${DAVE}/gajim`, PROXY, own));
  assert.ok(r3.ok && r3.body === 'hello from dave' && r3.sender.fingerprint === dave.fingerprint);
});

test('a key an admin distrusted is refused as distrusted', async () => {
  const { rig, localFpr } = await rigWithCarol();
  rig.ports.trust.set(CAROL, 'pgp', carol.fingerprint, 'distrusted');
  const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, await carol.encrypt('hi', localFpr, { sign: true })));
  assert.deepEqual(r, { ok: false, reason: 'distrusted', replies: [] });
});

test('a message encrypted to a key that is not the hosted JID\'s: wrong-key', async () => {
  const { rig } = await rigWithCarol();
  await carol.importKey(await dave.exportPublic());
  const toDave = await carol.encrypt('for dave only', dave.fingerprint, { sign: true });
  assert.deepEqual(await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, toDave)), { ok: false, reason: 'wrong-key', replies: [] });
  // to another hosted JID's key
  const botFpr = (await rig.engine.identity(BOT)).pgp!.fingerprint;
  await carol.importKey(await rig.engine.publicKeyArmored(BOT));
  const toBot = await carol.encrypt('for the bot', botFpr, { sign: true });
  assert.deepEqual(await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, toBot)), { ok: false, reason: 'wrong-key', replies: [] });
  assert.ok((await rig.engine.decrypt(BOT, encryptedStanza(`${CAROL}/psi`, BOT, toBot))).ok);
});

test('tampered payloads: malformed armor or packets, bad-mac when the ciphertext was altered', async () => {
  const { rig, localFpr } = await rigWithCarol();
  const stripped = await carol.encrypt(CANARY, localFpr, { sign: true });
  const { bytes } = parseStripped(stripped);
  const flip = (at: number) => {
    const b = Buffer.from(bytes);
    b[at] = b[at]! ^ 0x01;
    return b.toString('base64');
  };
  const cases: Record<string, [string, string[]]> = {
    'last byte (MDC) flipped': [flip(bytes.length - 1), ['bad-mac']],
    'middle of the encrypted data flipped': [flip(bytes.length - 40), ['bad-mac']],
    'session key flipped': [flip(30), ['bad-mac']],
    truncated: [Buffer.from(bytes.subarray(0, bytes.length - 30)).toString('base64'), ['malformed', 'bad-mac']],
    'not base64': [stripped.replace(/[A-Za-z]/, '!'), ['malformed']],
    'empty': ['', ['malformed']],
    'random packets': [Buffer.from('8c0d04090302aabbccddeeff0011', 'hex').toString('base64'), ['malformed', 'wrong-key']],
  };
  for (const [name, [payload, reasons]] of Object.entries(cases)) {
    const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, payload));
    assert.equal(r.ok, false, name);
    assert.ok(!r.ok && reasons.includes(r.reason), `${name}: got ${!r.ok && r.reason}`);
  }
  // the untouched payload still decrypts (failures did not burn its digest)
  const ok = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped));
  assert.ok(ok.ok && ok.body === CANARY);
  assert.equal(rig.logs.some((l) => l.includes('canary-7f3e9a')), false, 'no plaintext in logs');
  assert.ok(rig.logs.some((l) => l.includes('"reason":"bad-mac"')), 'failures are logged with their reason');
});

test('a replayed ciphertext is dropped as duplicate, in any line wrapping, and still after a restart', async () => {
  const { rig, localFpr } = await rigWithCarol();
  const stripped = await carol.encrypt('pay 100 EUR to mallory', localFpr, { sign: true });
  const first = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped));
  assert.ok(first.ok);
  const again = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped));
  assert.deepEqual(again, { ok: false, reason: 'duplicate', replies: [] });
  const rewrapped = stripped.replace(/\n=[^\n]+$/, '').replace(/\n/g, '').replace(/(.{40})/g, '$1\r\n');
  const third = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/other`, PROXY, rewrapped));
  assert.deepEqual(third, { ok: false, reason: 'duplicate', replies: [] });
  assert.equal(await counterValue(rig.metrics.replaysDropped, { protocol: 'pgp' }), 2);

  // the same ciphertext with the session-key packets changed: carol's copy for dave dropped, or reordered
  await carol.importKey(await dave.exportPublic());
  const twoRecipients = await carol.run(['--armor', '--encrypt', '--sign', '--local-user', carol.fingerprint, '--recipient', localFpr, '--recipient', dave.fingerprint], 'transfer approved');
  const [pk1, pk2, rest] = splitTwoPackets(parseStripped(clientStripArmor(twoRecipients.stdout.toString())).bytes);
  const b64 = (...parts: Uint8Array[]) => Buffer.concat(parts).toString('base64');
  const variants = [b64(pk1, pk2, rest), b64(pk2, pk1, rest), b64(pk1, rest), b64(pk2, rest)];
  const outcomes = [];
  for (const v of variants) {
    const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, v));
    outcomes.push(r.ok ? 'ok' : r.reason);
  }
  assert.equal(outcomes[0], 'ok');
  assert.deepEqual(outcomes.slice(1), ['duplicate', 'duplicate', 'duplicate']);
  // a trailing packet openpgp skips (unknown non-critical tag, also cut short) changes nothing
  // either (found by the fuzz, seed 197358681: the digest was taken over the whole payload)
  const tails = [Buffer.from([0xeb, 0xcc]), Buffer.from([0xeb, 0x01, 0x00])];
  const tailed = [];
  for (const t of tails) {
    const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, b64(pk1, pk2, rest, t)));
    tailed.push(r.ok ? 'ok' : r.reason);
  }
  assert.deepEqual(tailed, ['duplicate', 'duplicate']);

  // concurrent copies: exactly one passes
  const fresh = await carol.encrypt('once', localFpr, { sign: true });
  const both = await Promise.all([1, 2].map(() => rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, fresh))));
  assert.deepEqual(both.map((r) => r.ok).sort(), [false, true]);

  const restarted = rig.restart();
  assert.deepEqual(await restarted.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped)), { ok: false, reason: 'duplicate', replies: [] });
  const rows = rig.ks.db.prepare("SELECT count(*) AS n FROM seen_ciphertexts WHERE protocol = 'pgp'").get() as { n: number };
  assert.equal(rows.n, 3);
});

test('digests expire with the window, and signatures older than the window count as replays', async () => {
  const { rig, localFpr } = await rigWithCarol({ replayWindowDays: 2 });
  const stripped = await carol.encrypt('old news', localFpr, { sign: true });
  assert.ok((await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped))).ok);
  rig.clock.offsetMs = 3 * 86_400_000;
  await rig.engine.maintain!();
  const rows = rig.ks.db.prepare("SELECT count(*) AS n FROM seen_ciphertexts WHERE protocol = 'pgp'").get() as { n: number };
  assert.equal(rows.n, 0, 'pruned');
  // the digest is gone, but the signature's age still gives the replay away
  const r = await rig.restart().decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, stripped));
  assert.deepEqual(r, { ok: false, reason: 'duplicate', replies: [] });
});

test('the engine encrypts to the registered key: gpg decrypts the exact bytes and verifies the hosted JID\'s signature', async () => {
  const { rig, localFpr } = await rigWithCarol();
  for (const [name, body] of Object.entries(BODIES)) {
    const out = await rig.engine.encrypt(PROXY, CAROL, body);
    const [b, x, eme] = out.children;
    assert.equal(b!.name, 'body');
    assert.match(b!.getText(), /encrypted with OpenPGP/);
    assert.equal(x!.attrs.xmlns, 'jabber:x:encrypted');
    assert.equal(eme!.attrs.xmlns, 'urn:xmpp:eme:0');
    assert.equal(eme!.attrs.namespace, 'jabber:x:encrypted');
    const payload = x!.getText();
    assert.doesNotMatch(payload, /-----|Version:|Comment:/);
    const got = await carol.decrypt(payload);
    assert.ok(got.bytes.equals(Buffer.from(body, 'utf8')), name);
    assert.equal(got.signature, 'good', name);
    assert.equal(got.signer, localFpr);
  }
  assert.equal(rig.logs.some((l) => l.includes('91% full')), false);
});

test('the engine\'s ciphertext is SEIPDv1 for GnuPG 2.2 and readable by the gateway\'s own key', async () => {
  const { rig } = await rigWithCarol();
  const out = await rig.engine.encrypt(PROXY, CAROL, 'own copy');
  const msg = await openpgp.readMessage({ binaryMessage: parseStripped(out.children[1]!.getText()).bytes });
  const tags = [...msg.packets].map((p) => (p.constructor as unknown as { tag: number }).tag);
  assert.deepEqual(tags, [1, 1, 18], 'two PKESK and one SEIPD');
  assert.equal((msg.packets[2] as unknown as { version: number }).version, 1, 'SEIPD v1, no AEAD');
  const stored = rig.ports.store.getJson<{ privateKey: string }>(PROXY, 'identity', 'current')!;
  const priv = await openpgp.readPrivateKey({ armoredKey: stored.privateKey });
  const { data } = await openpgp.decrypt({ message: msg, decryptionKeys: priv, format: 'binary' });
  assert.equal(Buffer.from(data as Uint8Array).toString('utf8'), 'own copy');
});

test('encrypt without a usable registered key fails with actionable codes; reachability follows', async () => {
  const rig = makeRig();
  await assert.rejects(rig.engine.encrypt(PROXY, CAROL, 'x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_encryption_available');
  assert.equal(await rig.engine.reachability(PROXY, CAROL), 'no');
  await rig.engine.registerContactKey(CAROL, await carol.exportPublic(), { viaAdmin: false });
  assert.equal(await rig.engine.reachability(PROXY, CAROL), 'ready');
  rig.ports.trust.set(CAROL, 'pgp', carol.fingerprint, 'untrusted');
  await assert.rejects(rig.engine.encrypt(PROXY, CAROL, 'x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_trusted_devices');
  assert.equal(await rig.engine.reachability(PROXY, CAROL), 'no');
  rig.ports.trust.set(CAROL, 'pgp', carol.fingerprint, 'verified');
  assert.equal(await rig.engine.reachability(PROXY, CAROL), 'ready');
  await rig.engine.removeContactKey(CAROL);
  assert.equal(await rig.engine.reachability(PROXY, CAROL), 'no');
  await assert.rejects(rig.engine.encrypt(PROXY, CAROL, 'x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_encryption_available');
  // Outbound counting belongs to the sender (bridges/outbound.ts), not the engine.
  assert.equal(await counterValue(rig.metrics.messages, { protocol: 'pgp', direction: 'out', result: 'failed' }), 0);
});

test('recognizes only messages with jabber:x:encrypted', async () => {
  const { engine } = makeRig();
  assert.equal(engine.recognizes(encryptedStanza(`${CAROL}/psi`, PROXY, 'AAAA')), true);
  const plain = encryptedStanza(`${CAROL}/psi`, PROXY, 'AAAA');
  plain.remove('x', 'jabber:x:encrypted');
  assert.equal(engine.recognizes(plain), false);
  const signedPresence = encryptedStanza(`${CAROL}/psi`, PROXY, 'AAAA');
  signedPresence.name = 'presence';
  assert.equal(engine.recognizes(signedPresence), false);
});
