// Inbound stanzas wait here between the socket and the router. Handlers are started a few at a time,
// with a turn of the event loop (setImmediate) between slices, and at most MAX_RUNNING at once:
// most of a handler's work is synchronous (SQLite, sealing, key generation), and thousands started
// from one socket read would run back to back in one microtask drain, starving the socket itself,
// so the server's keepalive answers (and everyone else's stanzas) would wait behind a flood. Past
// limits.max_inbound_queue waiting stanzas, new ones are dropped (an iq gets resource-constraint).
// Urgent stanzas (pings: their round trip is how servers and monitors judge the gateway alive) go
// ahead of everything waiting. While `blocked` says so (the server has not read what the gateway
// wrote: output-pacer.ts `behind`), no new handler starts, urgent ones aside: answers made faster
// than the server reads them would only wait in its receive queue, with every pong behind them.
// The owner calls kick() when that may have changed; the queue also looks again every RECHECK_MS.
import type Element from 'ltx/lib/Element.js';

const MAX_RUNNING = 64;
const SLICE = 16;
const RECHECK_MS = 250;

export interface InboundQueueDeps {
  handle: (el: Element) => Promise<void>;
  /** Most stanzas waiting (limits.max_inbound_queue). */
  maxQueued: number;
  /** A stanza dropped because the queue is full. */
  onDrop: (el: Element) => void;
  /** Handled before anything else waiting (pings). */
  urgent?: (el: Element) => boolean;
  /** No new (non-urgent) handler starts while this says true; kick() when it may have changed. */
  blocked?: () => boolean;
}

export class InboundQueue {
  readonly #d: InboundQueueDeps;
  readonly #queue: Element[] = [];
  readonly #urgent: Element[] = [];
  #head = 0;
  #running = 0;
  #scheduled = false;
  /** Waiting for kick() (or the recheck timer) because `blocked` said so. */
  #recheck: NodeJS.Timeout | null = null;
  #idleWaiters: Array<() => void> = [];

  constructor(d: InboundQueueDeps) {
    this.#d = d;
  }

  /** Stanzas waiting or being handled. */
  get size(): number {
    return this.#queue.length - this.#head + this.#urgent.length + this.#running;
  }

  push(el: Element): void {
    if (this.#d.urgent?.(el) && this.#urgent.length < SLICE * 4) {
      this.#urgent.push(el);
      this.#schedule();
      return;
    }
    if (this.#queue.length - this.#head >= this.#d.maxQueued) {
      this.#d.onDrop(el);
      return;
    }
    this.#queue.push(el);
    this.#schedule();
  }

  /** Whether stanzas wait because `blocked` said so. */
  get blocked(): boolean {
    return this.#recheck !== null;
  }

  /** `blocked` may have changed: start what may start. */
  kick(): void {
    if (!this.#recheck) return;
    clearTimeout(this.#recheck);
    this.#recheck = null;
    this.#schedule();
  }

  /** Resolves once nothing is waiting or running. */
  drain(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise((r) => this.#idleWaiters.push(r));
  }

  #schedule(): void {
    if (this.#scheduled || (this.#urgent.length === 0 && (this.#recheck !== null || this.#running >= MAX_RUNNING || this.#head >= this.#queue.length))) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      // Urgent ones first, and not counted against the slice, the running bound or `blocked`.
      for (const el of this.#urgent.splice(0)) this.#start(el);
      if (this.#recheck !== null) return; // blocked: kick() schedules again
      if (this.#head < this.#queue.length && this.#running < MAX_RUNNING && this.#d.blocked?.()) {
        this.#recheck = setTimeout(() => this.kick(), RECHECK_MS);
        this.#recheck.unref();
        return;
      }
      for (let n = 0; n < SLICE && this.#running < MAX_RUNNING && this.#head < this.#queue.length; n++) this.#start(this.#queue[this.#head++]!);
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue.splice(0, this.#head);
        this.#head = 0;
      }
      this.#schedule();
    });
  }

  #start(el: Element): void {
    this.#running++;
    const done = () => {
      this.#running--;
      if (this.size === 0) for (const w of this.#idleWaiters.splice(0)) w();
      else this.#schedule();
    };
    // handle() never rejects (the router turns every failure into a reply or a log line).
    this.#d.handle(el).then(done, done);
  }
}
