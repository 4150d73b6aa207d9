// Legacy OMEMO session records (legacy-record.ts): our stored form round-trips a real record, a
// damaged one is refused, the archive is bounded; and records written while the engine ran on
// libsignal-protocol-typescript (the library's JSON, and our binary form of its sessions) are
// converted so that the session goes on, both ways and across ratchet turns, with the library (the
// reference) on the other side and no new key exchange.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { KeyHelper, SessionBuilder, SessionCipher, SignalProtocolAddress } from '@privacyresearch/libsignal-protocol-typescript';
import { SessionRecord } from '@privacyresearch/libsignal-protocol-typescript/lib/session-record.js';
import { FakeNetwork, makePeer, send, reparse } from './helpers/omemo-net.js';
import { MemStore } from '../harness/libsignal-memstore.js';
import { decryptMessage, encryptMessage, MAX_ARCHIVED_SESSIONS, openSession, promote, type LegacyRecord, type LegacySession, type OwnIdentity } from '../../bridges/omemo/legacy-protocol.js';
import { decodeRecord, encodeRecord, isLegacyRecord } from '../../bridges/omemo/legacy-record.js';
import { encodeSessions, type LibrarySession } from '../../bridges/omemo/session-codec.js';

const A = 'alerts@gw.example.org';
const B = 'bob@gw.example.org';
const ab = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

async function realRecord(): Promise<LegacyRecord> {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  for (let i = 0; i < 3; i++) {
    const d = await b.engine.decrypt(B, await send(a, B, `m${i}`));
    for (const r of d.replies) await a.engine.decrypt(A, reparse(r));
    await a.engine.decrypt(A, await send(b, A, `r${i}`));
  }
  // Some skipped keys on Bob's side.
  for (let i = 0; i < 4; i++) await send(a, B, 'skipped');
  await b.engine.decrypt(B, await send(a, B, 'last'));
  return b.engine.internals.sessions.withRecord(B, A, a.deviceId, (r) => r!);
}

test('the stored form round-trips a real record; damaged ones are refused', async () => {
  const rec = await realRecord();
  const bin = encodeRecord(rec);
  assert.ok(isLegacyRecord(bin));
  const back = decodeRecord(bin);
  assert.ok(encodeRecord(back).equals(bin));
  assert.equal(openSession(back)!.ratchet.skipped.size, 4);
  assert.deepEqual([...openSession(back)!.ratchet.skipped.keys()], [...openSession(rec)!.ratchet.skipped.keys()]);
  assert.throws(() => decodeRecord(bin.subarray(0, bin.length - 3)), /truncated/);
  assert.throws(() => decodeRecord(Buffer.concat([bin, Buffer.of(0)])), /trailing/);
});

test(`archived sessions are capped at ${MAX_ARCHIVED_SESSIONS}, oldest closed first`, async () => {
  const rec = await realRecord();
  const template = openSession(rec)!;
  const r: LegacyRecord = { sessions: [] };
  const made: LegacySession[] = [];
  for (let i = 0; i < MAX_ARCHIVED_SESSIONS + 5; i++) {
    const s = { ...template, baseKey: Buffer.concat([Buffer.of(5), randomBytes(32)]) };
    made.push(s);
    r.sessions.push(s);
    promote(r, s, 1000 + i);
  }
  assert.equal(r.sessions.length, MAX_ARCHIVED_SESSIONS + 1);
  assert.equal(openSession(r), made.at(-1));
  // The newest archived stay: those archived last (made[13] .. made[4]).
  assert.deepEqual(
    r.sessions.slice(1).map((s) => made.indexOf(s)),
    Array.from({ length: MAX_ARCHIVED_SESSIONS }, (_, i) => made.length - 2 - i),
  );
});

/** Two bare library peers with a session and some traffic (turns, skipped keys, one lost message). */
async function libraryPair() {
  const mk = async (rid: number) => {
    const ik = await KeyHelper.generateIdentityKeyPair();
    const store = new MemStore(ik, rid);
    const spk = await KeyHelper.generateSignedPreKey(ik, 1);
    await store.storeSignedPreKey(1, spk.keyPair);
    const pk = await KeyHelper.generatePreKey(9);
    await store.storePreKey(9, pk.keyPair);
    return { ik, store, spk, pk };
  };
  const alice = await mk(11);
  const bob = await mk(22);
  const toBob = new SignalProtocolAddress('bob', 1);
  const toAlice = new SignalProtocolAddress('alice', 1);
  await new SessionBuilder(alice.store, toBob).processPreKey({
    identityKey: bob.ik.pubKey,
    registrationId: 22,
    signedPreKey: { keyId: 1, publicKey: bob.spk.keyPair.pubKey, signature: bob.spk.signature },
    preKey: { keyId: 9, publicKey: bob.pk.keyPair.pubKey },
  });
  const aCipher = new SessionCipher(alice.store, toBob);
  const bCipher = new SessionCipher(bob.store, toAlice);
  const aSend = async (t: string) => {
    const m = await aCipher.encrypt(ab(Buffer.from(t)));
    return { prekey: m.type === 3, data: Buffer.from(m.body!, 'latin1') };
  };
  const first = await aSend('hello');
  await bCipher.decryptPreKeyWhisperMessage(ab(first.data), 'binary');
  for (let round = 0; round < 3; round++) {
    const m = await bCipher.encrypt(ab(Buffer.from(`b${round}`)));
    await aCipher.decryptWhisperMessage(ab(Buffer.from(m.body!, 'latin1')), 'binary');
    await aSend('lost');
    const got = await aSend(`a${round}`);
    await bCipher.decryptWhisperMessage(ab(got.data), 'binary');
  }
  // In flight when Bob's side is converted: the lost one's key is a skipped key in Bob's record.
  const inFlight = await aSend('in flight');
  const bobRecordJson = bob.store.m.get(`s${toAlice.toString()}`) as string;
  const bobOwn: OwnIdentity = { priv: Buffer.from(bob.ik.privKey), pub: Buffer.from(bob.ik.pubKey), registrationId: 22 };
  return { aCipher, aSend, inFlight, bobRecordJson, bobOwn };
}

async function continuesWithLibrary(converted: LegacyRecord, p: Awaited<ReturnType<typeof libraryPair>>): Promise<void> {
  let rec = converted;
  const read = (data: Buffer): string => {
    const out = decryptMessage(rec, p.bobOwn, data, Date.now());
    rec = out.record;
    return out.plaintext.toString();
  };
  assert.equal(read(p.inFlight.data), 'in flight');
  for (let i = 0; i < 4; i++) {
    const m = encryptMessage(rec, p.bobOwn, Buffer.from(`ours ${i}`));
    assert.equal(m.prekey, false, 'no new key exchange');
    assert.equal(Buffer.from(await p.aCipher.decryptWhisperMessage(ab(m.data), 'binary')).toString(), `ours ${i}`);
    const back = await p.aSend(`lib ${i}`);
    assert.equal(back.prekey, false);
    assert.equal(read(back.data), `lib ${i}`);
  }
}

test("a session in the library's JSON record is converted and goes on with the library both ways", async () => {
  const p = await libraryPair();
  await continuesWithLibrary(decodeRecord(Buffer.from(p.bobRecordJson)), p);
});

test('a session in the binary form of the libsignal-era engine is converted and goes on with the library', async () => {
  const p = await libraryPair();
  const sessions = SessionRecord.deserialize(p.bobRecordJson).sessions as unknown as Record<string, LibrarySession>;
  const bin = encodeSessions(sessions);
  assert.ok(!isLegacyRecord(bin));
  await continuesWithLibrary(decodeRecord(bin), p);
});
