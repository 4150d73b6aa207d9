// The fast crypto backend for libsignal-protocol-typescript: the library lets us plug in a
// WebCrypto-shaped object (setWebCrypto) and a Curve25519 implementation (setCurve). As shipped it
// uses the asynchronous WebCrypto (one thread hop per HMAC) and an asm.js curve (~3 ms per X25519).
// Here every symmetric primitive is a synchronous node:crypto call wrapped in an already-resolved
// promise, X25519 is node:crypto (OpenSSL), and only XEdDSA signing/verification (bundle signatures,
// no node equivalent) stays on the library's own curve code. Nothing cryptographic is written here:
// this file only adapts calling conventions and key encodings.
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  randomFillSync,
  type KeyObject,
} from 'node:crypto';
import * as signal from '@privacyresearch/libsignal-protocol-typescript';
import { crypto as libraryCrypto } from '@privacyresearch/libsignal-protocol-typescript/lib/internal/crypto.js';
import { ab, buf, view } from './bytes.js';

type Bin = ArrayBuffer | ArrayBufferView;
interface RawKey {
  readonly alg: string;
  readonly key: Buffer;
}

function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The subset of SubtleCrypto libsignal calls: raw AES-CBC and HMAC-SHA-256 keys, SHA-512. */
const subtle = {
  importKey(_format: 'raw', key: Bin, alg: { name: string }): Promise<RawKey> {
    return settle(() => ({ alg: alg.name, key: buf(key) }));
  },
  encrypt(alg: { name: string; iv: Bin }, key: RawKey, data: Bin): Promise<ArrayBuffer> {
    return settle(() => {
      if (alg.name !== 'AES-CBC') throw new Error(`unsupported cipher ${alg.name}`);
      const c = createCipheriv(`aes-${key.key.length * 8}-cbc`, key.key, view(alg.iv));
      return ab(Buffer.concat([c.update(view(data)), c.final()]));
    });
  },
  decrypt(alg: { name: string; iv: Bin }, key: RawKey, data: Bin): Promise<ArrayBuffer> {
    return settle(() => {
      if (alg.name !== 'AES-CBC') throw new Error(`unsupported cipher ${alg.name}`);
      const d = createDecipheriv(`aes-${key.key.length * 8}-cbc`, key.key, view(alg.iv));
      return ab(Buffer.concat([d.update(view(data)), d.final()]));
    });
  },
  sign(_alg: unknown, key: RawKey, data: Bin): Promise<ArrayBuffer> {
    return settle(() => ab(createHmac('sha256', key.key).update(view(data)).digest()));
  },
  digest(alg: { name: string } | string, data: Bin): Promise<ArrayBuffer> {
    const name = typeof alg === 'string' ? alg : alg.name;
    return settle(() => ab(createHash(name.replace('-', '').toLowerCase()).update(view(data)).digest()));
  },
};

export const nodeWebCrypto = {
  subtle,
  getRandomValues<T extends Uint8Array | Uint16Array | Uint32Array>(array: T): T {
    randomFillSync(array);
    return array;
  },
};

// ---- Curve25519 ----

/** Private keys we imported recently: ratchet and prekey private keys are used two or three times. */
const privateKeys = new Map<string, KeyObject>();
const PRIVATE_KEY_CACHE = 512;
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

function importPrivate(priv: Uint8Array): KeyObject {
  const id = Buffer.from(priv.buffer, priv.byteOffset, priv.byteLength).toString('latin1');
  let key = privateKeys.get(id);
  if (key) return key;
  try {
    // JWK is ~10x faster to import than PKCS#8 DER on OpenSSL 3. OpenSSL derives the public key
    // from d; node requires an x member but does not use it (a unit test checks the results agree
    // with the library's curve). Should a node version start to check it, we fall back to DER.
    key = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: buf(priv).toString('base64url'), x: '' }, format: 'jwk' });
  } catch {
    key = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, priv]), format: 'der', type: 'pkcs8' });
  }
  if (privateKeys.size >= PRIVATE_KEY_CACHE) privateKeys.delete(privateKeys.keys().next().value as string);
  privateKeys.set(id, key);
  return key;
}

function importPublic(pub: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: buf(pub).toString('base64url') }, format: 'jwk' });
}

interface SyncCurve {
  calculateSignature(privKey: ArrayBuffer, message: ArrayBuffer): ArrayBuffer;
  /** libsignal convention: true when the signature is INVALID. */
  verifySignature(pubKey: ArrayBuffer, msg: ArrayBuffer, sig: ArrayBuffer): boolean;
}

let wasmCurve: Promise<SyncCurve> | null = null;
/** The library's own (asm.js) curve, used for XEdDSA only. */
export function libraryCurve(): Promise<SyncCurve> {
  if (!wasmCurve) {
    // The package is CommonJS: seen from ESM, its `default` export sits one level down.
    const m = signal as unknown as { default: unknown };
    const load = (typeof m.default === 'function' ? m.default : (m.default as { default: unknown }).default) as () => Promise<{ Curve: SyncCurve }>;
    wasmCurve = load().then((x) => x.Curve);
  }
  return wasmCurve;
}

const with05 = (pub32: Uint8Array): ArrayBuffer => {
  const out = new Uint8Array(33);
  out[0] = 5;
  out.set(pub32, 1);
  return out.buffer;
};

/** The Curve25519 interface libsignal's setCurve expects (32-byte keys, no 0x05 prefix). */
export const nodeCurve = {
  keyPair(privKey: ArrayBuffer): Promise<{ pubKey: ArrayBuffer; privKey: ArrayBuffer }> {
    return settle(() => {
      const priv = new Uint8Array(32);
      priv.set(view(privKey));
      // Store the clamped scalar, as the library's curve does: XEdDSA signs with it as is.
      priv[0]! &= 248;
      priv[31]! &= 127;
      priv[31]! |= 64;
      // The public key OpenSSL computes from the private scalar (never the placeholder x above).
      const pub = Buffer.from(createPublicKey(importPrivate(priv)).export({ format: 'jwk' }).x as string, 'base64url');
      if (pub.length !== 32) throw new Error('X25519 public key derivation failed');
      return { pubKey: ab(pub), privKey: priv.buffer };
    });
  },
  sharedSecret(pubKey: ArrayBuffer, privKey: ArrayBuffer): Promise<ArrayBuffer> {
    return settle(() => ab(diffieHellman({ privateKey: importPrivate(view(privKey)), publicKey: importPublic(view(pubKey)) })));
  },
  async sign(privKey: ArrayBuffer, message: ArrayBuffer): Promise<ArrayBuffer> {
    return (await libraryCurve()).calculateSignature(privKey, message);
  },
  async verify(pubKey: ArrayBuffer, message: ArrayBuffer, sig: ArrayBuffer): Promise<boolean> {
    return (await libraryCurve()).verifySignature(with05(view(pubKey)), message, sig);
  },
};

// ---- direct entry points ----
// Even with the WebCrypto shim, each HMAC costs an importKey and two generator-based awaits, and the
// library computes HKDF as four such HMACs (~26 us per message key). Its internal Crypto object is a
// singleton whose methods all message processing goes through; we give that instance (not its class:
// the originals stay on the prototype, and tests compare both) one node:crypto call per method.
// Same primitives, same inputs and outputs: HMAC-SHA-256, HKDF-SHA-256 (RFC 5869, 3 x 32 bytes), AES-256-CBC.

const aesCbc = (decrypt: boolean, key: Bin, data: Bin, iv: Bin): ArrayBuffer => {
  const k = view(key);
  const c = decrypt ? createDecipheriv(`aes-${k.length * 8}-cbc`, k, view(iv)) : createCipheriv(`aes-${k.length * 8}-cbc`, k, view(iv));
  return ab(Buffer.concat([c.update(view(data)), c.final()]));
};

const directMethods = {
  sign: (key: Bin, data: Bin): Promise<ArrayBuffer> => settle(() => ab(createHmac('sha256', view(key)).update(view(data)).digest())),
  HKDF: (input: Bin, salt: Bin, info: Bin): Promise<ArrayBuffer[]> =>
    settle(() => {
      const okm = hkdfSync('sha256', view(input), view(salt), view(info), 96);
      return [okm.slice(0, 32), okm.slice(32, 64), okm.slice(64, 96)];
    }),
  encrypt: (key: Bin, data: Bin, iv: Bin): Promise<ArrayBuffer> => settle(() => aesCbc(false, key, data, iv)),
  decrypt: (key: Bin, data: Bin, iv: Bin): Promise<ArrayBuffer> => settle(() => aesCbc(true, key, data, iv)),
};

/** The library's original implementations (on the prototype), for equivalence tests. */
export const libraryCryptoOriginals = (): typeof directMethods => {
  const proto = Object.getPrototypeOf(libraryCrypto) as Record<string, (...a: unknown[]) => unknown>;
  const bind = (name: keyof typeof directMethods) => proto[name]!.bind(libraryCrypto) as never;
  return { sign: bind('sign'), HKDF: bind('HKDF'), encrypt: bind('encrypt'), decrypt: bind('decrypt') };
};

let installed = false;

/** Installs the node:crypto backend into libsignal (process-wide; idempotent). */
export function installFastCrypto(): void {
  if (installed) return;
  signal.setWebCrypto(nodeWebCrypto as unknown as Parameters<typeof signal.setWebCrypto>[0]);
  signal.setCurve(nodeCurve as unknown as Parameters<typeof signal.setCurve>[0]);
  const target = libraryCrypto as unknown as Record<string, unknown>;
  // Only if the library still has the shape we know; otherwise the WebCrypto shim alone is used.
  if (Object.keys(directMethods).every((m) => typeof target[m] === 'function')) Object.assign(target, directMethods);
  // Warm-up only: a load failure is reported by the first signature that needs the curve.
  libraryCurve().catch(() => undefined);
  installed = true;
}

export const fastCryptoInstalled = (): boolean => installed;
