// At-rest encryption of keystore fields: AES-256-GCM under a key derived from the passphrase with
// scrypt. Each sealed value is bound to where it is stored (the `aad` string, e.g. table and row key),
// so a ciphertext copied into another row does not open.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomFillSync, scryptSync } from 'node:crypto';

const VERSION = 1;
const IV_LEN = 12;
const TAG_LEN = 16;

export interface KdfParams {
  N: number;
  r: number;
  p: number;
}

export const DEFAULT_KDF: KdfParams = { N: 1 << 15, r: 8, p: 1 };

export function deriveKey(passphrase: string, salt: Buffer, params: KdfParams = DEFAULT_KDF): Buffer {
  return scryptSync(passphrase.normalize('NFC'), salt, 32, { ...params, maxmem: 256 * params.N * params.r });
}

// Random bytes (IVs, row ids) are drawn from a pool refilled 4 KiB at a time: one CSPRNG call per
// ~340 seals instead of one per seal (sealing and a message id are on the hot path of every message).
const POOL = Buffer.alloc(4096);
let poolPos = POOL.length;

/** `n` (at most 64) fresh random bytes from the pool; the pool's copy is wiped, so no bytes are handed out twice. */
export function pooledRandomBytes(n: number): Buffer {
  if (n > 64) throw new RangeError('pooledRandomBytes: at most 64 bytes');
  if (poolPos + n > POOL.length) {
    randomFillSync(POOL);
    poolPos = 0;
  }
  const out = Buffer.from(POOL.subarray(poolPos, poolPos + n));
  POOL.fill(0, poolPos, poolPos + n);
  poolPos += n;
  return out;
}

const freshIv = (): Buffer => pooledRandomBytes(IV_LEN);

export class Sealer {
  readonly #key: Buffer;
  readonly #idKey: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new Error('sealing key must be 32 bytes');
    this.#key = Buffer.from(key);
    this.#idKey = Buffer.from(hkdfSync('sha256', this.#key, Buffer.alloc(0), 'xmpp-e2ee-gateway row id v1', 32));
  }

  /** A keyed digest of `label` (HMAC-SHA256 under a subkey): stable row ids that reveal nothing. */
  digest(label: string): string {
    return createHmac('sha256', this.#idKey).update(label, 'utf8').digest('base64url');
  }

  seal(plain: Buffer | string, aad: string): Buffer {
    const iv = freshIv();
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const data = typeof plain === 'string' ? Buffer.from(plain, 'utf8') : plain;
    // VERSION | iv | tag | ciphertext, written into one buffer (GCM: ciphertext as long as the data).
    const out = Buffer.allocUnsafe(1 + IV_LEN + TAG_LEN + data.length);
    out[0] = VERSION;
    iv.copy(out, 1);
    const head = 1 + IV_LEN + TAG_LEN;
    let at = head + cipher.update(data).copy(out, head);
    at += cipher.final().copy(out, at);
    if (at !== out.length) throw new Error('seal: unexpected ciphertext length');
    cipher.getAuthTag().copy(out, 1 + IV_LEN);
    return out;
  }

  /** Throws SealError when the value was not sealed by this key for this `aad`. */
  open(sealed: Buffer, aad: string): Buffer {
    if (sealed.length < 1 + IV_LEN + TAG_LEN || sealed[0] !== VERSION) throw new SealError('unknown sealed format');
    const iv = sealed.subarray(1, 1 + IV_LEN);
    const tag = sealed.subarray(1 + IV_LEN, 1 + IV_LEN + TAG_LEN);
    const decipher = createDecipheriv('aes-256-gcm', this.#key, iv);
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(sealed.subarray(1 + IV_LEN + TAG_LEN)), decipher.final()]);
    } catch {
      throw new SealError('sealed value does not authenticate');
    }
  }
}

export class SealError extends Error {
  override name = 'SealError';
}
