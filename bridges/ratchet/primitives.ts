// The cryptographic primitives the X3DH and Double Ratchet modules use, as thin synchronous wrappers:
// X25519, Ed25519, HKDF-SHA-256, HMAC-SHA-256 and AES-256-CBC from node:crypto, and the Edwards <->
// Montgomery mapping and the scalar/point arithmetic XEdDSA signing needs from @noble/curves
// (node:crypto has neither). Nothing here is a primitive of our own: only key encodings and calls.
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  randomBytes,
  sign as edSign,
  verify as edVerify,
  type KeyObject,
} from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';

export interface X25519KeyPair {
  /** 32-byte clamped private scalar (as libsignal and python-x3dh store it). */
  priv: Buffer;
  /** 32-byte u-coordinate. */
  pub: Buffer;
}

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** Imported keys by their raw bytes, bounded (the oldest entry goes first). */
class KeyCache {
  readonly #m = new Map<string, KeyObject>();
  constructor(readonly max: number) {}
  get(raw: Uint8Array, make: () => KeyObject): KeyObject {
    const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1');
    const hit = this.#m.get(id);
    if (hit) return hit;
    const key = make();
    this.put(id, key);
    return key;
  }
  put(id: string, key: KeyObject): void {
    if (this.#m.size >= this.max) this.#m.delete(this.#m.keys().next().value as string);
    this.#m.set(id, key);
  }
}

// Private keys are used a few times each (a ratchet key for one chain, a prekey, the identity):
// importing one costs more than the agreement itself, so recently used ones are kept. Public keys
// come back too: a contact's ratchet key is agreed with twice in a ratchet turn, its identity and
// signed prekey in every X3DH with it.
const privCache = new KeyCache(1024);
const pubCache = new KeyCache(1024);

const importX25519Private = (priv: Uint8Array): KeyObject =>
  privCache.get(priv, () => {
    try {
      // JWK imports ~10x faster than PKCS#8 on OpenSSL 3; node does not use the x member.
      return createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: Buffer.from(priv).toString('base64url'), x: '' }, format: 'jwk' });
    } catch {
      return createPrivateKey({ key: Buffer.concat([PKCS8_X25519, priv]), format: 'der', type: 'pkcs8' });
    }
  });

const importX25519Public = (pub: Uint8Array): KeyObject =>
  pubCache.get(pub, () => createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(pub).toString('base64url') }, format: 'jwk' }));

/**
 * A fresh X25519 key pair: a random 32-byte scalar (RFC 7748 §5: private keys are random bytes, the
 * scalar is clamped) imported into node:crypto, which computes the public key. Not
 * generateKeyPairSync + export: on Node 20 a garbage collection during the JWK export of a generated
 * key can run an earlier key generation job's destructor, which waits on a mutex the export holds,
 * and the process hangs for good (seen in the OMEMO bench: main thread in
 * KeyGenJob::~KeyGenJob <- GC <- ExportJWKEdKey).
 */
export function generateX25519(): X25519KeyPair {
  const priv = randomBytes(32);
  clamp(priv);
  const pub = x25519Public(priv);
  return { priv, pub };
}

/** X25519 public key of a private scalar. */
export function x25519Public(priv: Uint8Array): Buffer {
  return Buffer.from(createPublicKey(importX25519Private(priv)).export({ format: 'jwk' }).x as string, 'base64url');
}

/** X25519 agreement; throws on a low-order public key (OpenSSL refuses an all-zero output). */
export function x25519(priv: Uint8Array, pub: Uint8Array): Buffer {
  if (pub.length !== 32) throw new Error('X25519 public key must be 32 bytes');
  return diffieHellman({ privateKey: importX25519Private(priv), publicKey: importX25519Public(pub) });
}

function clamp(k: Buffer): void {
  k[0]! &= 248;
  k[31]! &= 127;
  k[31]! |= 64;
}

export const hkdf = (ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer =>
  Buffer.from(hkdfSync('sha256', ikm, salt, info, length));

export const hmac = (key: Uint8Array, ...data: Uint8Array[]): Buffer => {
  const h = createHmac('sha256', key);
  for (const d of data) h.update(d);
  return h.digest();
};

export function aesCbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Buffer {
  const c = createCipheriv('aes-256-cbc', key, iv);
  return Buffer.concat([c.update(plaintext), c.final()]);
}

/** Throws on bad padding (callers check the MAC first). */
export function aesCbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Buffer {
  const d = createDecipheriv('aes-256-cbc', key, iv);
  return Buffer.concat([d.update(ciphertext), d.final()]);
}

export const zeros = (n: number): Buffer => Buffer.alloc(n);
export const random = (n: number): Buffer => randomBytes(n);

/** Constant-time comparison of two MACs of equal length. */
export function macEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

// ---- Ed25519 ----

const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

// Identity keys of contacts come back again and again (every session build, repair, bundle check):
// their imported KeyObject and their Montgomery form are kept (the mapping is ~0.4 ms of bigint math).
const edKeys = new Map<string, KeyObject>();
const montgomery = new Map<string, Buffer>();
const ID_CACHE_MAX = 4096;
function remember<T>(m: Map<string, T>, k: string, v: T): T {
  if (m.size >= ID_CACHE_MAX) m.delete(m.keys().next().value as string);
  m.set(k, v);
  return v;
}

// A contact device's signed prekey signature is checked at every session build with it (from each
// hosted JID that writes to it, a repair, a lost session): ~0.1 ms of Ed25519 each time (issue 11).
// The same key, message and signature verify the same way every time, so a signature over a short
// message (a prekey, a label) that verified is remembered, bounded like the keys above; one that
// failed is checked again whenever it comes back. The entry is the exact bytes: key and signature
// have fixed lengths, so no two triples share one.
const verified = new Set<string>();
const REMEMBERED_MSG_MAX = 64;

/**
 * Ed25519 verification (RFC 8032) of `sig` over `msg` by the 32-byte public key; false on any bad
 * input. `recall` false checks even a signature that verified before (the benches' floors).
 */
export function ed25519Verify(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array, recall = true): boolean {
  if (pub.length !== 32 || sig.length !== 64) return false;
  const id = Buffer.from(pub.buffer, pub.byteOffset, 32).toString('latin1');
  const triple = recall && msg.length <= REMEMBERED_MSG_MAX ? id + Buffer.from(sig.buffer, sig.byteOffset, 64).toString('latin1') + Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength).toString('latin1') : null;
  if (triple !== null && verified.has(triple)) return true;
  let ok: boolean;
  try {
    const key = edKeys.get(id) ?? remember(edKeys, id, createPublicKey({ key: Buffer.concat([SPKI_ED25519, pub]), format: 'der', type: 'spki' }));
    ok = edVerify(null, msg, key, sig);
  } catch {
    return false;
  }
  if (ok && triple !== null) {
    if (verified.size >= ID_CACHE_MAX) verified.delete(verified.values().next().value as string);
    verified.add(triple);
  }
  return ok;
}

/** Whether 32 bytes are a valid Ed25519 point encoding. */
export function isEd25519Point(pub: Uint8Array): boolean {
  if (pub.length !== 32) return false;
  try {
    ed25519.Point.fromBytes(pub);
    return true;
  } catch {
    return false;
  }
}

/** The X25519 (Montgomery) form of an Ed25519 public key (birational map, from @noble/curves). */
export function ed25519PubToX25519(pub: Uint8Array): Buffer {
  const id = Buffer.from(pub).toString('latin1');
  return montgomery.get(id) ?? remember(montgomery, id, Buffer.from(ed25519.utils.toMontgomery(pub)));
}

// ---- an X25519 identity used as an Ed25519 key (XEdDSA) ----
// OMEMO 2 publishes the identity key as Ed25519. A hosted JID whose identity is an X25519 scalar (the
// legacy OMEMO identity, from libsignal) publishes the Edwards point of that scalar with sign bit 0
// and signs with XEdDSA (Signal's XEdDSA spec, §2.3), whose output is a plain Ed25519 signature for
// that key. Point and scalar arithmetic are @noble/curves'; hashing is node:crypto's SHA-512.

const Fn = ed25519.Point.Fn;

function edKeyOfScalar(priv: Uint8Array): { A: Uint8Array; a: bigint } {
  const k = Buffer.from(priv);
  clamp(k);
  let a = Fn.create(bytesToNumberLE(k));
  let A = ed25519.Point.BASE.multiply(a);
  if ((A.toBytes()[31]! & 0x80) !== 0) {
    A = A.negate();
    a = Fn.neg(a);
  }
  return { A: A.toBytes(), a };
}

/** The Ed25519 public key (sign bit 0) whose Montgomery form is the X25519 public key of `priv`. */
export function xeddsaPublic(priv: Uint8Array): Buffer {
  return Buffer.from(edKeyOfScalar(priv).A);
}

const HASH1_PREFIX = Buffer.concat([Buffer.of(0xfe), Buffer.alloc(31, 0xff)]);
const sha512 = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha512');
  for (const p of parts) h.update(p);
  return h.digest();
};

/** XEdDSA signature of `msg` by the X25519 private scalar `priv` (verifies with ed25519Verify(xeddsaPublic(priv))). */
export function xeddsaSign(priv: Uint8Array, msg: Uint8Array): Buffer {
  const { A, a } = edKeyOfScalar(priv);
  const aBytes = numberToBytesLE(a, 32);
  const r = Fn.create(bytesToNumberLE(sha512(HASH1_PREFIX, aBytes, msg, randomBytes(64))));
  const R = ed25519.Point.BASE.multiply(r === 0n ? 1n : r).toBytes();
  const h = Fn.create(bytesToNumberLE(sha512(R, A, msg)));
  const s = Fn.add(r === 0n ? 1n : r, Fn.mul(h, a));
  aBytes.fill(0);
  return Buffer.concat([R, numberToBytesLE(s, 32)]);
}

/** Ed25519 signing with a 32-byte RFC 8032 seed (node:crypto). */
export function ed25519Sign(seed: Uint8Array, msg: Uint8Array): Buffer {
  const key = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
  return edSign(null, msg, key);
}

// ---- XEdDSA verification of an X25519 public key (legacy OMEMO, libsignal's curve25519_verify) ----
// The signer's Edwards key is the birational image of its Montgomery u (y = (u - 1) / (u + 1), in
// @noble/curves' field), with the sign of x taken from the signature's top bit (XEdDSA signers put
// 0 there); the signature with that bit cleared is a plain Ed25519 signature, checked by node:crypto.

const Fp = ed25519.Point.Fp;
const MASK_255 = (1n << 255n) - 1n;

/** The Ed25519 public key of a Montgomery u-coordinate with the given sign bit; null for u = -1. */
export function x25519PubToEd25519(u: Uint8Array, signBit: 0 | 1): Buffer | null {
  if (u.length !== 32) return null;
  const x = Fp.create(bytesToNumberLE(u) & MASK_255);
  const den = Fp.add(x, Fp.ONE);
  if (Fp.is0(den)) return null;
  const y = Buffer.from(Fp.toBytes(Fp.div(Fp.sub(x, Fp.ONE), den)));
  y[31]! |= signBit << 7;
  return y;
}

/** Verifies an XEdDSA signature of `msg` by the 32-byte X25519 public key `pub`; false on any bad input (`recall`: ed25519Verify's). */
export function xeddsaVerify(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array, recall = true): boolean {
  if (sig.length !== 64) return false;
  const ed = x25519PubToEd25519(pub, ((sig[63]! & 0x80) >> 7) as 0 | 1);
  if (!ed) return false;
  const plain = Buffer.from(sig);
  plain[63]! &= 0x7f;
  return ed25519Verify(ed, msg, plain, recall);
}
