// Every Prometheus metric of the gateway, owned by one object on its own Registry (no global state,
// so tests can build many). Collect-time gauges read their value from a callback when scraped.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  // component
  readonly active = new Gauge({ name: 'gateway_active', help: '1 on the active instance (holds the component connection), 0 on a standby', registers: [this.registry] });
  readonly componentConnected = new Gauge({ name: 'gateway_component_connected', help: '1 while the XEP-0114 stream is authenticated', registers: [this.registry] });
  readonly componentReconnects = new Counter({ name: 'gateway_component_reconnects_total', help: 'Reconnection attempts to the XMPP server', registers: [this.registry] });
  readonly stanzasIn = new Counter({ name: 'gateway_stanzas_in_total', help: 'Stanzas received, by kind', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly stanzasOut = new Counter({ name: 'gateway_stanzas_out_total', help: 'Stanzas sent, by kind', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly errors = new Counter({ name: 'gateway_errors_total', help: 'Errors, by kind', labelNames: ['kind'] as const, registers: [this.registry] });

  // engines
  readonly messages = new Counter({
    name: 'gateway_messages_total',
    help: 'End-to-end messages by protocol, direction (in|out) and result',
    labelNames: ['protocol', 'direction', 'result'] as const,
    registers: [this.registry],
  });
  readonly cryptoSeconds = new Histogram({
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
  readonly acceptToSentSeconds = new Histogram({
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
  readonly httpRequests = new Counter({ name: 'gateway_http_requests_total', help: 'HTTP API requests by route and status', labelNames: ['route', 'status'] as const, registers: [this.registry] });

  // limits (limits.ts): refusals by limit, per-peer map sizes, event-loop lag, hosted identities
  readonly limited = new Counter({ name: 'gateway_limited_total', help: 'Work refused by a limit, by limit (see the README, "Limits")', labelNames: ['limit'] as const, registers: [this.registry] });
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
