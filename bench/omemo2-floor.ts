// The floor of each OMEMO 2 bench row: the native calls the OMEMO 2 engine makes for one message and
// nothing else, timed alone in the same run (node:crypto through the same wrappers the engine uses,
// bridges/ratchet/primitives.ts, and the keystore write as the engine commits it; no records,
// protobuf, XML, promises or maps). Keys the engine has imported already in the bench's case (our own,
// the contact's identity and signed prekey) are warm here too; a key the message brings for the
// first time (a new ratchet key, a key exchange's ephemeral key) is imported in the timed part.
//   encrypt, per message: randomness (payload key, SCE rpad), HKDF "OMEMO Payload" (80 bytes),
//     AES-256-CBC of the SCE envelope, its HMAC-SHA-256; per device: KDF_CK (2 HMAC), HKDF "OMEMO
//     Message Key Material" (80 bytes), AES-256-CBC of the 48-byte key || mac, the HMAC over AD ||
//     OMEMOMessage; then the sealed session row (one device: one row on its own; three devices:
//     three rows in one transaction).
//   decrypt: KDF_CK, message keys HKDF, HMAC check, AES-256-CBC decryption of the key || mac, the
//     payload's HKDF, HMAC check and AES-256-CBC decryption, the replay digest (SHA-256), and one
//     transaction with the sealed session row and the digest row.
//   ratchet turn (decrypt): the above, the contact's new ratchet key imported, one X25519 key
//     generation, two agreements and two KDF_RK (HKDF, 64 bytes).
//   session build, initiator: the Ed25519 check of the signed prekey's signature, two key
//     generations (ephemeral, first ratchet key), four X3DH agreements and one for the first chain,
//     HKDF x2, then one encrypt.
//   session build, responder: four X3DH agreements (the ephemeral key imported), HKDF, the first
//     ratchet turn, one decrypt, the completion (an empty message: one ratchet encryption), the
//     replacement prekey's generation, and one transaction with the used and the new prekey rows,
//     the counters row, the session row and the digest row.
import { generateKeyPairSync, hash, sign as edSign, verify as edVerify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore } from '../keystore/keystore.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { ReplayStore } from '../keystore/replay-store.js';
import {
  aesCbcDecrypt,
  aesCbcEncrypt,
  generateX25519,
  hkdf,
  hmac,
  macEqual,
  random,
  x25519,
  zeros,
  type X25519KeyPair,
} from '../bridges/ratchet/primitives.js';
import { INFO_MESSAGE_KEYS, INFO_PAYLOAD, INFO_ROOT, INFO_X3DH } from '../bridges/omemo2/constants.js';
import { buildEnvelope, RPAD_RANDOM } from '../bridges/omemo2/sce.js';

export interface Omemo2Floors {
  encrypt: number[];
  /** Per device: one message to three devices, divided by three. */
  encrypt3: number[];
  decrypt: number[];
  turn: number[];
  buildInitiator: number[];
  buildResponder: number[];
}

const ZERO = zeros(32);
const ONE = Buffer.of(1);
const TWO = Buffer.of(2);
const MAC = 16;
/** One draw per message: the payload key (32 bytes) and the SCE rpad's randomness (RPAD_RANDOM). */
const RANDOM = 32 + RPAD_RANDOM;
const LOCAL = 'alerts@gw.example.org';
const CONTACT = 'bob\\40example.org@gw.example.org';

/** What one device's message is made of: the chain step, its keys, and what the MAC covers. */
interface Sent {
  ck: Buffer;
  encoded: Buffer;
  mac: Buffer;
  ct: Buffer;
}

/** KDF_CK, the message keys and the ratchet's encryption of `km` (the engine's dr.encrypt, native calls only). */
function ratchetEncrypt(ck: Buffer, km: Buffer, ad: Buffer, frame: Buffer): Sent {
  const next = hmac(ck, TWO);
  const mk = hmac(ck, ONE);
  const k = hkdf(mk, ZERO, INFO_MESSAGE_KEYS, 80);
  const ct = aesCbcEncrypt(k.subarray(0, 32), k.subarray(64, 80), km);
  // The OMEMOMessage's fields around the ciphertext are a few bytes of framing: same length as the engine's.
  const encoded = Buffer.concat([frame, ct]);
  const mac = hmac(k.subarray(32, 64), ad, encoded).subarray(0, MAC);
  return { ck: next, encoded, mac, ct };
}

function ratchetDecrypt(ck: Buffer, m: Sent, ad: Buffer): { ck: Buffer; km: Buffer } {
  const next = hmac(ck, TWO);
  const mk = hmac(ck, ONE);
  const k = hkdf(mk, ZERO, INFO_MESSAGE_KEYS, 80);
  if (!macEqual(hmac(k.subarray(32, 64), ad, m.encoded).subarray(0, MAC), m.mac)) throw new Error('floor: ratchet mac');
  return { ck: next, km: aesCbcDecrypt(k.subarray(0, 32), k.subarray(64, 80), m.ct) };
}

function sealPayload(envelope: Buffer, key: Buffer): { km: Buffer; payload: Buffer } {
  const k = hkdf(key, ZERO, INFO_PAYLOAD, 80);
  const payload = aesCbcEncrypt(k.subarray(0, 32), k.subarray(64, 80), envelope);
  return { km: Buffer.concat([key, hmac(k.subarray(32, 64), payload).subarray(0, MAC)]), payload };
}

function openPayload(km: Buffer, payload: Buffer): Buffer {
  const k = hkdf(km.subarray(0, 32), ZERO, INFO_PAYLOAD, 80);
  if (!macEqual(hmac(k.subarray(32, 64), payload).subarray(0, MAC), km.subarray(32))) throw new Error('floor: payload mac');
  return aesCbcDecrypt(k.subarray(0, 32), k.subarray(64, 80), payload);
}

// The engine's replayDigest (omemo2/context.ts): one-shot SHA-256 over the prefix and the encoded message.
const digestOf = (encoded: Buffer): Buffer => hash('sha256', Buffer.concat([Buffer.from(`omemo2\0${LOCAL}\0`, 'utf8'), encoded]), 'buffer');

export type Omemo2FloorOps = Record<keyof Omemo2Floors, (i: number) => void>;

/**
 * The floors' operations on their own keystore (a temporary file), for a caller that times them
 * itself (the engine bench interleaves them with its own samples: bench/interleaved.ts). `n` sizes
 * the material made ahead (messages to decrypt, keys new to each call); a call past it wraps around.
 * `recordBytes`: the length of the engine's session record for a steady session (the row it writes
 * per message, before sealing).
 */
export function openOmemo2Floors(n: { steady: number; turn: number; build: number; recordBytes: number }): { ops: Omemo2FloorOps; close(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'omemo2-floor-'));
  const ks = Keystore.open(join(dir, 'ks.sqlite'), 'bench-passphrase', { kdf: { N: 1024, r: 8, p: 1 } });
  // As the engine's keystores in the bench (omemo2-engine.ts): checkpoints on the worker from the start.
  ks.startCheckpointWorker();
  const close = () => {
    ks.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const store = createProtocolStore(ks, 'omemo2');
    const replay = new ReplayStore(ks);
    const record = random(n.recordBytes);
    const preKeyRow = random(96);
    const stateRow = random(70);
    const ad = random(64);
    // n (1-2 bytes), pn, the 32-byte key and the ciphertext's tag and length: 40 bytes before the ciphertext.
    const frame = random(40);
    const envelope = buildEnvelope({ body: 'steady message 1234', from: LOCAL, to: CONTACT, now: Date.now() });
    const sessionKey = (i: number): string => `${CONTACT}\0${1000 + (i % 4)}`;
    const at = <T>(list: readonly T[], i: number): T => list[i % list.length]!;
    let seq = 0;
    const encryptOne = (ck: Buffer, i: number): Buffer => {
      const p = sealPayload(envelope, random(RANDOM).subarray(0, 32));
      const m = ratchetEncrypt(ck, p.km, ad, frame);
      store.put(LOCAL, 'session', sessionKey(i), record);
      return m.ck;
    };
    let ck = random(32);
    const cks = [random(32), random(32), random(32)];

    // Messages to decrypt are made outside the timed part, on one chain; each is decrypted with its own chain key.
    const makeChain = (count: number): Array<Sent & { payload: Buffer }> => {
      const msgs: Array<Sent & { payload: Buffer }> = [];
      let c = random(32);
      for (let i = 0; i < count; i++) {
        const p = sealPayload(envelope, random(32));
        const m = ratchetEncrypt(c, p.km, ad, frame);
        msgs.push({ ...m, ck: c, payload: p.payload });
        c = m.ck;
      }
      return msgs;
    };
    const decryptOne = (m: Sent & { payload: Buffer }, i: number, extra?: () => void): void => {
      const r = ratchetDecrypt(m.ck, m, ad);
      openPayload(r.km, m.payload);
      const digest = digestOf(m.encoded);
      ks.transaction(() => {
        extra?.();
        store.put(LOCAL, 'session', sessionKey(i), record);
        replay.add('omemo2', digest, ++seq);
      });
    };
    const chain = makeChain(n.steady + 100);

    // Ratchet turn: their new ratchet key is new to us (imported); ours is generated.
    const ours = generateX25519();
    const theirs = Array.from({ length: n.turn + 100 }, () => generateX25519().pub);
    const turnChain = makeChain(n.turn + 100);
    const rk0 = random(32);

    // Session builds. Our identity and the contact's identity, signed prekey and prekeys are known keys.
    const theirIk: X25519KeyPair = generateX25519(); // the Montgomery form of their identity key
    const ed = generateKeyPairSync('ed25519');
    const spk = generateX25519();
    const opk = generateX25519();
    const ourIk = generateX25519();
    const sig = edSign(null, spk.pub, ed.privateKey);
    x25519(ourIk.priv, spk.pub);
    x25519(ourIk.priv, theirIk.pub);
    x25519(ourIk.priv, opk.pub);
    // The check itself, every time: the engine's ed25519Verify remembers a signature it verified
    // (a rebuild against a bundle seen before skips it), so the floor calls node:crypto directly,
    // with the imported key kept as the engine keeps it: the floor of a first build with this bundle.
    edVerify(null, spk.pub, ed.publicKey, sig);
    const PAD = Buffer.alloc(32, 0xff);
    // Responder: their ephemeral and first ratchet keys are new per build.
    const eks = Array.from({ length: n.build + 100 }, () => generateX25519().pub);
    const firstRatchet = Array.from({ length: n.build + 100 }, () => generateX25519().pub);
    const buildChain = makeChain(n.build + 100);

    const ops: Omemo2FloorOps = {
      encrypt: (i) => {
        ck = encryptOne(ck, i);
      },
      encrypt3: (i) => {
        const p = sealPayload(envelope, random(RANDOM).subarray(0, 32));
        for (let d = 0; d < 3; d++) cks[d] = ratchetEncrypt(cks[d]!, p.km, ad, frame).ck;
        ks.transaction(() => {
          for (let d = 0; d < 3; d++) store.put(LOCAL, 'session', sessionKey(i + d), record);
        });
      },
      decrypt: (i) => decryptOne(at(chain, i), i),
      turn: (i) => {
        const their = at(theirs, i);
        const a = hkdf(x25519(ours.priv, their), rk0, INFO_ROOT, 64);
        const k = generateX25519();
        hkdf(x25519(k.priv, their), a.subarray(0, 32), INFO_ROOT, 64);
        decryptOne(at(turnChain, i), i);
      },
      buildInitiator: (i) => {
        if (!edVerify(null, spk.pub, ed.publicKey, sig)) throw new Error('floor: signature');
        const ek = generateX25519();
        const sk = hkdf(Buffer.concat([PAD, x25519(ourIk.priv, spk.pub), x25519(ek.priv, theirIk.pub), x25519(ek.priv, spk.pub), x25519(ek.priv, opk.pub)]), ZERO, INFO_X3DH, 32);
        const dhs = generateX25519();
        const root = hkdf(x25519(dhs.priv, spk.pub), sk, INFO_ROOT, 64);
        encryptOne(root.subarray(32), i);
      },
      buildResponder: (i) => {
        const ek = at(eks, i);
        const first = at(firstRatchet, i);
        const sk = hkdf(Buffer.concat([PAD, x25519(spk.priv, theirIk.pub), x25519(ourIk.priv, ek), x25519(spk.priv, ek), x25519(opk.priv, ek)]), ZERO, INFO_X3DH, 32);
        const a = hkdf(x25519(spk.priv, first), sk, INFO_ROOT, 64);
        const k = generateX25519();
        const b = hkdf(x25519(k.priv, first), a.subarray(0, 32), INFO_ROOT, 64);
        generateX25519(); // the replacement prekey
        decryptOne(at(buildChain, i), i, () => {
          // The completion's empty message (32 zero bytes through the new sending chain) is encrypted
          // inside the engine's transaction too.
          ratchetEncrypt(b.subarray(32), ZERO, ad, frame);
          store.put(LOCAL, 'prekey', String(i % 100), preKeyRow);
          store.put(LOCAL, 'prekey', String(100 + i), preKeyRow);
          store.put(LOCAL, 'state', 'self', stateRow);
        });
      },
    };
    return { ops, close };
  } catch (e) {
    close();
    throw e;
  }
}
