// The message body cipher of XEP-0384 v0.3.0: AES-128-GCM under a fresh random 16-byte key with a
// 12-byte IV (16-byte IVs from old senders are read too). The 16-byte tag travels with the key inside
// the Signal-encrypted key material (key || tag, 32 bytes); very old senders put only the key there
// and appended the tag to the payload, which we also read.
import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';

const KEY = 16;
const TAG = 16;
const IV = 12;

// Random bytes come from node's CSPRNG in 4 KB batches (one call per ~140 messages instead of two
// per message); each slice is copied out and wiped from the batch.
const BATCH = 4096;
let batch = Buffer.alloc(0);
let used = 0;
function randomBytes(n: number): Buffer {
  if (used + n > batch.length) {
    batch = randomFillSync(Buffer.allocUnsafeSlow(BATCH));
    used = 0;
  }
  const out = Buffer.from(batch.subarray(used, used + n));
  batch.fill(0, used, used + n);
  used += n;
  return out;
}

export interface SealedPayload {
  /** key(16) || tag(16): what gets Signal-encrypted for each device. */
  keyMaterial: Buffer;
  iv: Buffer;
  payload: Buffer;
}

export function sealPayload(plaintext: Buffer): SealedPayload {
  const key = randomBytes(KEY);
  const iv = randomBytes(IV);
  const c = createCipheriv('aes-128-gcm', key, iv);
  const payload = Buffer.concat([c.update(plaintext), c.final()]);
  const keyMaterial = Buffer.concat([key, c.getAuthTag()]);
  key.fill(0);
  return { keyMaterial, iv, payload };
}

/** Key material and IV for a key-transport (empty) message: a random 16-byte key, as python-oldmemo sends. */
export function keyTransportMaterial(): { keyMaterial: Buffer; iv: Buffer } {
  return { keyMaterial: randomBytes(KEY), iv: randomBytes(IV) };
}

export type OpenResult = { ok: true; plaintext: Buffer } | { ok: false; reason: 'malformed' | 'bad-mac' };

/** Decrypts a payload with the decrypted key material (32 bytes: key||tag, or 16 bytes: tag after the payload). */
export function openPayload(keyMaterial: Buffer, iv: Buffer, payload: Buffer): OpenResult {
  let key: Buffer;
  let tag: Buffer;
  let ct: Buffer;
  if (keyMaterial.length === KEY + TAG) {
    key = keyMaterial.subarray(0, KEY);
    tag = keyMaterial.subarray(KEY);
    ct = payload;
  } else if (keyMaterial.length === KEY) {
    if (payload.length < TAG) return { ok: false, reason: 'malformed' };
    key = keyMaterial;
    tag = payload.subarray(payload.length - TAG);
    ct = payload.subarray(0, payload.length - TAG);
  } else {
    return { ok: false, reason: 'malformed' };
  }
  if (iv.length !== 12 && iv.length !== 16) return { ok: false, reason: 'malformed' };
  try {
    const d = createDecipheriv('aes-128-gcm', key, iv);
    d.setAuthTag(tag);
    return { ok: true, plaintext: Buffer.concat([d.update(ct), d.final()]) };
  } catch {
    return { ok: false, reason: 'bad-mac' };
  }
}

/** Whether decrypted key material has a size a key-transport message may carry (16 or 32 bytes). */
export const isKeyTransportMaterial = (keyMaterial: Buffer): boolean => keyMaterial.length === KEY || keyMaterial.length === KEY + TAG;
