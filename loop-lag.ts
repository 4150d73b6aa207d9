// Event-loop lag: a timer every 100 ms notes how late it fires. The worst delay over the last ten
// ticks is exported as gateway_event_loop_lag_seconds; back-pressure (limits.ts,
// limits.max_event_loop_lag) uses the sustained lag, the median of those ticks, so that one stall
// (a GC, a key generation) does not refuse messages while a loop that stays behind does. The timer
// is unref'd: it never keeps the process alive.
const TICK_MS = 100;
const WINDOW = 10;

export class LoopLag {
  readonly #samples: number[] = [];
  /** The samples sorted, kept at each tick (sustainedMs is read on every POST, issue 16). */
  #sorted: number[] = [];
  #expected = 0;
  #timer: NodeJS.Timeout | null = null;

  start(): void {
    if (this.#timer) return;
    this.#expected = performance.now() + TICK_MS;
    this.#timer = setInterval(() => {
      const now = performance.now();
      this.#samples.push(Math.max(0, now - this.#expected));
      if (this.#samples.length > WINDOW) this.#samples.shift();
      this.#sorted = [...this.#samples].sort((a, b) => a - b);
      this.#expected = now + TICK_MS;
    }, TICK_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** The worst lag over the last ten ticks, in milliseconds; counts a tick that is overdue right now. */
  get ms(): number {
    return Math.max(this.#overdue(), ...this.#samples);
  }

  /**
   * The sustained lag in milliseconds: the median of the last ten ticks and the one overdue now.
   * Over the limit only when at least half of them were that late.
   */
  get sustainedMs(): number {
    // The middle one (index floor((n + 1) / 2)) of the n sorted samples and the overdue value o:
    // o itself when it falls between the samples around the middle, else the nearer of those two.
    const s = this.#sorted;
    const m = Math.floor((s.length + 1) / 2);
    const lower = m > 0 ? s[m - 1]! : -Infinity;
    const upper = m < s.length ? s[m]! : Infinity;
    return Math.min(Math.max(this.#overdue(), lower), upper);
  }

  #overdue(): number {
    return this.#timer ? Math.max(0, performance.now() - this.#expected) : 0;
  }
}
