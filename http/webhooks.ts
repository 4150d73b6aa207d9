// Delivers the webhook queue. One worker per bot, so a slow or dead webhook of one bot never delays
// another; within a bot, deliveries from one sender go strictly in order (only the head of each
// sender's line is attempted), different senders in parallel. Failures are retried with
// exponential backoff and jitter for `retryFor`, then dead-lettered for an admin to retry.
import type { Logger } from 'pino';
import type { BotConfig } from '../config.js';
import type { WebhookStore, Delivery } from '../keystore/webhook-store.js';
import type { Metrics } from './metrics.js';
import { signatureHeaders, signingKey } from './webhook-signing.js';
import { KeyedWorker } from '../keyed-worker.js';

export interface DispatcherOptions {
  store: WebhookStore;
  bots: readonly BotConfig[];
  metrics: Metrics;
  log: Logger;
  timeoutMs: number;
  retryForMs: number;
  maxDelayMs: number;
  /** First retry delay; doubles per attempt up to maxDelayMs. */
  baseDelayMs?: number;
  /** Deliveries in flight per bot (different senders). */
  concurrency?: number;
  /** Awaited before each POST (keystore.url: the commit barrier and the lease check); a throw skips the attempt. */
  beforeDeliver?: () => Promise<void>;
}

class BotWorker {
  readonly bot: BotConfig;
  readonly #d: DispatcherOptions;
  readonly #key: Buffer;
  readonly #worker: KeyedWorker<Delivery>;

  constructor(bot: BotConfig, d: DispatcherOptions) {
    this.bot = bot;
    this.#d = d;
    this.#key = signingKey(bot.webhook!.secret);
    this.#worker = new KeyedWorker({
      name: `webhook:${bot.localpart}`,
      // A line per sender: only the head of each sender's line is attempted, so order is kept.
      pending: () => d.store.heads(bot.localpart, 256).map((h) => ({ key: h.orderingKey, dueAt: h.nextAttemptAt, item: h })),
      process: (h) => this.#attempt(h),
      nextInLine: (key) => {
        const h = d.store.nextInLine(bot.localpart, key);
        return h ? { key, dueAt: h.nextAttemptAt, item: h } : undefined;
      },
      concurrency: d.concurrency ?? 8,
      idleMs: 60000,
      log: d.log,
    });
  }

  start(): void {
    this.#worker.start();
  }

  kick(): void {
    this.#worker.kick();
  }

  stop(): Promise<void> {
    return this.#worker.stop();
  }

  async #attempt(h: Delivery): Promise<void> {
    const d = this.#d;
    const now = Date.now();
    const body = d.store.payload(h.id);
    if (body === null) {
      d.store.markDead(h.id, 'payload missing');
      return;
    }
    const url = this.bot.webhook!.url;
    await d.beforeDeliver?.();
    let error: string;
    try {
      const res = await fetch(url, {
        method: 'POST',
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(d.timeoutMs),
        headers: { 'content-type': 'application/json', 'user-agent': 'xmpp-e2ee-gateway', ...signatureHeaders(this.#key, h.id, Math.floor(now / 1000), body) },
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.status >= 200 && res.status < 300) {
        d.store.markDelivered(h.id);
        d.metrics.webhookDeliveries.inc({ bot: this.bot.localpart, result: 'ok' });
        return;
      }
      error = `HTTP ${res.status}`;
    } catch (e) {
      const err = e as Error & { cause?: { code?: string } };
      error = err.name === 'TimeoutError' ? `timeout after ${d.timeoutMs} ms` : (err.cause?.code ?? err.name);
    }
    const first = h.firstAttemptAt ?? now;
    if (now - first >= d.retryForMs) {
      d.store.markDead(h.id, error);
      d.metrics.webhookDeliveries.inc({ bot: this.bot.localpart, result: 'dead' });
      d.log.warn({ bot: this.bot.localpart, id: h.id, attempts: h.attempts + 1, error }, 'webhook delivery dead-lettered');
      return;
    }
    const base = Math.min(d.maxDelayMs, (d.baseDelayMs ?? 1000) * 2 ** Math.min(h.attempts, 30));
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    d.store.retryLater(h.id, now + delay, error, now);
    d.metrics.webhookDeliveries.inc({ bot: this.bot.localpart, result: 'retry' });
    d.log.info({ bot: this.bot.localpart, id: h.id, attempt: h.attempts + 1, error, retryInMs: delay, webhook: new URL(url).origin }, 'webhook delivery failed; will retry');
  }
}

export class WebhookDispatcher {
  readonly #workers = new Map<string, BotWorker>();
  readonly #d: DispatcherOptions;

  constructor(d: DispatcherOptions) {
    this.#d = d;
    for (const bot of d.bots) if (bot.webhook) this.#workers.set(bot.localpart, new BotWorker(bot, d));
  }

  hasWebhook(bot: string): boolean {
    return this.#workers.has(bot);
  }

  start(): void {
    for (const w of this.#workers.values()) w.start();
  }

  /** Tells the bot's worker that a delivery is waiting. */
  kick(bot: string): void {
    this.#workers.get(bot)?.kick();
  }

  /** Queues a payload (sealed, durable) for `bot`, ordered with others of `orderingKey`. */
  enqueue(bot: string, orderingKey: string, payload: { id: string; [k: string]: unknown }): void {
    this.#d.store.enqueue(bot, orderingKey, payload);
    this.kick(bot);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.#workers.values()].map((w) => w.stop()));
  }

  /** Queue gauges for /metrics. */
  collect(metrics: Metrics): void {
    metrics.webhookQueueDepth.reset();
    metrics.webhookDeadLetters.reset();
    for (const c of this.#d.store.counts()) {
      if (c.status === 'pending') metrics.webhookQueueDepth.set({ bot: c.bot }, c.n);
      if (c.status === 'dead') metrics.webhookDeadLetters.set({ bot: c.bot }, c.n);
    }
  }
}
