// Contacts' XEP-0027 keys: inspection and registration, with keys made by the real GnuPG 2.2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GpgUser, clientStrip } from '../harness/gpg.js';
import { PgpKeyError, type PgpKeyProblem } from '../../bridges/pgp/engine.js';
import { uidJid, uidMatchesJid } from '../../bridges/pgp/keys.js';
import * as openpgp from 'openpgp';
import { LocalKeys } from '../../bridges/pgp/local-keys.js';
import { PROXY, encryptedStanza, makeRig } from './pgp-setup.js';

const CAROL = 'carol@legacy.example';
let carol: GpgUser;
let other: GpgUser; // a keyring for odd keys: other UIDs, sign-only, expired, revoked

before(async () => {
  [carol, other] = await Promise.all([GpgUser.create(`xmpp:${CAROL}`), GpgUser.create('Olga <olga@legacy.example>')]);
});
after(() => {
  carol?.destroy();
  other?.destroy();
});

const isProblem = (p: PgpKeyProblem) => (e: unknown) => e instanceof PgpKeyError && e.problem === p && e.code === 'invalid_field';

/** Generates another key in `other`'s keyring and returns its armored public key. */
async function extraKey(uid: string, algo = 'future-default', usage = 'default', expire = 'never', fakedTime?: string): Promise<{ fpr: string; armored: string }> {
  const faked = fakedTime ? ['--faked-system-time', fakedTime] : [];
  const gen = await other.run([...faked, '--quick-gen-key', uid, algo, usage, expire]);
  assert.equal(gen.code, 0, gen.stderr);
  const created = gen.status.find((l) => l.startsWith('KEY_CREATED '))!;
  const fpr = created.split(' ')[2]!.toUpperCase();
  const exp = await other.run(['--armor', '--export', fpr]);
  return { fpr, armored: exp.stdout.toString() };
}

test('inspectPublicKey reports what gpg reports', async () => {
  const { engine } = makeRig();
  const info = await engine.inspectPublicKey(await carol.exportPublic());
  assert.equal(info.fingerprint, carol.fingerprint);
  assert.match(info.fingerprint, /^[0-9A-F]{40}$/);
  assert.equal(info.keyId, carol.fingerprint.slice(-16));
  assert.deepEqual(info.userIds, [`xmpp:${CAROL}`]);
  assert.equal(info.canEncrypt, true);
  assert.equal(info.isPrivate, false);
  assert.equal(info.expires, null);
  // stripped armor and CRLF line ends are accepted too
  assert.equal((await engine.inspectPublicKey(clientStrip(await carol.exportPublic()))).fingerprint, carol.fingerprint);
  assert.equal((await engine.inspectPublicKey((await carol.exportPublic()).replace(/\n/g, '\r\n'))).fingerprint, carol.fingerprint);
});

test('inspectPublicKey refuses garbage, private keys, several keys, expired and revoked keys with typed errors', async () => {
  const { engine } = makeRig();
  await assert.rejects(engine.inspectPublicKey('hello, here is my key'), isProblem('not-a-key'));
  await assert.rejects(engine.inspectPublicKey(''), isProblem('not-a-key'));
  await assert.rejects(engine.inspectPublicKey('-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n'), isProblem('not-a-key'));
  await assert.rejects(engine.inspectPublicKey('-----BEGIN PGP MESSAGE-----\n\nhF4D\n-----END PGP MESSAGE-----\n'), isProblem('not-a-key'));

  const secret = (await carol.run(['--armor', '--export-secret-keys', carol.fingerprint])).stdout.toString();
  assert.match(secret, /PRIVATE KEY BLOCK/);
  await assert.rejects(engine.inspectPublicKey(secret), (e: unknown) => isProblem('private-key')(e) && !String((e as Error).message).includes(secret.slice(40, 80)));
  // stripped, the private key is recognised after parsing
  await assert.rejects(engine.inspectPublicKey(clientStrip(secret)), isProblem('private-key'));
  const asFacts = await engine.inspectPublicKey(clientStrip(secret), { allowPrivate: true });
  assert.equal(asFacts.isPrivate, true);
  assert.equal(asFacts.fingerprint, carol.fingerprint);

  await other.importKey(await carol.exportPublic());
  const two = (await other.run(['--armor', '--export', carol.fingerprint, other.fingerprint])).stdout.toString();
  await assert.rejects(engine.inspectPublicKey(two), isProblem('multiple-keys'));

  const expired = await extraKey('xmpp:old@legacy.example', 'future-default', 'default', '1d', '20200101T000000');
  await assert.rejects(engine.inspectPublicKey(expired.armored), isProblem('expired'));

  const doomed = await extraKey('xmpp:doomed@legacy.example');
  const rev = readFileSync(join(other.home, 'openpgp-revocs.d', `${doomed.fpr}.rev`), 'utf8').replace(/^:-----BEGIN/m, '-----BEGIN');
  await other.importKey(rev);
  const revoked = (await other.run(['--armor', '--export', doomed.fpr])).stdout.toString();
  await assert.rejects(engine.inspectPublicKey(revoked), isProblem('revoked'));
  await assert.doesNotReject(engine.inspectPublicKey(doomed.armored), 'the same key before revocation is fine');
});

test('uidJid and uidMatchesJid: xmpp: forms, case-insensitive as folded JIDs', () => {
  assert.equal(uidJid('xmpp:bob@example.org'), 'bob@example.org');
  assert.equal(uidJid('Bob Smith <xmpp:bob@example.org>'), 'bob@example.org');
  assert.equal(uidJid('Bob <bob@example.org>'), null);
  assert.equal(uidJid('xmpp:bob@example.org extra'), null);
  assert.ok(uidMatchesJid('xmpp:bob@Example.ORG', 'bob@example.org'));
  assert.ok(uidMatchesJid('Bob <xmpp:bob@example.org>', 'bob@EXAMPLE.org'));
  assert.ok(uidMatchesJid('xmpp:bob\\40example.org@gw.example.org', 'bob\\40example.org@gw.example.org'));
  assert.equal(uidMatchesJid('xmpp:Bob@example.org', 'bob@example.org'), true);
  assert.equal(uidMatchesJid('xmpp:bobby@example.org', 'bob@example.org'), false);
  assert.equal(uidMatchesJid('xmpp:bob@example.org.evil', 'bob@example.org'), false);
  assert.equal(uidMatchesJid('xmpp:alice@example.org', 'bob@example.org'), false);
  assert.equal(uidMatchesJid('bob@example.org', 'bob@example.org'), false);
});

test('registration by chat command needs a user ID naming the sender; allowUnverifiedKeys and admins skip it', async () => {
  const rig = makeRig();
  const fpr = await rig.engine.registerContactKey(CAROL, await carol.exportPublic(), { viaAdmin: false });
  assert.equal(fpr, carol.fingerprint);
  const rec = rig.ports.contacts.get(CAROL)!;
  assert.equal(rec.pgpFingerprint, carol.fingerprint);
  assert.match(rec.pgpKey!, /BEGIN PGP PUBLIC KEY BLOCK/);
  assert.deepEqual(rig.ports.trust.list(CAROL, 'pgp').map((d) => [d.fingerprint, d.deviceId, d.trust, d.active]), [[carol.fingerprint, carol.fingerprint.slice(-16), 'trusted', true]]);

  const named = await extraKey('Erin Example <xmpp:erin@LEGACY.example>');
  assert.equal(await rig.engine.registerContactKey('erin@legacy.example', named.armored, { viaAdmin: false }), named.fpr);

  // olga's key names only an e-mail address; carol's key names carol
  const olga = await other.exportPublic();
  await assert.rejects(rig.engine.registerContactKey('olga@legacy.example', olga, { viaAdmin: false }), isProblem('uid-mismatch'));
  await assert.rejects(rig.engine.registerContactKey('mallory@legacy.example', await carol.exportPublic(), { viaAdmin: false }), isProblem('uid-mismatch'));
  // JIDs compare case-folded: Carol@ and carol@ are one account.
  assert.equal(await rig.engine.registerContactKey('Carol@legacy.example', await carol.exportPublic(), { viaAdmin: false }), carol.fingerprint);
  assert.equal(rig.ports.contacts.get('olga@legacy.example')?.pgpKey ?? null, null, 'nothing stored on refusal');

  // a revoked user ID is no longer a claim
  const ivan = await extraKey('xmpp:ivan@legacy.example');
  assert.equal((await other.run(['--quick-add-uid', ivan.fpr, 'Ivan <ivan@legacy.example>'])).code, 0);
  assert.equal((await other.run(['--quick-revoke-uid', ivan.fpr, 'xmpp:ivan@legacy.example'])).code, 0);
  const ivanNow = (await other.run(['--armor', '--export', ivan.fpr])).stdout.toString();
  await assert.rejects(rig.engine.registerContactKey('ivan@legacy.example', ivanNow, { viaAdmin: false }), isProblem('uid-mismatch'));

  const lax = rig.restart({ allowUnverifiedKeys: true });
  assert.equal(await lax.registerContactKey('olga@legacy.example', olga, { viaAdmin: false }), other.fingerprint);

  assert.equal(await rig.engine.registerContactKey('olga2@legacy.example', olga, { viaAdmin: true }), other.fingerprint);
  assert.equal(rig.ports.trust.get('olga2@legacy.example', 'pgp', other.fingerprint)!.trust, 'verified', 'an admin vouches for the key');
});

test('registration refuses keys that cannot encrypt and private keys; a new key replaces the old one', async () => {
  const rig = makeRig();
  const signOnly = await extraKey('xmpp:sigi@legacy.example', 'ed25519', 'sign');
  const info = await rig.engine.inspectPublicKey(signOnly.armored);
  assert.equal(info.canEncrypt, false);
  await assert.rejects(rig.engine.registerContactKey('sigi@legacy.example', signOnly.armored, { viaAdmin: true }), isProblem('cannot-encrypt'));
  const secret = (await carol.run(['--armor', '--export-secret-keys', carol.fingerprint])).stdout.toString();
  await assert.rejects(rig.engine.registerContactKey(CAROL, secret, { viaAdmin: true }), isProblem('private-key'));
  assert.equal(rig.logs.some((l) => l.includes(secret.split('\n')[3]!)), false, 'no key material in logs');

  await rig.engine.registerContactKey(CAROL, await carol.exportPublic(), { viaAdmin: false });
  const second = await extraKey(`xmpp:${CAROL}`);
  await rig.engine.registerContactKey(CAROL, second.armored, { viaAdmin: false });
  assert.equal(rig.ports.contacts.get(CAROL)!.pgpFingerprint, second.fpr);
  const devices = Object.fromEntries(rig.ports.trust.list(CAROL, 'pgp').map((d) => [d.fingerprint, d.active]));
  assert.deepEqual(devices, { [carol.fingerprint]: false, [second.fpr]: true });
  await rig.engine.removeContactKey(CAROL);
  assert.equal(rig.ports.contacts.get(CAROL)!.pgpKey, null);
  assert.equal(rig.ports.trust.list(CAROL, 'pgp').some((d) => d.active), false);
});

test('concurrent first uses of a hosted JID generate one key', async () => {
  const rig = makeRig();
  const keys = new LocalKeys(rig.ports.store, 'curve25519', () => Date.now());
  const all = await Promise.all(Array.from({ length: 8 }, () => keys.get('new@gw.example.org')));
  assert.equal(keys.generated, 1);
  assert.equal(new Set(all.map((k) => k.fingerprint)).size, 1);
  // another instance on the same store loads it instead of generating
  const again = new LocalKeys(rig.ports.store, 'curve25519', () => Date.now());
  assert.equal((await again.get('new@gw.example.org')).fingerprint, all[0]!.fingerprint);
  assert.equal(again.generated, 0);
  assert.equal(await again.peek('never-used@gw.example.org'), undefined);
  assert.equal(again.generated, 0);
  // the private key is sealed at rest: its armor is not in the database file's rows
  const raw = rig.ks.db.prepare("SELECT value FROM kv WHERE protocol = 'pgp'").all() as Array<{ value: Buffer }>;
  assert.ok(raw.length > 0 && raw.every((r) => !r.value.toString('latin1').includes('PRIVATE KEY')));
});

test('distinct hosted JIDs get keys in parallel (generation is limited, not stuck)', async () => {
  const rig = makeRig();
  const keys = new LocalKeys(rig.ports.store, 'curve25519', () => Date.now());
  const all = await Promise.all(Array.from({ length: 6 }, (_, i) => keys.get(`u${i}@gw.example.org`)));
  assert.equal(keys.generated, 6);
  assert.equal(new Set(all.map((k) => k.fingerprint)).size, 6);
});

test('a message to a hosted JID that has no key yet is wrong-key and does not create one', async () => {
  const rig = makeRig();
  const someone = await rig.engine.publicKeyArmored('someone-else@gw.example.org');
  const msg = await openpgp.encrypt({
    message: await openpgp.createMessage({ text: 'x' }),
    encryptionKeys: await openpgp.readKey({ armoredKey: someone }),
  });
  const payload = (msg as string).split('\n').filter((l: string) => l && !l.startsWith('-----')).join('\n');
  const r = await rig.engine.decrypt(PROXY, encryptedStanza('carol@legacy.example/psi', PROXY, payload));
  assert.deepEqual(r, { ok: false, reason: 'wrong-key', replies: [] });
  assert.equal(rig.ports.store.get(PROXY, 'identity', 'current'), undefined);
});

test('a registered key is stored without third-party certifications', async () => {
  const rig = makeRig();
  await carol.importKey(await other.exportPublic());
  const sign = await carol.run(['--quick-sign-key', other.fingerprint]);
  assert.equal(sign.code, 0, sign.stderr);
  const certified = (await carol.run(['--armor', '--export', other.fingerprint])).stdout.toString();
  const before = await openpgp.readKey({ armoredKey: certified });
  assert.equal(before.users[0]!.otherCertifications.length, 1, 'carol certified olga\'s key');
  await rig.engine.registerContactKey('olga@legacy.example', certified, { viaAdmin: true });
  const stored = await openpgp.readKey({ armoredKey: rig.ports.contacts.get('olga@legacy.example')!.pgpKey! });
  assert.equal(stored.getFingerprint().toUpperCase(), other.fingerprint);
  assert.equal(stored.users[0]!.otherCertifications.length, 0);
  assert.equal(stored.users[0]!.selfCertifications.length, 1);
});
