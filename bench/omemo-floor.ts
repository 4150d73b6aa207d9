// The floor of each OMEMO bench row: the native calls the engine makes for one message, and nothing
// else, timed alone in the same run (node:crypto and the keystore's sealed SQLite writes; no records,
// promises, XML or session logic). Each floor includes the body cipher of its message, so a row's
// floor is one of these medians as it is (per device where the row is per device).
//   encrypt, 1 device: the AES-128-GCM body (key and IV from a pooled CSPRNG batch, as payload.ts),
//     KDF_CK (2 HMAC), message keys (HKDF, 80 bytes), AES-256-CBC of the 32-byte key material, the
//     truncated MAC (HMAC), and the session row sealed and written (one row commits on its own).
//   encrypt, 3 devices (per device): the body once, the ratchet part three times, the three rows
//     sealed and written in one transaction; divided by 3.
//   decrypt: the replay digest (SHA-256 over what the MAC covers), KDF_CK, HKDF, the MAC, AES-256-CBC
//     decryption, the AES-128-GCM body opened, and one transaction with the sealed session row and
//     the digest's row (keystore/replay-store.ts).
//   ratchet turn (decrypt): the above, plus the contact's new ratchet key imported (first agreement
//     with it), one X25519 key generation, two agreements and two KDF_RK (HKDF).
//   session build, initiator: the XEdDSA signature check (Montgomery->Edwards + Ed25519 verify of
//     the contact's cached identity key), two key generations (base key, first ratchet key), four
//     X3DH agreements and one for the first chain, HKDF x2, then one encrypt's floor.
//   session build, responder: the base key and the contact's ratchet key imported, the consumed
//     one-time prekey's private key imported, four X3DH agreements, the turn (key generation, two
//     agreements), HKDF x3, one decrypt's crypto, the completion key transport's encryption (its
//     random key and IV, KDF_CK, HKDF, AES-256-CBC, MAC), the prekey's replacement (key generation)
//     and one transaction with the session row, the digest row, the used prekey's row, the new
//     prekey's row and the identity row (its next prekey id).
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Keystore } from '../keystore/keystore.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { ReplayStore } from '../keystore/replay-store.js';
import { encodeRecord } from '../bridges/omemo/legacy-record.js';
import { generateX25519, x25519, xeddsaSign, xeddsaVerify, type X25519KeyPair } from '../bridges/ratchet/primitives.js';

export interface Floors {
  encrypt: number[];
  /** Per device, for one message to three devices. */
  encrypt3: number[];
  decrypt: number[];
  /**
   * One device's decrypt of a message to three devices: as `decrypt`, each call on the next of three
   * keystores in turn (in the bench, each device is an engine with a keystore of its own, and the
   * three decrypt one message one after the other).
   */
  decrypt3: number[];
  /** One AES-128-GCM body seal alone (for the notes: it is inside every floor above). */
  body: number[];
  turn: number[];
  buildInitiator: number[];
  buildResponder: number[];
}

const ZERO = Buffer.alloc(32);
const PAD = Buffer.alloc(32, 0xff);
const INFO_MK = Buffer.from('WhisperMessageKeys');
const INFO_RK = Buffer.from('WhisperRatchet');
const INFO_X3DH = Buffer.from('WhisperText');
const ONE = Buffer.of(1);
const TWO = Buffer.of(2);

// payload.ts draws keys and IVs from 4 KB CSPRNG batches; so does the floor.
let pool = Buffer.alloc(0);
let used = 0;
function pooled(n: number): Buffer {
  if (used + n > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafeSlow(4096));
    used = 0;
  }
  const out = Buffer.from(pool.subarray(used, used + n));
  pool.fill(0, used, used + n);
  used += n;
  return out;
}

function chainStep(ck: Buffer): Buffer {
  createHmac('sha256', ck).update(TWO).digest();
  return createHmac('sha256', ck).update(ONE).digest();
}

function ratchetEncrypt(mk: Buffer, km: Buffer, ad: Buffer): void {
  const keys = Buffer.from(hkdfSync('sha256', mk, ZERO, INFO_MK, 80));
  const c = createCipheriv('aes-256-cbc', keys.subarray(0, 32), keys.subarray(64, 80));
  const ct = Buffer.concat([c.update(km), c.final()]);
  createHmac('sha256', keys.subarray(32, 64)).update(ad).update(ct).digest();
}

function ratchetDecrypt(mk: Buffer, kmCipher: Buffer, ad: Buffer): void {
  const keys = Buffer.from(hkdfSync('sha256', mk, ZERO, INFO_MK, 80));
  createHmac('sha256', keys.subarray(32, 64)).update(ad).update(kmCipher).digest();
  // Random input has no valid padding: the padding check is left out (a few byte comparisons).
  const d = createDecipheriv('aes-256-cbc', keys.subarray(0, 32), keys.subarray(64, 80)).setAutoPadding(false);
  Buffer.concat([d.update(kmCipher), d.final()]);
}

function sealBody(plaintext: Buffer): { key: Buffer; iv: Buffer; ct: Buffer; tag: Buffer } {
  const key = pooled(16);
  const iv = pooled(12);
  const c = createCipheriv('aes-128-gcm', key, iv);
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return { key, iv, ct, tag: c.getAuthTag() };
}

function openBody(b: { key: Buffer; iv: Buffer; ct: Buffer; tag: Buffer }): void {
  const d = createDecipheriv('aes-128-gcm', b.key, b.iv);
  d.setAuthTag(b.tag);
  Buffer.concat([d.update(b.ct), d.final()]);
}

const replayDigest = (local: string, covered: Buffer): Buffer => createHash('sha256').update('omemo\0').update(local).update('\0').update(covered).digest();

/** A session record of the size the engine writes for a steady session (legacy-record.ts). */
function steadyRecord(): Buffer {
  const k = (): Buffer => randomBytes(32);
  const k33 = (): Buffer => Buffer.concat([Buffer.of(5), k()]);
  return encodeRecord({
    sessions: [
      {
        baseKey: k33(),
        ours: false,
        remoteIdentityKey: k33(),
        registrationId: 12345,
        ratchet: { rk: k(), dhs: { priv: k(), pub: k() }, dhr: k(), cks: k(), ckr: k(), ns: 3000, nr: 3000, pn: 1, skipped: new Map() },
        pending: undefined,
        closed: -1,
      },
    ],
  });
}

/** One operation's native calls, timed by the caller; `i` numbers the calls of one kind (0, 1, ...). */
export type FloorOps = Record<keyof Floors, (i: number) => void>;

/**
 * The floors' operations on their own keystore (a temporary file), for a caller that times them
 * itself: the engine bench interleaves them with the engine's own calls in blocks, so that a row
 * and its floor are measured under the same machine load. `n` bounds the calls of each kind.
 */
export function openFloors(n: { steady: number; turn: number; build: number }): { ops: FloorOps; close(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'omemo-floor-'));
  const open = (name: string): Keystore => {
    const k = Keystore.open(join(dir, name), 'bench-passphrase', { kdf: { N: 1024, r: 8, p: 1 } });
    // As the engine's keystores in the bench (omemo-engine.ts): checkpoints on the worker from the start.
    k.startCheckpointWorker();
    return k;
  };
  const devices: Array<{ ks: Keystore; store: ReturnType<typeof createProtocolStore>; replay: ReplayStore }> = [];
  const close = (): void => {
    for (const d of devices) d.ks.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let d = 0; d < 3; d++) {
      const k = open(`ks${d}.sqlite`);
      devices.push({ ks: k, store: createProtocolStore(k, 'omemo'), replay: new ReplayStore(k) });
    }
    const { ks, store } = devices[0]!;
    const LOCAL = 'bob\\40example.org@gw.example.org';
    const ADDR = 'alerts@gw.example.org.123456789';
    const row = steadyRecord();
    const ad = randomBytes(66);
    // As the bench's messages: 'steady message <n>'.
    const text = Buffer.from('steady message 1234');
    const km = randomBytes(32);
    // What a device decrypts: the 32-byte key material padded to 48 bytes of AES-256-CBC.
    const kmCipher = randomBytes(48);
    // A WhisperMessage as the MAC covers it (version, protobuf with a 33-byte key and 48 bytes, MAC).
    const wire = randomBytes(96);
    const sealedBody = sealBody(text);
    let ck: Buffer = randomBytes(32);
    const next = (): Buffer => {
      const mk = chainStep(ck);
      ck = mk;
      return mk;
    };
    // Digest rows are numbered over every kind that writes one (seen_at), so none repeats.
    let digests = 0;
    const encryptOne = (): void => {
      sealBody(text);
      ratchetEncrypt(next(), km, ad);
      store.put(LOCAL, 'session', ADDR, row);
    };
    const decryptOne = (extra?: () => void, on = devices[0]!): void => {
      const i = digests++;
      const digest = replayDigest(LOCAL, wire);
      ratchetDecrypt(next(), kmCipher, ad);
      openBody(sealedBody);
      on.ks.transaction(() => {
        on.store.put(LOCAL, 'session', ADDR, row);
        on.replay.add('omemo', digest, i);
        extra?.();
      });
      // A fresh digest for the next message (not timed as part of any call the engine makes).
      wire[i % wire.length] ^= 1 + (i & 0x7f);
    };
    // Keys made outside the timed part where the real operation has them already; a fresh
    // contact key (base key, ratchet key) is made ahead but imported in the timed part, as the
    // engine meets it for the first time in the message.
    const ours = Array.from({ length: 4 }, () => generateX25519());
    const theirIdentity = generateX25519();
    const fresh = (count: number): X25519KeyPair[] => Array.from({ length: count + 50 }, () => generateX25519());
    const dh = (a: X25519KeyPair, b: X25519KeyPair): Buffer => x25519(a.priv, b.pub);
    const spkPub33 = Buffer.concat([Buffer.of(5), ours[1]!.pub]);
    const sig = xeddsaSign(theirIdentity.priv, spkPub33);
    // Warm the key caches for the keys the engine holds imported (its identity, signed prekey).
    dh(ours[0]!, theirIdentity);
    dh(ours[1]!, theirIdentity);
    const turnKeys = fresh(n.turn);
    const baseKeys = fresh(n.build);
    const ratchetKeys = fresh(n.build);
    // The consumed one-time prekeys: private keys read from their rows, not yet imported.
    const preKeys = Array.from({ length: n.build + 50 }, () => ({ priv: Buffer.from(randomBytes(32)), pub: Buffer.alloc(0) }));
    const preKeyRow = Buffer.from(JSON.stringify({ pub: randomBytes(33).toString('base64'), priv: randomBytes(32).toString('base64') }));
    const usedRow = Buffer.from(JSON.stringify({ pub: randomBytes(33).toString('base64'), priv: randomBytes(32).toString('base64'), usedAt: Date.now() }));
    const identityRow = Buffer.from(JSON.stringify({ v: 1, deviceId: 123456789, registrationId: 1234, pub: randomBytes(33).toString('base64'), priv: randomBytes(32).toString('base64'), createdAt: Date.now(), nextPreKeyId: 1234, signedPreKeyId: 1, nextSignedPreKeyId: 2 }));
    const ops: FloorOps = {
      encrypt: () => encryptOne(),
      encrypt3: () => {
        sealBody(text);
        for (let d = 0; d < 3; d++) ratchetEncrypt(next(), km, ad);
        ks.transaction(() => {
          for (let d = 0; d < 3; d++) store.put(LOCAL, 'session', `${ADDR}${d}`, row);
        });
      },
      decrypt: () => decryptOne(),
      decrypt3: (i) => decryptOne(undefined, devices[i % 3]),
      body: () => sealBody(text),
      turn: (i) => {
        const theirs = turnKeys[i % turnKeys.length]!;
        const rk1 = Buffer.from(hkdfSync('sha256', dh(ours[2]!, theirs), ZERO, INFO_RK, 64));
        const k = generateX25519();
        Buffer.from(hkdfSync('sha256', dh(k, theirs), rk1.subarray(0, 32), INFO_RK, 64));
        decryptOne();
      },
      buildInitiator: () => {
        if (!xeddsaVerify(theirIdentity.pub, spkPub33, sig, false)) throw new Error('floor: signature');
        const ek = generateX25519();
        const rkey = generateX25519();
        const parts = [PAD, dh(ours[0]!, ours[1]!), dh(ek, theirIdentity), dh(ek, ours[1]!), dh(ek, ours[3]!)];
        const root = Buffer.from(hkdfSync('sha256', Buffer.concat(parts), ZERO, INFO_X3DH, 32));
        Buffer.from(hkdfSync('sha256', dh(rkey, ours[1]!), root, INFO_RK, 64));
        encryptOne();
      },
      buildResponder: (i) => {
        const ek = baseKeys[i % baseKeys.length]!;
        const parts = [PAD, dh(ours[1]!, theirIdentity), dh(ours[0]!, ek), dh(ours[1]!, ek), x25519(preKeys[i % preKeys.length]!.priv, ek.pub)];
        const root = Buffer.from(hkdfSync('sha256', Buffer.concat(parts), ZERO, INFO_X3DH, 32));
        const theirRatchet = ratchetKeys[i % ratchetKeys.length]!;
        const a = Buffer.from(hkdfSync('sha256', dh(ours[1]!, theirRatchet), root, INFO_RK, 64));
        const k = generateX25519();
        Buffer.from(hkdfSync('sha256', dh(k, theirRatchet), a.subarray(0, 32), INFO_RK, 64));
        // The completion: a random key (and IV) for the key transport, encrypted on the new chain.
        const transport = pooled(16);
        pooled(12);
        ratchetEncrypt(next(), transport, ad);
        // The prekey's replacement.
        generateX25519();
        decryptOne(() => {
          store.put(LOCAL, 'prekey', String(i % 100), usedRow);
          store.put(LOCAL, 'prekey', String(100 + (i % 100)), preKeyRow);
          store.put(LOCAL, 'identity', 'self', identityRow);
        });
      },
    };
    return { ops, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** Times `count` calls of `op` after 50 unrecorded ones (ms each). */
export function timeFloor(op: (i: number) => void, count: number, warm = 50): number[] {
  const out: number[] = [];
  for (let i = 0; i < count + warm; i++) {
    const t = performance.now();
    op(i);
    if (i >= warm) out.push(performance.now() - t);
  }
  return out;
}

/** Every floor, each kind timed in one stretch (the OMEMO 2 comparison and older runs measured them so). */
export function benchFloors(n: { steady: number; turn: number; build: number }): Floors {
  const { ops, close } = openFloors(n);
  try {
    return {
      encrypt: timeFloor(ops.encrypt, n.steady),
      encrypt3: timeFloor(ops.encrypt3, Math.ceil(n.steady / 3)).map((x) => x / 3),
      decrypt: timeFloor(ops.decrypt, n.steady),
      decrypt3: timeFloor(ops.decrypt3, n.steady),
      body: timeFloor(ops.body, n.steady),
      turn: timeFloor(ops.turn, n.turn),
      buildInitiator: timeFloor(ops.buildInitiator, n.build),
      buildResponder: timeFloor(ops.buildResponder, n.build),
    };
  } finally {
    close();
  }
}
