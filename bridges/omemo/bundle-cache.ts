// The bundle each OMEMO version last built per hosted JID (legacy keyring.ts and omemo2/keyring.ts),
// kept with the counters of the row it was built from (next one-time prekey id, current signed
// prekey id). A consumed prekey updates it in place instead of re-reading every prekey row (a PreKey
// message would otherwise unseal all of them, used ones in their grace period too). A bundle whose
// counters no longer match the row (changed elsewhere: another instance, a rotation) is read again.
import { LRUCache } from 'lru-cache';

export interface BundleCounters {
  nextPreKeyId: number;
  signedPreKeyId: number;
}

export class BundleCache<B extends { preKeys: Array<{ id: number }> }> {
  readonly #m: LRUCache<string, { bundle: B; counters: BundleCounters }>;

  constructor(max: number) {
    this.#m = new LRUCache({ max });
  }

  /** The cached bundle if it was built from a row with these counters. */
  get(local: string, row: BundleCounters): B | undefined {
    const c = this.#m.get(local);
    return c && c.counters.nextPreKeyId === row.nextPreKeyId && c.counters.signedPreKeyId === row.signedPreKeyId ? c.bundle : undefined;
  }

  set(local: string, bundle: B, row: BundleCounters): void {
    this.#m.set(local, { bundle, counters: { nextPreKeyId: row.nextPreKeyId, signedPreKeyId: row.signedPreKeyId } });
  }

  /**
   * Prekey `used` was consumed and `fresh` added under `before.nextPreKeyId` (the row's counters
   * before that change). The new id is the highest: appended, the list stays in id order.
   */
  replaced(local: string, before: BundleCounters, used: number, fresh: B['preKeys'][number]): void {
    const bundle = this.get(local, before);
    if (!bundle) return;
    const preKeys = [...bundle.preKeys.filter((p) => p.id !== used), fresh];
    this.set(local, { ...bundle, preKeys }, { nextPreKeyId: before.nextPreKeyId + 1, signedPreKeyId: before.signedPreKeyId });
  }

  clear(): void {
    this.#m.clear();
  }
}
