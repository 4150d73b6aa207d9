// Event-loop lag: a timer every 100 ms notes how late it fires; the lag is the worst delay over the
// last second. Exported as gateway_event_loop_lag_seconds and used for back-pressure (limits.ts,
// limits.max_event_loop_lag). The timer is unref'd: it never keeps the process alive.
const TICK_MS = 100;
const WINDOW = 10;

export class LoopLag {
  readonly #samples: number[] = [];
  #expected = 0;
  #timer: NodeJS.Timeout | null = null;

  start(): void {
    if (this.#timer) return;
    this.#expected = performance.now() + TICK_MS;
    this.#timer = setInterval(() => {
      const now = performance.now();
      this.#samples.push(Math.max(0, now - this.#expected));
      if (this.#samples.length > WINDOW) this.#samples.shift();
      this.#expected = now + TICK_MS;
    }, TICK_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** The worst lag over the last second, in milliseconds; counts a tick that is overdue right now. */
  get ms(): number {
    const overdue = this.#timer ? Math.max(0, performance.now() - this.#expected) : 0;
    return Math.max(overdue, ...this.#samples);
  }
}
