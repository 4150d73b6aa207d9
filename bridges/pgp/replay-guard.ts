// Replay protection XEP-0027 lacks: the recipient is not bound into the ciphertext and nothing is
// sequenced, so the same <x xmlns='jabber:x:encrypted'> can be sent again (by a server, from MAM, by a
// third party). We remember the SHA-256 of every accepted message's ciphertext (decoded, so line
// breaks, CRC and base64 variants are one digest; see inbound.ts for which bytes) for the replay
// window: in an LRU for the hot path and in the keystore so that a restart does not reopen the window.
//
// A digest is claimed while its message is being decrypted (two copies arriving together cannot both
// pass) and recorded only once the message was accepted: a forged or tampered copy that fails does
// not burn the digest of the genuine one.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { PRUNE_SLICES, type ReplayStore } from '../../keystore/replay-store.js';

const DAY_MS = 86_400_000;
/** Every digest is looked at by a prune once an hour: one slice of the table each PRUNE_SLICE_MS. */
const PRUNE_SLICE_MS = 3_600_000 / PRUNE_SLICES;

export const payloadDigest = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest();

/** A digest as a key of the in-memory maps: its bytes as a one-byte string (half of hex's length, no encoding work). */
const keyOf = (digest: Buffer): string => digest.toString('latin1');

export class ReplayGuard {
  readonly #store: ReplayStore;
  readonly #protocol: string;
  readonly #now: () => number;
  readonly windowMs: number;
  readonly #recent: LRUCache<string, number>;
  readonly #inFlight = new Set<string>();
  #lastPrune = 0;
  #nextSlice = 0;

  constructor(store: ReplayStore, protocol: string, windowDays: number, now: () => number, cacheSize = 50_000) {
    this.#store = store;
    this.#protocol = protocol;
    this.#now = now;
    // At least one day: a zero window would make the guard useless without saying so.
    this.windowMs = Math.max(1, windowDays) * DAY_MS;
    this.#recent = new LRUCache<string, number>({ max: cacheSize });
  }

  /** Digests held in memory (the rest are in the keystore). */
  get cached(): number {
    return this.#recent.size;
  }

  /** Claims `digest` for a message about to be decrypted; false if it was seen or is in flight. */
  claim(digest: Buffer): boolean {
    const k = keyOf(digest);
    if (this.#inFlight.has(k)) return false;
    const seen = this.#recent.get(k);
    if (seen !== undefined && seen >= this.#now() - this.windowMs) return false;
    if (seen === undefined && this.#store.has(this.#protocol, digest)) {
      this.#recent.set(k, this.#now());
      return false;
    }
    this.#inFlight.add(k);
    return true;
  }

  /** The claimed message was accepted: remember it for the window. */
  commit(digest: Buffer): void {
    const k = keyOf(digest);
    this.#inFlight.delete(k);
    const now = this.#now();
    this.#recent.set(k, now);
    this.#store.add(this.#protocol, digest, now);
    if (now - this.#lastPrune > PRUNE_SLICE_MS) {
      this.#lastPrune = now;
      this.#store.prune(this.#protocol, now - this.windowMs, this.#nextSlice);
      this.#nextSlice = (this.#nextSlice + 1) % PRUNE_SLICES;
    }
  }

  /** The claimed message was refused: let a later copy be tried. */
  release(digest: Buffer): void {
    this.#inFlight.delete(keyOf(digest));
  }

  /** Forgets digests older than the window (the whole table); returns how many rows went. */
  prune(): number {
    const now = this.#now();
    this.#lastPrune = now;
    return this.#store.prune(this.#protocol, now - this.windowMs);
  }
}
