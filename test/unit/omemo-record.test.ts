// Session records: our binary storage form round-trips the library's state exactly, the library's JSON
// is still read, and the trimming the library lacks (old chains, skipped keys, archived sessions) works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SessionRecord } from '@privacyresearch/libsignal-protocol-typescript/lib/session-record.js';
import type { SessionType } from '@privacyresearch/libsignal-protocol-typescript';
import { FakeNetwork, makePeer, send, reparse } from './helpers/omemo-net.js';
import { LiveRecord, MAX_ARCHIVED_SESSIONS, MAX_OLD_CHAINS, MAX_SKIPPED_KEYS, skippedKeyCount, trimSession } from '../../bridges/omemo/session-record.js';
import { decodeSessions, encodeSessions } from '../../bridges/omemo/session-codec.js';

const A = 'alerts@gw.example.org';
const B = 'bob@gw.example.org';
const k = (n = 32) => new Uint8Array(randomBytes(n)).buffer;
const b64 = (x: ArrayBuffer) => Buffer.from(x).toString('base64');

async function realRecord(): Promise<LiveRecord> {
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

test('binary form and library JSON both round-trip a real record', async () => {
  const rec = await realRecord();
  const json = rec.toLibraryJson();
  // The library itself reads what we give SessionBuilder...
  const viaLibrary = SessionRecord.deserialize(json);
  assert.equal(Object.keys(viaLibrary.sessions).length, Object.keys(rec.sessions).length);
  // ...and binary -> sessions -> library JSON is the identity.
  const bin = rec.toBinary();
  assert.ok(bin.length < json.length / 2, `binary ${bin.length} bytes vs JSON ${json.length}`);
  const back = LiveRecord.fromStored(bin);
  assert.equal(back.toLibraryJson(), json);
  assert.equal(LiveRecord.fromStored(Buffer.from(json)).toLibraryJson(), json);
  assert.equal(LiveRecord.fromLibraryJson(viaLibrary.serialize()).toLibraryJson(), json);
  const open = back.getOpenSession()!;
  assert.equal(skippedKeyCount(open), 4);
});

test('the codec keeps unusual values: -1 counters, missing optionals, closed timestamps', () => {
  const s: SessionType = {
    indexInfo: { closed: 1_700_000_000_123, remoteIdentityKey: k(33), baseKey: undefined, baseKeyType: undefined },
    registrationId: undefined,
    currentRatchet: { rootKey: k(), ephemeralKeyPair: undefined, lastRemoteEphemeralKey: k(33), previousCounter: -1, added: undefined },
    pendingPreKey: { baseKey: k(33), preKeyId: undefined, signedKeyId: 0 },
    oldRatchetList: [{ ephemeralKey: k(33), added: 5 }],
    chains: { [b64(k(33))]: { chainType: 2, chainKey: { key: undefined, counter: -1 }, messageKeys: { 0: k(), 70000: k() } } },
  };
  const key = Buffer.from(k(33)).toString('latin1');
  const out = decodeSessions(encodeSessions({ [key]: s }));
  assert.deepEqual(Object.keys(out), [key]);
  const r = out[key]!;
  assert.equal(r.indexInfo.closed, s.indexInfo.closed);
  assert.equal(r.currentRatchet.previousCounter, -1);
  assert.equal(r.registrationId, undefined);
  assert.equal(r.pendingPreKey?.preKeyId, undefined);
  assert.equal(r.pendingPreKey?.signedKeyId, 0);
  const [name] = Object.keys(r.chains);
  assert.equal(name, Object.keys(s.chains)[0]);
  assert.equal(r.chains[name!]!.chainKey.counter, -1);
  assert.deepEqual(Object.keys(r.chains[name!]!.messageKeys), ['0', '70000']);
  assert.throws(() => decodeSessions(Buffer.from('SR\x01\x05')));
});

function syntheticSession(oldChains: number, keysPerChain: number): SessionType {
  const s: SessionType = {
    indexInfo: { closed: -1, remoteIdentityKey: k(33), baseKey: k(33), baseKeyType: 1 },
    registrationId: 1,
    currentRatchet: { rootKey: k(), ephemeralKeyPair: { pubKey: k(33), privKey: k() }, lastRemoteEphemeralKey: k(33), previousCounter: 0 },
    oldRatchetList: [],
    chains: {},
  };
  for (let c = 0; c < oldChains; c++) {
    const eph = k(33);
    s.oldRatchetList.push({ ephemeralKey: eph, added: 1000 + c });
    const messageKeys: Record<number, ArrayBuffer> = {};
    for (let m = 0; m < keysPerChain; m++) messageKeys[m] = k();
    s.chains[b64(eph)] = { chainType: 2, chainKey: { counter: keysPerChain }, messageKeys };
  }
  s.chains[b64(s.currentRatchet.lastRemoteEphemeralKey)] = { chainType: 2, chainKey: { key: k(), counter: 3 }, messageKeys: { 1: k() } };
  s.chains[b64(s.currentRatchet.ephemeralKeyPair!.pubKey)] = { chainType: 1, chainKey: { key: k(), counter: 7 }, messageKeys: {} };
  return s;
}

test(`old receiving chains beyond ${MAX_OLD_CHAINS} are deleted (the library's own cleanup deletes the wrong key)`, () => {
  const s = syntheticSession(MAX_OLD_CHAINS + 5, 2);
  const oldest = s.oldRatchetList.slice(0, 5).map((o) => b64(o.ephemeralKey));
  const kept = s.oldRatchetList.slice(5).map((o) => b64(o.ephemeralKey));
  // The library's version leaves every chain in place.
  const plain = new SessionRecord();
  const copy = syntheticSession(MAX_OLD_CHAINS + 5, 2);
  const before = Object.keys(copy.chains).length;
  plain.removeOldChains(copy);
  assert.equal(Object.keys(copy.chains).length, before);
  trimSession(s);
  assert.equal(s.oldRatchetList.length, MAX_OLD_CHAINS);
  for (const c of oldest) assert.equal(s.chains[c], undefined);
  for (const c of kept) assert.ok(s.chains[c]);
  assert.ok(s.chains[b64(s.currentRatchet.lastRemoteEphemeralKey)], 'current receiving chain kept');
  assert.ok(s.chains[b64(s.currentRatchet.ephemeralKeyPair!.pubKey)], 'sending chain kept');
});

test(`skipped keys are capped at ${MAX_SKIPPED_KEYS}, oldest chain and lowest counters first`, () => {
  const s = syntheticSession(3, 400); // 1200 old + 1 current
  const chains = s.oldRatchetList.map((o) => s.chains[b64(o.ephemeralKey)]!);
  trimSession(s);
  assert.equal(skippedKeyCount(s), MAX_SKIPPED_KEYS);
  // 1201 keys: the 201 oldest (counters 0..200 of the oldest chain) go.
  assert.deepEqual(Object.keys(chains[0]!.messageKeys).map(Number), Array.from({ length: 199 }, (_, i) => i + 201));
  assert.equal(Object.keys(chains[1]!.messageKeys).length, 400);
  assert.equal(Object.keys(chains[2]!.messageKeys).length, 400);
  assert.ok(s.chains[b64(s.currentRatchet.lastRemoteEphemeralKey)]!.messageKeys[1]);
});

test(`archived sessions are capped at ${MAX_ARCHIVED_SESSIONS}, oldest closed first`, () => {
  const rec = new LiveRecord();
  for (let i = 0; i < MAX_ARCHIVED_SESSIONS + 4; i++) {
    const s = syntheticSession(0, 0);
    s.indexInfo.closed = 1000 + i;
    rec.sessions[`s${i}`] = s;
  }
  const open = syntheticSession(0, 0);
  rec.sessions.open = open;
  rec.removeOldSessions();
  const left = Object.keys(rec.sessions);
  assert.equal(left.length, MAX_ARCHIVED_SESSIONS + 1);
  assert.ok(left.includes('open'));
  for (let i = 0; i < 4; i++) assert.ok(!left.includes(`s${i}`));
});
