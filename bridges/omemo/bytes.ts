// Conversions between the ArrayBuffers of stored key pairs and libsignal-era session records and
// node Buffers, without copies where node already hands out an exactly sized buffer.

/** A Buffer view of any binary value, without copying. */
export function buf(x: ArrayBuffer | ArrayBufferView): Buffer {
  if (Buffer.isBuffer(x)) return x;
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  return Buffer.from(x);
}

/**
 * An ArrayBuffer holding exactly these bytes. Reuses the backing store when the view covers all of it;
 * copies otherwise (small node Buffers often live in a shared 8 KB pool that must not leak out).
 */
export function ab(x: Uint8Array): ArrayBuffer {
  const b = x.buffer as ArrayBuffer;
  if (x.byteOffset === 0 && x.byteLength === b.byteLength) return b;
  return b.slice(x.byteOffset, x.byteOffset + x.byteLength);
}

export const b64 = (x: ArrayBuffer | ArrayBufferView): string => buf(x).toString('base64');

/** Decodes base64 into a fresh ArrayBuffer. */
export const fromB64 = (s: string): ArrayBuffer => ab(Buffer.from(s, 'base64'));

export const hex = (x: ArrayBuffer | ArrayBufferView): string => buf(x).toString('hex');
