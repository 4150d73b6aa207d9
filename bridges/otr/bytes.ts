// OTR's binary encodings (OTR v3 spec, "Data types"): BYTE, SHORT, INT (big-endian), MPI (4-byte
// length + minimal big-endian magnitude), DATA (4-byte length + bytes), CTR (8 bytes), MAC (20).
// A Reader throws OtrParseError on short or malformed input; callers turn it into a value.

export class OtrParseError extends Error {
  constructor(what: string) {
    super(`malformed OTR message: ${what}`);
    this.name = 'OtrParseError';
  }
}

/** Largest MPI or DATA we accept: a 3072-bit value with room, or a 64 KiB message plus TLVs. */
const MAX_FIELD = 256 * 1024;

export const bigToBytes = (n: bigint): Buffer => {
  if (n < 0n) throw new RangeError('negative');
  if (n === 0n) return Buffer.alloc(0);
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
};

export const bytesToBig = (b: Uint8Array): bigint => (b.length === 0 ? 0n : BigInt(`0x${Buffer.from(b).toString('hex')}`));

/** A big-endian integer padded (left) to `len` bytes. */
export const bigToFixed = (n: bigint, len: number): Buffer => {
  const b = bigToBytes(n);
  if (b.length > len) throw new RangeError('value too large');
  return Buffer.concat([Buffer.alloc(len - b.length), b]);
};

export class Writer {
  readonly #parts: Buffer[] = [];

  byte(v: number): this {
    this.#parts.push(Buffer.from([v & 0xff]));
    return this;
  }

  short(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.#parts.push(b);
    return this;
  }

  int(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.#parts.push(b);
    return this;
  }

  mpi(n: bigint): this {
    return this.data(bigToBytes(n));
  }

  data(b: Uint8Array): this {
    this.int(b.length);
    this.#parts.push(Buffer.from(b));
    return this;
  }

  raw(b: Uint8Array): this {
    this.#parts.push(Buffer.from(b));
    return this;
  }

  bytes(): Buffer {
    return Buffer.concat(this.#parts);
  }
}

export class Reader {
  readonly #b: Buffer;
  #o = 0;

  constructor(b: Buffer) {
    this.#b = b;
  }

  get offset(): number {
    return this.#o;
  }

  get remaining(): number {
    return this.#b.length - this.#o;
  }

  #take(n: number, what: string): Buffer {
    if (n < 0 || this.#o + n > this.#b.length) throw new OtrParseError(`${what} truncated`);
    const out = this.#b.subarray(this.#o, this.#o + n);
    this.#o += n;
    return out;
  }

  byte(what = 'byte'): number {
    return this.#take(1, what)[0]!;
  }

  short(what = 'short'): number {
    return this.#take(2, what).readUInt16BE();
  }

  int(what = 'int'): number {
    return this.#take(4, what).readUInt32BE();
  }

  data(what = 'data'): Buffer {
    const len = this.int(what);
    if (len > MAX_FIELD) throw new OtrParseError(`${what} too long`);
    return Buffer.from(this.#take(len, what));
  }

  mpi(what = 'mpi'): bigint {
    const b = this.data(what);
    return bytesToBig(b);
  }

  fixed(n: number, what = 'field'): Buffer {
    return Buffer.from(this.#take(n, what));
  }

  /** The bytes read so far from `start`. */
  since(start: number): Buffer {
    return Buffer.from(this.#b.subarray(start, this.#o));
  }

  end(what = 'message'): void {
    if (this.remaining !== 0) throw new OtrParseError(`${what} has trailing bytes`);
  }
}
