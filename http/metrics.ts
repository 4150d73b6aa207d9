// Every Prometheus metric of the gateway, owned by one object on its own Registry (no global state,
// so tests can build many). Collect-time gauges read their value from a callback when scraped.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type LabelValues } from 'prom-client';

// prom-client hashes and validates the labels on every inc()/observe(), through a labels() child
// too. The per-message metrics are CachedCounter/CachedHistogram: one child per label set, made on
// first use, that adds straight to the value prom-client keeps for that set (the entry of its
// hashMap, found once by the labels object prom-client stores), so a message costs one Map lookup
// (none for a child kept by the caller) and no label hashing or validation. The first use of a
// label set, an invalid value, and the first use after reset()/remove() go through prom-client
// itself (its errors, its entries); names, labels and /metrics output are prom-client's.

/** Label sets cached per metric; beyond (a label fed by input), a label set is still counted, uncached. */
const MAX_CHILDREN = 1000;

type Entry = { labels: object };
/** The one internal a cached child touches: prom-client 15 keeps one entry per label set in `hashMap`. */
type WithEntries<E> = { hashMap: Record<string, E>; labelNames: readonly string[] };

/**
 * The entry prom-client keeps for this label set: the one holding this very labels object (it
 * stores the object it was given), else one with equal labels (made before the child, as the
 * entry of a histogram without labels is, by its constructor and reset()).
 */
function entryOf<E extends Entry>(map: Record<string, E>, labels: Record<string, unknown>): E | undefined {
  for (const k in map) if (map[k]!.labels === labels) return map[k];
  const same = (a: Record<string, unknown>): boolean => {
    const keys = (o: Record<string, unknown>) => Object.keys(o).filter((k) => o[k] !== undefined);
    const ka = keys(a);
    return ka.length === keys(labels).length && ka.every((k) => labels[k] !== undefined && String(a[k]) === String(labels[k]));
  };
  for (const k in map) if (same(map[k]!.labels as Record<string, unknown>)) return map[k];
  return undefined;
}

/**
 * Children by label values, one nested Map per label in the metric's order: a lookup with the
 * (usually literal, so already hashed) label strings builds no key. A value that is not a string
 * is looked up as its String() (as prom-client prints it); undefined is its own key (no label).
 */
class Children<C> {
  readonly #names: readonly string[];
  readonly #root = new Map<string | undefined, unknown>();
  size = 0;
  constructor(names: readonly string[]) {
    this.#names = names;
  }
  get(labels: Record<string, unknown>): C | undefined {
    let m: unknown = this.#root;
    for (let i = 0; i < this.#names.length && m !== undefined; i++) m = (m as Map<unknown, unknown>).get(valueOf(labels[this.#names[i]!]));
    return m === this.#root ? (this.#root.get(undefined) as C | undefined) : (m as C | undefined);
  }
  set(labels: Record<string, unknown>, c: C): void {
    const n = this.#names.length;
    if (n === 0) this.#root.set(undefined, c);
    let m = this.#root as Map<unknown, unknown>;
    for (let i = 0; i < n; i++) {
      const v = valueOf(labels[this.#names[i]!]);
      if (i === n - 1) m.set(v, c);
      else {
        let next = m.get(v) as Map<unknown, unknown> | undefined;
        if (!next) m.set(v, (next = new Map()));
        m = next;
      }
    }
    this.size++;
  }
}

const valueOf = (v: unknown): string | undefined => (v === undefined || typeof v === 'string' ? v : String(v));

export interface CachedCounterChild {
  inc(value?: number): void;
}

export class CachedCounter<T extends string> extends Counter<T> {
  /** Bumped by reset() and remove(): children find their entry again (not #private: prom-client's constructor calls reset()). */
  generation: number | undefined;

  constructor(config: ConstructorParameters<typeof Counter<T>>[0]) {
    super(config);
    const self = this as unknown as WithEntries<{ value: number } & Entry> & { inc: (a?: unknown, b?: number) => void };
    const slow = self.inc.bind(this);
    const names = self.labelNames;
    const children = new Children<CachedCounterChild>(names);
    const child = (labels: LabelValues<T>): CachedCounterChild => {
      let c = children.get(labels);
      if (c) return c;
      if (children.size >= MAX_CHILDREN) return { inc: (value) => slow(labels, value) };
      const own = { ...labels };
      let generation: number | undefined;
      let entry: { value: number } | undefined;
      c = {
        inc: (value = 1) => {
          if (entry !== undefined && generation === this.generation && Number.isFinite(value) && value >= 0) {
            entry.value += value;
            return;
          }
          slow(own, value);
          generation = this.generation;
          entry = entryOf(self.hashMap, own);
        },
      };
      children.set(labels, c);
      return c;
    };
    self.inc = (labels?: unknown, value?: number) => {
      if (labels !== null && typeof labels === 'object' && !('labels' in labels && 'value' in labels)) child(labels as LabelValues<T>).inc(value);
      else slow(labels, value);
    };
    this.#child = child;
  }

  readonly #child: (labels: LabelValues<T>) => CachedCounterChild;

  override labels(...args: [LabelValues<T>] | string[]): Counter.Internal {
    const names = (this as unknown as WithEntries<Entry>).labelNames;
    if (typeof args[0] === 'object') return this.#child(args[0]) as Counter.Internal;
    if (args.length !== names.length) return super.labels(...(args as string[])); // prom-client's error
    return this.#child(Object.fromEntries(names.map((n, i) => [n, args[i]])) as LabelValues<T>) as Counter.Internal;
  }

  override reset(): void {
    this.generation = (this.generation ?? 0) + 1;
    super.reset();
  }

  override remove(...args: [LabelValues<T>] | string[]): void {
    this.generation = (this.generation ?? 0) + 1;
    super.remove(...(args as string[]));
  }
}

export interface CachedHistogramChild {
  observe(value: number): void;
  startTimer(): (labels?: Record<string, string | number>) => number;
}

type HistogramEntry = Entry & { bucketValues: Record<string, number>; sum: number; count: number };

export class CachedHistogram<T extends string> extends Histogram<T> {
  /** As CachedCounter's. */
  generation: number | undefined;
  readonly #child: (labels: LabelValues<T>) => CachedHistogramChild;

  constructor(config: ConstructorParameters<typeof Histogram<T>>[0]) {
    super(config);
    const self = this as unknown as WithEntries<HistogramEntry> & { observe: (a: unknown, b?: number) => void; upperBounds: readonly number[] };
    const slow = self.observe.bind(this);
    const names = self.labelNames;
    const bounds = self.upperBounds;
    const boundKeys = bounds.map(String); // the bucket's property name, converted once (not per observation)
    const children = new Children<CachedHistogramChild>(names);
    const child = (labels: LabelValues<T>): CachedHistogramChild => {
      let c = children.get(labels);
      if (c) return c;
      if (children.size >= MAX_CHILDREN) return Histogram.prototype.labels.call(this, labels) as unknown as CachedHistogramChild;
      const own = { ...labels };
      let generation: number | undefined;
      let entry: HistogramEntry | undefined;
      const observe = (value: number): void => {
        if (entry !== undefined && generation === this.generation && Number.isFinite(value)) {
          // prom-client's observe(): the first bound >= value; above the last only count and sum.
          entry.sum += value;
          entry.count += 1;
          for (let i = 0; i < bounds.length; i++) {
            if (value <= bounds[i]!) {
              const n = entry.bucketValues[boundKeys[i]!];
              if (n !== undefined) entry.bucketValues[boundKeys[i]!] = n + 1;
              break;
            }
          }
          return;
        }
        slow(own, value);
        generation = this.generation;
        entry = entryOf(self.hashMap, own);
      };
      c = {
        observe,
        startTimer: () => {
          const start = process.hrtime();
          return (endLabels) => {
            const d = process.hrtime(start);
            const value = d[0] + d[1] / 1e9;
            if (endLabels === undefined) observe(value);
            else slow({ ...own, ...endLabels }, value);
            return value;
          };
        },
      };
      children.set(labels, c);
      return c;
    };
    this.#child = child;
    self.observe = (labels: unknown, value?: number) => {
      if (typeof labels === 'number' && names.length === 0) child({} as LabelValues<T>).observe(labels);
      else if (labels !== null && typeof labels === 'object' && !('labels' in labels && 'value' in labels) && typeof value === 'number') child(labels as LabelValues<T>).observe(value);
      else slow(labels, value);
    };
  }

  override labels(...args: [LabelValues<T>] | string[]): Histogram.Internal<T> {
    const names = (this as unknown as WithEntries<Entry>).labelNames;
    if (typeof args[0] === 'object') return this.#child(args[0]) as unknown as Histogram.Internal<T>;
    if (args.length !== names.length) return super.labels(...(args as string[])); // prom-client's error
    return this.#child(Object.fromEntries(names.map((n, i) => [n, args[i]])) as LabelValues<T>) as unknown as Histogram.Internal<T>;
  }

  override startTimer(labels?: LabelValues<T>): (labels?: LabelValues<T>) => number {
    return this.#child((labels ?? {}) as LabelValues<T>).startTimer() as (labels?: LabelValues<T>) => number;
  }

  override reset(): void {
    this.generation = (this.generation ?? 0) + 1;
    super.reset();
  }

  override remove(...args: [LabelValues<T>] | string[]): void {
    this.generation = (this.generation ?? 0) + 1;
    super.remove(...(args as string[]));
  }
}

export class Metrics {
  readonly registry = new Registry();

  // component
  readonly active = new Gauge({ name: 'gateway_active', help: '1 on the active instance (holds the component connection), 0 on a standby', registers: [this.registry] });
  readonly componentConnected = new Gauge({ name: 'gateway_component_connected', help: '1 while the XEP-0114 stream is authenticated', registers: [this.registry] });
  readonly componentReconnects = new Counter({ name: 'gateway_component_reconnects_total', help: 'Reconnection attempts to the XMPP server', registers: [this.registry] });
  readonly stanzasIn = new CachedCounter({ name: 'gateway_stanzas_in_total', help: 'Stanzas received, by kind', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly stanzasOut = new CachedCounter({ name: 'gateway_stanzas_out_total', help: 'Stanzas sent, by kind', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly errors = new CachedCounter({ name: 'gateway_errors_total', help: 'Errors, by kind', labelNames: ['kind'] as const, registers: [this.registry] });

  // engines
  readonly messages = new CachedCounter({
    name: 'gateway_messages_total',
    help: 'End-to-end messages by protocol, direction (in|out) and result',
    labelNames: ['protocol', 'direction', 'result'] as const,
    registers: [this.registry],
  });
  readonly cryptoSeconds = new CachedHistogram({
    name: 'gateway_crypto_operation_seconds',
    help: 'Duration of cryptographic operations by protocol and operation',
    labelNames: ['protocol', 'operation'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly decryptFailures = new Counter({
    name: 'gateway_decrypt_failures_total',
    help: 'Inbound messages that could not be decrypted, by protocol and reason',
    labelNames: ['protocol', 'reason'] as const,
    registers: [this.registry],
  });
  readonly sessions = new Gauge({ name: 'gateway_sessions', help: 'Open end-to-end sessions by protocol', labelNames: ['protocol'] as const, registers: [this.registry] });
  readonly devices = new Gauge({ name: 'gateway_contact_devices', help: 'Active contact devices by protocol and trust state', labelNames: ['protocol', 'trust'] as const, registers: [this.registry] });
  readonly replaysDropped = new Counter({ name: 'gateway_replays_dropped_total', help: 'Inbound ciphertexts dropped as replays, by protocol', labelNames: ['protocol'] as const, registers: [this.registry] });

  // bots: outbox and webhooks
  readonly outboxDepth = new Gauge({ name: 'gateway_outbox_depth', help: 'Messages accepted and not yet sent', registers: [this.registry] });
  readonly outboxOldestSeconds = new Gauge({ name: 'gateway_outbox_oldest_age_seconds', help: 'Age of the oldest unsent message', registers: [this.registry] });
  readonly acceptToSentSeconds = new CachedHistogram({
    name: 'gateway_accept_to_sent_seconds',
    help: 'Time from POST /v1/messages to the encrypted stanza written to the server',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly messagesFailed = new Counter({ name: 'gateway_messages_failed_total', help: 'Bot messages that failed, by reason', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly webhookDeliveries = new Counter({
    name: 'gateway_webhook_deliveries_total',
    help: 'Webhook delivery attempts by bot and result (ok|retry|dead)',
    labelNames: ['bot', 'result'] as const,
    registers: [this.registry],
  });
  readonly webhookQueueDepth = new Gauge({ name: 'gateway_webhook_queue_depth', help: 'Webhook deliveries waiting, by bot', labelNames: ['bot'] as const, registers: [this.registry] });
  readonly webhookDeadLetters = new Gauge({ name: 'gateway_webhook_dead_letters', help: 'Dead-lettered webhook deliveries, by bot', labelNames: ['bot'] as const, registers: [this.registry] });
  // group chats (XEP-0045 rooms of bots)
  readonly rooms = new Gauge({ name: 'gateway_rooms', help: 'Configured bot rooms by state (joined, not_private, error, ...)', labelNames: ['state'] as const, registers: [this.registry] });
  readonly roomErrors = new Counter({ name: 'gateway_room_errors_total', help: 'Room problems by reason (registration_required, banned, kicked, room_not_private, ...)', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly roomMessages = new Counter({ name: 'gateway_room_messages_total', help: 'Room messages by direction and result (ok, history, reflection, plaintext_refused, ...)', labelNames: ['direction', 'result'] as const, registers: [this.registry] });
  readonly httpRequests = new CachedCounter({ name: 'gateway_http_requests_total', help: 'HTTP API requests by route and status', labelNames: ['route', 'status'] as const, registers: [this.registry] });

  // limits (limits.ts): refusals by limit, per-peer map sizes, event-loop lag, hosted identities
  readonly limited = new CachedCounter({ name: 'gateway_limited_total', help: 'Work refused by a limit, by limit (see the README, "Limits")', labelNames: ['limit'] as const, registers: [this.registry] });
  readonly handedOff = new Counter({ name: 'gateway_handed_off_total', help: 'Stanzas read from the server after the lease was lost (keystore.url), by outcome: stored for the active instance, dropped (iqs, probes) or failed', labelNames: ['outcome'] as const, registers: [this.registry] });
  readonly keystoreBatches = new Counter({ name: 'gateway_keystore_batches_total', help: 'Write-through batches committed to PostgreSQL (keystore.url; one round trip each)', registers: [this.registry] });
  readonly keystoreBatchRows = new Counter({ name: 'gateway_keystore_batch_rows_total', help: 'Rows written or deleted by the write-through batches (keystore.url)', registers: [this.registry] });
  readonly keystoreBatchSeconds = new Histogram({
    name: 'gateway_keystore_batch_seconds',
    help: 'Time of one write-through batch, from taking its rows to its commit in PostgreSQL (keystore.url)',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly cacheEntries = new Gauge({ name: 'gateway_cache_entries', help: 'Entries of each bounded in-memory per-peer map', labelNames: ['cache'] as const, registers: [this.registry] });
  readonly eventLoopLag = new Gauge({ name: 'gateway_event_loop_lag_seconds', help: 'Event-loop lag: the longest delay of a timer over the last second', registers: [this.registry] });
  readonly componentOutput = new Gauge({ name: 'gateway_component_output', help: 'Output pacing (limits.output_window): bytes held, and bytes written the server has not confirmed reading', labelNames: ['state'] as const, registers: [this.registry] });
  readonly hostedIdentities = new Gauge({ name: 'gateway_hosted_identities', help: 'Hosted JIDs with an identity (bridge.max_hosted_identities)', registers: [this.registry] });
  /** Sizes of bounded per-peer maps, read at each scrape into gateway_cache_entries. */
  readonly #caches = new Map<string, () => number>();

  /** Registers a bounded per-peer map: its size is exported as gateway_cache_entries{cache=name}. */
  registerCache(name: string, size: () => number): void {
    this.#caches.set(name, size);
  }

  /** The registered maps and their sizes now (tests check every one stays within its bound). */
  cacheSizes(): Record<string, number> {
    return Object.fromEntries([...this.#caches].map(([n, f]) => [n, f()]));
  }

  readonly #collectors: Array<() => void> = [];

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'gateway_' });
  }

  /** Registers a callback run before each scrape (for gauges read from the keystore). */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    for (const [name, size] of this.#caches) this.cacheEntries.set({ cache: name }, size());
    for (const fn of this.#collectors) {
      try {
        fn();
      } catch {
        this.errors.inc({ kind: 'metrics_collect' });
      }
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /** Times `fn` into the crypto histogram. */
  async timeCrypto<T>(protocol: string, operation: string, fn: () => Promise<T>): Promise<T> {
    const end = this.cryptoSeconds.startTimer({ protocol, operation });
    try {
      return await fn();
    } finally {
      end();
    }
  }
}
