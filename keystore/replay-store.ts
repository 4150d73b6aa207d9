// Digests of ciphertexts already accepted, per protocol, for protocols whose wire format cannot tell a
// replay from a new message (XEP-0027) and as OMEMO's guard across restarts. Digests are SHA-256 of
// public ciphertext: nothing to seal. The table comes from keystore/migrations.ts: one B-tree keyed
// by (protocol, digest), no index on the time (one B-tree update per accepted message).
//
// Speed: most digests looked up are new (every message is looked up once before it is decrypted), so
// a miss must not cost a SQLite query. A Bloom filter per (database, protocol) holds every digest in
// the table: built from the table on first use, then every add through any ReplayStore on that
// database sets its bits. "Not in the filter" is certain (no query); "maybe" asks SQLite, so a false
// positive costs one query and nothing else. Pruned digests stay in the filter (false positives) until
// it is rebuilt, after a prune, when it has filled up.
import { createHash } from 'node:crypto';
import type { Keystore } from './keystore.js';
import type { Db } from './keystore.js';

/** Pruning walks the table in this many digest ranges (by first byte), one statement each. */
export const PRUNE_SLICES = 16;
const HASHES = 7;
const BITS_PER_ENTRY = 10; // with 7 hashes: ~1% false positives at capacity
const MIN_CAPACITY = 1 << 16;

class DigestFilter {
  readonly #bits: Uint32Array;
  readonly #mask: number;
  /** Entries added (built ones included): past `capacity`, false positives grow. */
  entries = 0;
  readonly capacity: number;

  constructor(capacity: number) {
    let m = 1024;
    while (m < capacity * BITS_PER_ENTRY) m *= 2;
    this.capacity = capacity;
    this.#bits = new Uint32Array(m / 32);
    this.#mask = m - 1;
  }

  /** Bit positions: SHA-256 digests are uniform already; anything shorter is hashed first. */
  static #words(digest: Buffer): Buffer {
    return digest.length >= 4 * HASHES ? digest : createHash('sha256').update(digest).digest();
  }

  add(digest: Buffer): void {
    const w = DigestFilter.#words(digest);
    for (let i = 0; i < HASHES; i++) {
      const b = w.readUInt32LE(4 * i) & this.#mask;
      this.#bits[b >>> 5]! |= 1 << (b & 31);
    }
    this.entries++;
  }

  mayHave(digest: Buffer): boolean {
    const w = DigestFilter.#words(digest);
    for (let i = 0; i < HASHES; i++) {
      const b = w.readUInt32LE(4 * i) & this.#mask;
      if ((this.#bits[b >>> 5]! & (1 << (b & 31))) === 0) return false;
    }
    return true;
  }
}

/** One filter per database and protocol, shared by every ReplayStore on that database. */
const filters = new WeakMap<Db, Map<string, DigestFilter>>();

export class ReplayStore {
  readonly #db: Db;
  readonly #has;
  readonly #add;
  readonly #pruneSlice;
  readonly #pruneLast;
  readonly #count;
  readonly #digests;

  constructor(ks: Keystore) {
    const db = ks.db;
    this.#db = db;
    this.#has = db.prepare<[string, Buffer], { one: number }>('SELECT 1 AS one FROM seen_ciphertexts WHERE protocol = ? AND digest = ?');
    this.#add = db.prepare('INSERT OR IGNORE INTO seen_ciphertexts (protocol, digest, seen_at) VALUES (?, ?, ?)');
    this.#pruneSlice = db.prepare('DELETE FROM seen_ciphertexts WHERE protocol = ? AND digest >= ? AND digest < ? AND seen_at < ?');
    this.#pruneLast = db.prepare('DELETE FROM seen_ciphertexts WHERE protocol = ? AND digest >= ? AND seen_at < ?');
    this.#count = db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM seen_ciphertexts WHERE protocol = ?');
    this.#digests = db.prepare<[string], Buffer>('SELECT digest FROM seen_ciphertexts WHERE protocol = ?').pluck();
  }

  #filter(protocol: string): DigestFilter {
    let byProtocol = filters.get(this.#db);
    if (!byProtocol) filters.set(this.#db, (byProtocol = new Map()));
    return byProtocol.get(protocol) ?? this.#build(protocol, byProtocol);
  }

  #build(protocol: string, byProtocol: Map<string, DigestFilter>): DigestFilter {
    const n = this.count(protocol);
    const f = new DigestFilter(Math.max(MIN_CAPACITY, 2 * n));
    for (const d of this.#digests.iterate(protocol)) f.add(d);
    byProtocol.set(protocol, f);
    return f;
  }

  has(protocol: string, digest: Buffer): boolean {
    if (!this.#filter(protocol).mayHave(digest)) return false;
    return this.#has.get(protocol, digest) !== undefined;
  }

  /** Records a digest; false if it was there already. */
  add(protocol: string, digest: Buffer, seenAt: number): boolean {
    const f = this.#filter(protocol);
    const added = this.#add.run(protocol, digest, seenAt).changes > 0;
    // Set even if the surrounding transaction rolls back: a false positive, never a false negative.
    if (added) f.add(digest);
    return added;
  }

  /**
   * Forgets digests seen before `olderThan` (ms since epoch) in one slice of the table (0 ..
   * PRUNE_SLICES - 1, by the digest's first byte), or in all of them; returns how many went.
   */
  prune(protocol: string, olderThan: number, slice?: number): number {
    let n = 0;
    const from = slice ?? 0;
    const to = slice === undefined ? PRUNE_SLICES : slice + 1;
    const step = 256 / PRUNE_SLICES;
    for (let s = from; s < to; s++) {
      const lo = s === 0 ? Buffer.alloc(0) : Buffer.of(s * step);
      n += s === PRUNE_SLICES - 1 ? this.#pruneLast.run(protocol, lo, olderThan).changes : this.#pruneSlice.run(protocol, lo, Buffer.of((s + 1) * step), olderThan).changes;
    }
    // A filter grown past its capacity is made again from what is left (fewer false positives).
    const f = filters.get(this.#db)?.get(protocol);
    if (f && f.entries > f.capacity) this.#build(protocol, filters.get(this.#db)!);
    return n;
  }

  count(protocol: string): number {
    return this.#count.get(protocol)!.n;
  }
}
