// The byte layer of our binary session records (session-codec.ts for the library's sessions,
// legacy-record.ts for our own ratchet's): unsigned varints and length-prefixed byte strings.
// `what` names the record in the errors a damaged one raises.

export class RecordWriter {
  b: Buffer;
  n = 0;
  constructor(
    readonly what: string,
    size = 512,
  ) {
    this.b = Buffer.allocUnsafe(size);
  }
  #room(k: number): void {
    if (this.n + k <= this.b.length) return;
    const nb = Buffer.allocUnsafe(Math.max(this.b.length * 2, this.n + k));
    this.b.copy(nb, 0, 0, this.n);
    this.b = nb;
  }
  uint(v: number): void {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${this.what}: bad integer ${v}`);
    this.#room(8);
    while (v >= 0x80) {
      this.b[this.n++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.b[this.n++] = v;
  }
  bytes(x: Uint8Array): void {
    this.uint(x.length);
    this.#room(x.length);
    this.b.set(x, this.n);
    this.n += x.length;
  }
  /** A copy that owns exactly its bytes (the session store keeps it as the rollback state). */
  done(): Buffer {
    return Buffer.from(this.b.subarray(0, this.n));
  }
}

export class RecordReader {
  n = 0;
  constructor(
    readonly b: Buffer,
    readonly what: string,
  ) {}
  uint(): number {
    let v = 0;
    let m = 1;
    for (let i = 0; i < 8; i++) {
      if (this.n >= this.b.length) throw new Error(`${this.what}: truncated`);
      const x = this.b[this.n++]!;
      v += (x & 0x7f) * m;
      if ((x & 0x80) === 0) return v;
      m *= 0x80;
    }
    throw new Error(`${this.what}: varint too long`);
  }
  /** The next byte string, as a view into the record. */
  raw(): Buffer {
    const len = this.uint();
    if (this.n + len > this.b.length) throw new Error(`${this.what}: truncated`);
    const out = this.b.subarray(this.n, this.n + len);
    this.n += len;
    return out;
  }
  /** The next byte string, copied out of the record. */
  copy(): Buffer {
    return Buffer.from(this.raw());
  }
}
