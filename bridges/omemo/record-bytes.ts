// The byte layer of our binary session records (session-codec.ts for the library's sessions,
// legacy-record.ts and omemo2/session-record.ts for our own ratchet's): unsigned varints and
// length-prefixed byte strings, and the Double Ratchet state both OMEMO versions store the same way.
// `what` names the record in the errors a damaged one raises.
import type { RatchetState } from '../ratchet/double-ratchet.js';

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

/** A writer with optional byte strings (a 0/1 flag, then the bytes): our ratchet's session records. */
export class SessionRecordWriter extends RecordWriter {
  opt(x: Uint8Array | null | undefined): void {
    if (!x) this.uint(0);
    else {
      this.uint(1);
      this.bytes(x);
    }
  }
}

/** Reads what SessionRecordWriter writes; byte strings are copied out (the state outlives the record). */
export class SessionRecordReader extends RecordReader {
  bytes(): Buffer {
    return this.copy();
  }
  opt(): Buffer | null {
    return this.uint() === 0 ? null : this.bytes();
  }
}

/**
 * A Double Ratchet state: rk bytes, dhs priv bytes, dhs pub bytes, opt dhr, opt cks, opt ckr, ns,
 * nr, pn, skipped: count x (dh bytes, n, mk bytes), oldest first.
 */
export function writeRatchet(w: SessionRecordWriter, t: RatchetState): void {
  w.bytes(t.rk);
  w.bytes(t.dhs.priv);
  w.bytes(t.dhs.pub);
  w.opt(t.dhr);
  w.opt(t.cks);
  w.opt(t.ckr);
  w.uint(t.ns);
  w.uint(t.nr);
  w.uint(t.pn);
  w.uint(t.skipped.size);
  for (const [k, mk] of t.skipped) {
    const i = k.lastIndexOf(':');
    w.bytes(Buffer.from(k.slice(0, i), 'base64'));
    w.uint(Number(k.slice(i + 1)));
    w.bytes(mk);
  }
}

export function readRatchet(r: SessionRecordReader): RatchetState {
  const rk = r.bytes();
  const dhs = { priv: r.bytes(), pub: r.bytes() };
  const dhr = r.opt();
  const cks = r.opt();
  const ckr = r.opt();
  const ns = r.uint();
  const nr = r.uint();
  const pn = r.uint();
  const skipped = new Map<string, Buffer>();
  for (let j = r.uint(); j > 0; j--) {
    const dh = r.raw().toString('base64');
    const n = r.uint();
    skipped.set(`${dh}:${n}`, r.bytes());
  }
  return { rk, dhs, dhr, cks, ckr, ns, nr, pn, skipped };
}
