// A look inside libsignal v3 messages before handing them to the library (XEP-0384 v0.3.0 §"wire
// format", protocols.md §1.5), so that malformed peer input is rejected as a value instead of
// surfacing as a library exception, and so the engine learns the sender's identity key, prekey ids,
// ratchet key and counter without touching session state. Framing only; no cryptography.
//   WhisperMessage       = 0x33 || protobuf{1 ratchetKey, 2 counter, 3 previousCounter, 4 ciphertext} || mac(8)
//   PreKeyWhisperMessage = 0x33 || protobuf{1 preKeyId, 2 baseKey, 3 identityKey, 4 message, 5 registrationId, 6 signedPreKeyId}

export const SIGNAL_VERSION_BYTE = 0x33;
const MAC_LENGTH = 8;

export interface WhisperInfo {
  ratchetKey: Buffer;
  counter: number;
  previousCounter: number;
}

/** A WhisperMessage's fields, with its ciphertext (what the ratchet's codec reads). */
export interface WhisperParts extends WhisperInfo {
  ciphertext: Buffer;
}

export interface PreKeyInfo {
  /** 0 when absent. */
  preKeyId: number;
  signedPreKeyId: number;
  baseKey: Buffer;
  identityKey: Buffer;
  registrationId: number;
  /** The embedded WhisperMessage, read (so it is not read again to decrypt it). */
  message: WhisperParts;
  /** The embedded WhisperMessage as sent (version, protobuf, MAC): the part its MAC covers. */
  inner: Buffer;
}

type Field = number | Buffer;

/** Reads a protobuf message into field number -> last value (varints and length-delimited only). */
function readFields(b: Buffer): Map<number, Field> | null {
  const out = new Map<number, Field>();
  let pos = 0;
  const varint = (): number | null => {
    let result = 0;
    for (let i = 0; i < 10; i++) {
      if (pos >= b.length) return null;
      const byte = b[pos++]!;
      // Bits above 35 (only seen in negative int32 encodings) are dropped; callers range-check.
      if (i < 5) result += (byte & 0x7f) * 2 ** (7 * i);
      if ((byte & 0x80) === 0) return result;
    }
    return null;
  };
  while (pos < b.length) {
    const tag = varint();
    if (tag === null) return null;
    const field = Math.floor(tag / 8);
    const type = tag & 7;
    if (type === 0) {
      const v = varint();
      if (v === null) return null;
      out.set(field, v);
    } else if (type === 2) {
      const len = varint();
      if (len === null || pos + len > b.length) return null;
      out.set(field, b.subarray(pos, pos + len));
      pos += len;
    } else if (type === 1) {
      pos += 8;
    } else if (type === 5) {
      pos += 4;
    } else {
      return null;
    }
    if (pos > b.length) return null;
  }
  return out;
}

const bytesOf = (f: Map<number, Field>, n: number): Buffer | null => {
  const v = f.get(n);
  return Buffer.isBuffer(v) ? v : null;
};
const uintOf = (f: Map<number, Field>, n: number): number => {
  const v = f.get(n);
  return typeof v === 'number' && v <= 0xffffffff ? v : 0;
};

/** A 33-byte 0x05-prefixed Curve25519 public key. */
export const isPublicKey = (k: Buffer | null): k is Buffer => k !== null && k.length === 33 && k[0] === 5;

/** Every OMEMO client sends version 3 messages; libsignal MACs the byte as 0x33 anyway. */
const versionOk = (b: number | undefined): boolean => b === SIGNAL_VERSION_BYTE;

export function inspectWhisper(msg: Buffer): WhisperInfo | null {
  const m = inspectWhisperParts(msg);
  return m && { ratchetKey: m.ratchetKey, counter: m.counter, previousCounter: m.previousCounter };
}

/** inspectWhisper and the ciphertext (what the ratchet's codec reads). */
export function inspectWhisperParts(msg: Buffer): WhisperParts | null {
  if (msg.length < 1 + MAC_LENGTH + 2 || !versionOk(msg[0])) return null;
  const f = readFields(msg.subarray(1, msg.length - MAC_LENGTH));
  if (!f) return null;
  const ratchetKey = bytesOf(f, 1);
  const ciphertext = bytesOf(f, 4);
  if (!isPublicKey(ratchetKey) || !ciphertext || ciphertext.length === 0 || ciphertext.length % 16 !== 0) return null;
  return { ratchetKey, counter: uintOf(f, 2), previousCounter: uintOf(f, 3), ciphertext };
}

export function inspectPreKey(msg: Buffer): PreKeyInfo | null {
  if (msg.length < 2 || !versionOk(msg[0])) return null;
  const f = readFields(msg.subarray(1));
  if (!f) return null;
  const baseKey = bytesOf(f, 2);
  const identityKey = bytesOf(f, 3);
  const inner = bytesOf(f, 4);
  if (!isPublicKey(baseKey) || !isPublicKey(identityKey) || !inner) return null;
  const message = inspectWhisperParts(inner);
  if (!message) return null;
  return {
    preKeyId: uintOf(f, 1),
    signedPreKeyId: uintOf(f, 6),
    baseKey,
    identityKey,
    registrationId: uintOf(f, 5),
    message,
    inner,
  };
}
