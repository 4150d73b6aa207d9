// A token bucket per key (bot): `perSecond` sustained, `burst` at most. take() says how long to wait
// when empty, for the Retry-After header.
export class TokenBuckets {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  /** Returns 0 when a token was taken, else the seconds until one is available. */
  take(key: string, perSecond: number, burst: number, now = Date.now()): number {
    let b = this.#buckets.get(key);
    if (!b) this.#buckets.set(key, (b = { tokens: burst, at: now }));
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return (1 - b.tokens) / perSecond;
  }
}
