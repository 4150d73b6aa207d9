// A worker for durable queues whose items form lines by key (a bot and a recipient; a bot and a
// sender): items of one line go strictly in order, one at a time, while different lines proceed
// concurrently up to a limit. The loop sleeps until the earliest retry time or until kick().
// kick(key) (one new item) looks at that line alone, through nextInLine: a full rescan of the pending
// items per new item made the scan O(backlog) per message (issue 16: 8% of the gateway's CPU).
// A line the worker has seen empty (nextInLine found nothing) stays known while every item added to
// it comes through kick(key, item): an idle line starts with that item at once, a busy one takes it
// next from memory, with no read of the queue either way (issue 16). A retry, a failure, a stop or
// any kick() without an item makes the worker forget what it knew and read the queue again.
import type { Logger } from 'pino';

/** Lines whose contents are remembered at most (then forgotten: the next item of each is read from the queue). */
const MAX_KNOWN_LINES = 10000;
/** Items remembered for one busy line at most (past that it is read from the queue). */
const MAX_KNOWN_ITEMS = 1000;

export interface QueuedItem<T> {
  key: string;
  /** When it may be attempted (ms since epoch). */
  dueAt: number;
  item: T;
}

export interface KeyedWorkerOptions<T> {
  /** Pending items oldest first; only the first of each key is considered (the head of its line). */
  pending: () => Array<QueuedItem<T>>;
  /** Handles one item; resolves `false` when the item is still pending (a retry later), else it is done. */
  process: (item: T) => Promise<boolean | void>;
  /**
   * The next pending item of one line, looked up directly (an indexed query): lets a line with a
   * backlog go on without a rescan of every pending item after each one.
   */
  nextInLine?: (key: string) => QueuedItem<T> | undefined;
  /** Whether work may be done now (e.g. the component is connected). */
  ready?: () => boolean;
  concurrency: number;
  /** Longest sleep with nothing due (a safety net; kick() is the normal wake-up). */
  idleMs?: number;
  log: Logger;
  name: string;
}

export class KeyedWorker<T> {
  readonly #o: KeyedWorkerOptions<T>;
  readonly #busy = new Set<string>();
  readonly #inflight = new Set<Promise<void>>();
  #running = false;
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  /** A due head was left waiting because every slot was busy: the next free slot rescans everything. */
  #starved = false;
  /** Lines whose pending items (beyond the one being processed) are exactly these, in order. */
  readonly #known = new Map<string, Array<QueuedItem<T>>>();

  constructor(o: KeyedWorkerOptions<T>) {
    this.#o = o;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /**
   * New work, or the conditions changed: look again now. With `key`, only that line changed (an item
   * was added to it): its head is looked up directly, unless the line is already being drained (it
   * reaches the new item itself) or no slot is free.
   */
  kick(key?: string, added?: QueuedItem<T>): void {
    const nextInLine = this.#o.nextInLine;
    if (key === undefined || !nextInLine) {
      // Items may have come by other ways: no line is known any more.
      this.#known.clear();
      this.#wake?.();
      return;
    }
    const known = this.#known.get(key);
    if (known && added && added.key === key && this.#running && (this.#o.ready?.() ?? true)) {
      // A busy line takes it after what it has; an idle one known empty starts with it now.
      if (this.#busy.has(key) && known.length < MAX_KNOWN_ITEMS) {
        known.push(added);
        return;
      }
      if (!this.#busy.has(key) && known.length === 0 && this.#busy.size < this.#o.concurrency && added.dueAt <= Date.now()) {
        this.#startLine(added);
        return;
      }
    }
    this.#known.delete(key);
    if (!this.#running || this.#busy.has(key) || !(this.#o.ready?.() ?? true)) return;
    if (this.#busy.size >= this.#o.concurrency) {
      this.#starved = true;
      return;
    }
    let q: QueuedItem<T> | undefined;
    try {
      q = nextInLine(key);
    } catch (e) {
      this.#o.log.error({ err: e, worker: this.#o.name }, 'queue read failed');
      this.#wake?.();
      return;
    }
    if (!q) return;
    // Not due (a retry waits at its head): the loop's next rescan must know when it is due.
    if (q.dueAt > Date.now()) this.#wake?.();
    else this.#startLine(q);
  }

  /** Stops taking work and waits for what is in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    this.kick();
    await this.#loop;
    await Promise.allSettled([...this.#inflight]);
  }

  async #run(): Promise<void> {
    while (this.#running) {
      let nextAt = Infinity;
      if (this.#o.ready?.() ?? true) {
        try {
          nextAt = this.#startDue();
        } catch (e) {
          this.#o.log.error({ err: e, worker: this.#o.name }, 'queue read failed');
          nextAt = Date.now() + 1000;
        }
      }
      if (!this.#running) break;
      const idle = this.#o.idleMs ?? 30000;
      const wait = Number.isFinite(nextAt) ? Math.min(idle, Math.max(5, nextAt - Date.now())) : idle;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  /** Starts every due head of a line that is not busy; returns when to look again. */
  #startDue(): number {
    const now = Date.now();
    let nextAt = Infinity;
    const seen = new Set<string>();
    for (const q of this.#o.pending()) {
      if (seen.has(q.key)) continue;
      seen.add(q.key);
      if (this.#busy.has(q.key)) continue;
      if (q.dueAt > now) {
        nextAt = Math.min(nextAt, q.dueAt);
        continue;
      }
      if (this.#busy.size >= this.#o.concurrency) {
        this.#starved = true;
        return now + 5;
      }
      this.#known.delete(q.key);
      this.#startLine(q);
    }
    return nextAt;
  }

  #startLine(q: QueuedItem<T>): void {
    this.#busy.add(q.key);
    const p = this.#drainLine(q).finally(() => {
      this.#busy.delete(q.key);
      this.#inflight.delete(p);
      if (this.#starved) {
        this.#starved = false;
        this.kick();
      } else if (this.#known.get(q.key)?.length !== 0) {
        // An item added while the line finished (remembered or not), or a retry now at its head.
        this.#known.delete(q.key);
        this.kick(q.key);
      }
    });
    this.#inflight.add(p);
  }

  /** Processes `first`, then the rest of its line while items are due (the line stays busy). */
  async #drainLine(first: QueuedItem<T>): Promise<void> {
    let q: QueuedItem<T> | undefined = first;
    const key = first.key;
    while (q) {
      try {
        if ((await this.#o.process(q.item)) === false) this.#known.delete(key);
      } catch (e) {
        this.#known.delete(key);
        this.#o.log.error({ err: e, worker: this.#o.name }, 'queue item failed');
        return;
      }
      if (!this.#running || !this.#o.nextInLine || !(this.#o.ready?.() ?? true)) {
        this.#known.delete(key);
        return;
      }
      const known = this.#known.get(key);
      if (known) {
        q = known.shift();
        continue;
      }
      const next = this.#o.nextInLine(key);
      if (!next) {
        if (this.#known.size >= MAX_KNOWN_LINES) this.#known.clear();
        this.#known.set(key, []);
      }
      q = next && next.dueAt <= Date.now() ? next : undefined;
    }
  }
}
