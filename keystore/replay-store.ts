// Digests of ciphertexts already accepted, per protocol, for protocols whose wire format cannot tell a
// replay from a new message (XEP-0027). Digests are SHA-256 of public ciphertext: nothing to seal.
// The table comes from keystore/migrations.ts.
import type { Keystore } from './keystore.js';

export class ReplayStore {
  readonly #has;
  readonly #add;
  readonly #prune;
  readonly #count;

  constructor(ks: Keystore) {
    const db = ks.db;
    this.#has = db.prepare<[string, Buffer], { one: number }>('SELECT 1 AS one FROM seen_ciphertexts WHERE protocol = ? AND digest = ?');
    this.#add = db.prepare('INSERT OR IGNORE INTO seen_ciphertexts (protocol, digest, seen_at) VALUES (?, ?, ?)');
    this.#prune = db.prepare('DELETE FROM seen_ciphertexts WHERE protocol = ? AND seen_at < ?');
    this.#count = db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM seen_ciphertexts WHERE protocol = ?');
  }

  has(protocol: string, digest: Buffer): boolean {
    return this.#has.get(protocol, digest) !== undefined;
  }

  /** Records a digest; false if it was there already. */
  add(protocol: string, digest: Buffer, seenAt: number): boolean {
    return this.#add.run(protocol, digest, seenAt).changes > 0;
  }

  /** Forgets digests seen before `olderThan` (ms since epoch); returns how many. */
  prune(protocol: string, olderThan: number): number {
    return this.#prune.run(protocol, olderThan).changes;
  }

  count(protocol: string): number {
    return this.#count.get(protocol)!.n;
  }
}
