// XEP-0027 signed presence (<x xmlns='jabber:x:signed'> over the <status> text), both ways with GnuPG 2.2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GpgUser } from '../harness/gpg.js';
import { parseXml, xml } from '../../component/xml.js';
import { presenceSignature, signedPresenceElement } from '../../bridges/pgp/wire.js';
import { PROXY, counterValue, makeRig } from './pgp-setup.js';

const CAROL = 'carol@legacy.example';
const STATUSES = ['Online', '', 'In a meeting 📅 — back at 15:00', 'two\nlines '];
let carol: GpgUser;
let dave: GpgUser;

before(async () => {
  [carol, dave] = await Promise.all([GpgUser.create(`xmpp:${CAROL}`), GpgUser.create('xmpp:dave@legacy.example')]);
});
after(() => {
  carol?.destroy();
  dave?.destroy();
});

test('the engine signs a hosted JID\'s status; gpg verifies it, and only over the exact text', async () => {
  const rig = makeRig();
  const pub = await rig.engine.publicKeyArmored(PROXY);
  const fpr = (await rig.engine.identity(PROXY)).pgp!.fingerprint;
  for (const status of STATUSES) {
    const sig = await rig.engine.signPresence(PROXY, status);
    assert.doesNotMatch(sig, /-----|Version:/);
    assert.deepEqual(await carol.verifyDetached(status, sig, pub), { valid: true, signer: fpr }, JSON.stringify(status));
    assert.equal((await carol.verifyDetached(`${status}.`, sig, pub)).valid, false);
  }
  const hist = await rig.metrics.cryptoSeconds.get();
  assert.equal(hist.values.find((v) => v.labels.operation === 'sign' && v.metricName?.endsWith('_count'))?.value, STATUSES.length);
});

test('checkPresence verifies a gpg-signed status against the registered key and reports mismatches', async () => {
  const rig = makeRig();
  await rig.engine.registerContactKey(CAROL, await carol.exportPublic(), { viaAdmin: false });
  const carolKeyIds = (await rig.engine.inspectPublicKey(await carol.exportPublic())).keyId;
  for (const status of STATUSES) {
    const sig = await carol.signDetached(status);
    const r = await rig.engine.checkPresence(CAROL, status, sig);
    assert.equal(r.ok, true, JSON.stringify(status));
    assert.equal(r.matchesRegistered, true);
    assert.equal(r.fingerprint, carol.fingerprint);
    assert.ok(r.signedAt instanceof Date && Math.abs(r.signedAt.getTime() - Date.now()) < 120_000);
    // gpg signs with its primary key here: the issuer is the registered key's id
    assert.equal(r.keyId, carolKeyIds);
  }
  // text-mode signatures (some clients sign the status with --textmode)
  for (const status of STATUSES) {
    const r = await rig.engine.checkPresence(CAROL, status, await carol.signDetached(status, { textmode: true }));
    assert.equal(r.ok, true, `textmode ${JSON.stringify(status)}`);
  }
  // another status text than the one signed
  const sig = await carol.signDetached('Online');
  assert.deepEqual(await rig.engine.checkPresence(CAROL, 'Away', sig), {
    ok: false,
    keyId: carolKeyIds,
    matchesRegistered: true,
    fingerprint: carol.fingerprint,
    reason: 'bad-signature',
  });
  // signed by dave's key while claiming to be carol: a mismatch the user should hear about
  const daveSig = await dave.signDetached('Online');
  const daveKeyId = dave.fingerprint.slice(-16);
  assert.deepEqual(await rig.engine.checkPresence(CAROL, 'Online', daveSig), { ok: false, keyId: daveKeyId, matchesRegistered: false, reason: 'unknown-key' });
  // no registered key at all
  assert.deepEqual(await rig.engine.checkPresence('dave@legacy.example', 'Online', daveSig), { ok: false, keyId: daveKeyId, matchesRegistered: false, reason: 'unknown-key' });
  // garbage
  assert.deepEqual(await rig.engine.checkPresence(CAROL, 'Online', 'not a signature'), { ok: false, keyId: null, matchesRegistered: false, reason: 'malformed' });
  assert.ok((await counterValue(rig.metrics.decryptFailures, { protocol: 'pgp' })) === 0, 'presence checks are not message failures');
});

test('wire helpers: a signed presence round-trips through XML with its status text', async () => {
  const rig = makeRig();
  const status = 'Busy\n  with spaces  ';
  const presence = parseXml(
    xml('presence', { from: `${PROXY}/gw` }, xml('status', {}, status), signedPresenceElement(await rig.engine.signPresence(PROXY, status))).toString(),
  );
  const got = presenceSignature(presence)!;
  assert.equal(got.status, status);
  const pub = await rig.engine.publicKeyArmored(PROXY);
  assert.equal((await carol.verifyDetached(got.status, got.signed, pub)).valid, true);
  const noStatus = parseXml(xml('presence', {}, signedPresenceElement(await rig.engine.signPresence(PROXY, ''))).toString());
  assert.equal(presenceSignature(noStatus)!.status, '');
  assert.equal(presenceSignature(parseXml('<presence/>')), null);
});

/** A stripped signature with the signature packet's version byte replaced. */
function withSignatureVersion(stripped: string, version: number): string {
  const b = Buffer.from(stripped.split('\n=')[0]!.replace(/\s/g, ''), 'base64');
  const headerLength = b[0]! & 0x40 ? (b[1]! < 192 ? 2 : b[1]! < 224 ? 3 : 6) : 1 + [1, 2, 4][b[0]! & 3]!;
  b[headerLength] = version;
  return b.toString('base64');
}

test('issue 15 bug 1: a signed presence with a v2, v3, v5 or v6 signature packet is a value (malformed), never a throw', async () => {
  const rig = makeRig();
  await rig.engine.registerContactKey(CAROL, await carol.exportPublic(), { viaAdmin: false });
  const sig = await carol.signDetached('Online');
  for (const v of [2, 3, 5, 6, 0, 255]) {
    const r = await rig.engine.checkPresence(CAROL, 'Online', withSignatureVersion(sig, v));
    assert.equal(r.ok, false, `version ${v}`);
    assert.equal(r.reason, 'malformed', `version ${v}: ${JSON.stringify(r)}`);
  }
  // the unmodified signature still verifies
  assert.equal((await rig.engine.checkPresence(CAROL, 'Online', sig)).ok, true);
});

test('item 5: a signed presence older than the newest one accepted from the contact, or than the replay window, is refused as a replay', async () => {
  const rig = makeRig();
  // a key of our own stands in for the contact's, so signatures can be made at chosen times
  rig.clock.offsetMs = -40 * 86400_000;
  const armored = await rig.engine.publicKeyArmored(PROXY);
  await rig.engine.registerContactKey(CAROL, armored, { viaAdmin: true });
  const signAt = async (offsetMs: number, status: string) => {
    rig.clock.offsetMs = offsetMs;
    const sig = await rig.engine.signPresence(PROXY, status);
    rig.clock.offsetMs = 0;
    return sig;
  };
  const ancient = await signAt(-31 * 86400_000, 'Online');
  const older = await signAt(-2 * 3600_000, 'Away');
  const newer = await signAt(-60_000, 'Online');
  assert.equal((await rig.engine.checkPresence(CAROL, 'Away', older)).ok, true);
  assert.equal((await rig.engine.checkPresence(CAROL, 'Online', newer)).ok, true);
  // the same newest signature again (a server answering a probe) is fine
  assert.equal((await rig.engine.checkPresence(CAROL, 'Online', newer)).ok, true);
  // an older one replayed after it is a rollback
  const replayed = await rig.engine.checkPresence(CAROL, 'Away', older);
  assert.equal(replayed.ok, false);
  assert.equal(replayed.reason, 'duplicate');
  // beyond the replay window, even as the first one seen after a restart
  const fresh = rig.restart();
  const stale = await fresh.checkPresence(CAROL, 'Online', ancient);
  assert.equal(stale.reason, 'duplicate');
  assert.equal((await fresh.checkPresence(CAROL, 'Away', older)).ok, true, 'after a restart the first valid signature seen is the reference');
  assert.ok((await counterValue(rig.metrics.replaysDropped, { protocol: 'pgp' })) >= 2);
});
