// The identity limits (limits.ts): a new hosted JID's identity is created only within
// limits.identities_per_requester_per_minute (per sender bare JID or API token),
// limits.identities_per_minute (all together) and bridge.max_hosted_identities. Engines ask admit()
// just before they would generate keys for a JID they hold nothing for; the requester is whoever
// the current stanza or API call comes from, carried by AsyncLocalStorage (router and HTTP route
// run their handlers inside asRequester()). Bots are configured, so always admitted.
import { LRUCache } from 'lru-cache';
import type { Keystore } from '../keystore/keystore.js';
import type { Metrics } from '../http/metrics.js';
import { KeyedBuckets, LimitError, currentRequester, perMinute, type Limits } from '../limits.js';

export class IdentityGate {
  readonly #limits: Limits;
  readonly #metrics: Metrics;
  readonly #exempt: ReadonlySet<string>;
  readonly #hasAny: (local: string) => boolean;
  /** Hosted JIDs known to have (or to be getting) an identity: a miss only costs a keystore lookup. */
  readonly #known: LRUCache<string, true>;
  readonly #perRequester: KeyedBuckets;
  readonly #global: KeyedBuckets;
  /** Requesters told of a refusal, and until when that refusal holds: refusals meanwhile are silent. */
  readonly #told: LRUCache<string, number>;
  #hosted: number;
  readonly #now: () => number;

  constructor(d: { limits: Limits; metrics: Metrics; keystore: Keystore; protocols: readonly string[]; exempt: Iterable<string>; now?: () => number }) {
    this.#limits = d.limits;
    this.#metrics = d.metrics;
    this.#exempt = new Set(d.exempt);
    this.#now = d.now ?? Date.now;
    const placeholders = d.protocols.map(() => '?').join(', ');
    // Both lookups go through the kv primary key (protocol, owner, kind, key).
    const one = d.keystore.db.prepare<string[], { x: number }>(`SELECT 1 AS x FROM kv WHERE protocol IN (${placeholders}) AND owner = ? AND kind = 'identity' LIMIT 1`);
    this.#hasAny = (local) => one.get(...d.protocols, local) !== undefined;
    const count = d.keystore.db.prepare<string[], { n: number }>(`SELECT count(DISTINCT owner) AS n FROM kv WHERE protocol IN (${placeholders}) AND kind = 'identity'`);
    this.#hosted = count.get(...d.protocols)?.n ?? 0;
    this.#known = new LRUCache({ max: d.limits.peer_cache_entries });
    this.#told = new LRUCache({ max: d.limits.peer_cache_entries });
    this.#perRequester = perMinute(d.limits.identities_per_requester_per_minute, d.limits.peer_cache_entries);
    this.#global = perMinute(d.limits.identities_per_minute, 1);
    d.metrics.onCollect(() => d.metrics.hostedIdentities.set(this.#hosted));
    d.metrics.registerCache('identity_gate_known', () => this.#known.size);
    d.metrics.registerCache('identity_gate_requesters', () => this.#perRequester.size);
  }

  /** Hosted JIDs with an identity (as counted at startup plus those admitted since). */
  get hosted(): number {
    return this.#hosted;
  }

  /** Throws a LimitError when a new identity for `local` may not be created now. */
  admit(local: string): void {
    if (this.#known.has(local)) return;
    if (this.#hasAny(local)) {
      this.#known.set(local, true);
      return;
    }
    if (this.#exempt.has(local)) {
      // Bots are configured: always admitted, and counted.
      this.#known.set(local, true);
      this.#hosted++;
      return;
    }
    const now = this.#now();
    const requester = currentRequester();
    if (this.#hosted >= this.#limits.max_hosted_identities) {
      this.#metrics.limited.inc({ limit: 'max_hosted_identities' });
      throw this.#refusal(requester, now, new LimitError('identity_limit_reached', 'max_hosted_identities', null));
    }
    const waitRequester = requester === undefined ? 0 : this.#perRequester.wait(requester, now);
    if (waitRequester > 0) {
      this.#metrics.limited.inc({ limit: 'identities_per_requester' });
      throw this.#refusal(
        requester,
        now,
        new LimitError('identity_rate_limited', 'identities_per_requester_per_minute', waitRequester, 'You have caused too many new gateway identities in the last minute; retry later.'),
      );
    }
    const waitGlobal = this.#global.wait('all', now);
    if (waitGlobal > 0) {
      this.#metrics.limited.inc({ limit: 'identities_per_minute' });
      throw this.#refusal(requester, now, new LimitError('identity_rate_limited', 'identities_per_minute', waitGlobal));
    }
    if (requester !== undefined) this.#perRequester.take(requester, now);
    this.#global.take('all', now);
    this.#known.set(local, true);
    this.#hosted++;
  }

  /**
   * Marks `e` silent when `requester` was already told of a refusal that still holds; else this is
   * the one they are told of, holding until its Retry-After (a minute for the hosted maximum).
   */
  #refusal(requester: string | undefined, now: number, e: LimitError): LimitError {
    const key = requester ?? '';
    const until = this.#told.get(key);
    if (until !== undefined && until > now) e.silent = true;
    else this.#told.set(key, now + (e.retryAfterSeconds ?? 60) * 1000);
    return e;
  }
}
