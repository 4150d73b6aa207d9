// OMEMO 2's payload cipher (XEP-0384 v0.8 §"Message Encryption"): a random 32-byte key, HKDF-SHA-256
// (salt 32 zero bytes, info "OMEMO Payload", 80 bytes) -> AES-256 key || HMAC key || IV; AES-256-CBC
// with PKCS#7 over the SCE envelope; HMAC-SHA-256 over the ciphertext truncated to 16 bytes. What
// the ratchet carries per device is key (32) || mac (16). Empty messages carry 32 zero bytes.
import { aesCbcDecrypt, aesCbcEncrypt, hkdf, hmac, macEqual, random, zeros } from '../ratchet/primitives.js';
import { INFO_PAYLOAD, MAC_LENGTH } from './constants.js';

/** Bytes of the random payload key. */
export const PAYLOAD_KEY = 32;
const KEY = PAYLOAD_KEY;
const ZERO_SALT = zeros(32);

function derive(key: Buffer): { enc: Buffer; auth: Buffer; iv: Buffer } {
  const out = hkdf(key, ZERO_SALT, INFO_PAYLOAD, 80);
  return { enc: out.subarray(0, 32), auth: out.subarray(32, 64), iv: out.subarray(64, 80) };
}

export function sealPayload(plaintext: Buffer, key: Buffer = random(KEY)): { keyMaterial: Buffer; payload: Buffer } {
  const k = derive(key);
  const payload = aesCbcEncrypt(k.enc, k.iv, plaintext);
  const mac = hmac(k.auth, payload).subarray(0, MAC_LENGTH);
  const keyMaterial = Buffer.concat([key, mac]);
  k.enc.fill(0);
  return { keyMaterial, payload };
}

export type OpenResult = { ok: true; plaintext: Buffer } | { ok: false; reason: 'malformed' | 'bad-mac' };

export function openPayload(keyMaterial: Buffer, payload: Buffer): OpenResult {
  if (keyMaterial.length !== KEY + MAC_LENGTH || payload.length === 0 || payload.length % 16 !== 0) return { ok: false, reason: 'malformed' };
  const k = derive(keyMaterial.subarray(0, KEY));
  if (!macEqual(hmac(k.auth, payload).subarray(0, MAC_LENGTH), keyMaterial.subarray(KEY))) return { ok: false, reason: 'bad-mac' };
  try {
    return { ok: true, plaintext: aesCbcDecrypt(k.enc, k.iv, payload) };
  } catch {
    return { ok: false, reason: 'malformed' };
  }
}

/** What an empty (key-transport, heartbeat) message carries. */
export const emptyKeyMaterial = (): Buffer => zeros(32);

export const isEmptyKeyMaterial = (m: Buffer): boolean => m.length === 32;
