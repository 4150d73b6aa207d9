// Minimal protobuf (proto2) framing for the few OMEMO messages: varint and length-delimited fields
// only. Decoding is strict about structure (truncation, wire types, over-long varints) and skips
// unknown fields of those two kinds, as protobuf readers do.

export type Field = { no: number; value: number | Buffer };

function varint(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError('protobuf varint out of range');
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

/** Encodes fields in the given order (callers list them by field number, as protobuf writers do). */
export function encode(fields: ReadonlyArray<Field | null>): Buffer {
  const parts: Buffer[] = [];
  for (const f of fields) {
    if (!f) continue;
    if (typeof f.value === 'number') parts.push(varint(f.no << 3), varint(f.value));
    else parts.push(varint((f.no << 3) | 2), varint(f.value.length), f.value);
  }
  return Buffer.concat(parts);
}

/** Decodes into field number -> last value (proto2 semantics for non-repeated fields); null if malformed. */
export function decode(buf: Buffer): Map<number, number | Buffer> | null {
  const out = new Map<number, number | Buffer>();
  let i = 0;
  const readVarint = (): number | null => {
    let n = 0;
    let mul = 1;
    for (let k = 0; k < 10; k++) {
      if (i >= buf.length) return null;
      const b = buf[i++]!;
      n += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return n <= Number.MAX_SAFE_INTEGER ? n : null;
      mul *= 128;
    }
    return null;
  };
  while (i < buf.length) {
    const tag = readVarint();
    if (tag === null) return null;
    const no = Math.floor(tag / 8);
    const type = tag % 8;
    if (no === 0) return null;
    if (type === 0) {
      const v = readVarint();
      if (v === null) return null;
      out.set(no, v);
    } else if (type === 2) {
      const len = readVarint();
      if (len === null || i + len > buf.length) return null;
      out.set(no, buf.subarray(i, i + len));
      i += len;
    } else {
      return null;
    }
  }
  return out;
}

export const uint32 = (m: Map<number, number | Buffer>, no: number): number | undefined => {
  const v = m.get(no);
  return typeof v === 'number' && v <= 0xffffffff ? v : undefined;
};

export const bytes = (m: Map<number, number | Buffer>, no: number): Buffer | undefined => {
  const v = m.get(no);
  return Buffer.isBuffer(v) ? v : undefined;
};
