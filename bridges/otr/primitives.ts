// The symmetric pieces OTR uses, all from node:crypto: SHA-1, SHA-256, their HMACs, AES-128-CTR.
import { createCipheriv, createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const sha1 = (...b: Uint8Array[]): Buffer => {
  const h = createHash('sha1');
  for (const x of b) h.update(x);
  return h.digest();
};

export const sha256 = (...b: Uint8Array[]): Buffer => {
  const h = createHash('sha256');
  for (const x of b) h.update(x);
  return h.digest();
};

export const hmacSha256 = (key: Uint8Array, data: Uint8Array): Buffer => createHmac('sha256', key).update(data).digest();
export const hmacSha1 = (key: Uint8Array, data: Uint8Array): Buffer => createHmac('sha1', key).update(data).digest();

/** AES-128 in counter mode; `ctrTop` is the top 8 bytes of the initial counter (the rest zero). */
export function aesCtr(key: Uint8Array, data: Uint8Array, ctrTop: Uint8Array = Buffer.alloc(8)): Buffer {
  const iv = Buffer.concat([Buffer.from(ctrTop), Buffer.alloc(8)]);
  const c = createCipheriv('aes-128-ctr', key, iv);
  return Buffer.concat([c.update(data), c.final()]);
}

export const equalBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && timingSafeEqual(a, b);
