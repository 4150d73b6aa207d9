// Delivers the webhook queue. One worker per bot, so a slow or dead webhook of one bot never delays
// another; within a bot, deliveries from one sender go strictly in order (only the head of each
// sender's line is attempted), different senders in parallel. Failures are retried with
// exponential backoff and jitter for `retryFor`, then dead-lettered for an admin to retry.
import type { Logger } from 'pino';
import type { BotConfig } from '../config.js';
import type { WebhookStore, Delivery } from '../keystore/webhook-store.js';
import type { Metrics } from './metrics.js';
import { signatureHeaders, signingKey } from './webhook-signing.js';

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
  now?: () => number;
}

class BotWorker {
  readonly bot: BotConfig;
  readonly #d: DispatcherOptions;
  readonly #key: Buffer;
  readonly #busy = new Set<string>();
  readonly #inflight = new Set<Promise<void>>();
  #running = false;
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;

  constructor(bot: BotConfig, d: DispatcherOptions) {
    this.bot = bot;
    this.#d = d;
    this.#key = signingKey(bot.webhook!.secret);
  }

  start(): void {
    this.#running = true;
    this.#loop = this.#run();
  }

  kick(): void {
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.kick();
    await this.#loop;
    await Promise.allSettled([...this.#inflight]);
  }

  async #run(): Promise<void> {
    const d = this.#d;
    const limit = d.concurrency ?? 8;
    while (this.#running) {
      let nextAt = Infinity;
      try {
        const now = (d.now ?? Date.now)();
        for (const h of d.store.heads(this.bot.localpart, 256)) {
          if (this.#busy.has(h.orderingKey)) continue;
          if (h.nextAttemptAt > now) {
            nextAt = Math.min(nextAt, h.nextAttemptAt);
            continue;
          }
          if (this.#busy.size >= limit) break;
          this.#busy.add(h.orderingKey);
          const p = this.#attempt(h).finally(() => {
            this.#busy.delete(h.orderingKey);
            this.#inflight.delete(p);
            this.kick();
          });
          this.#inflight.add(p);
        }
      } catch (e) {
        d.log.error({ err: e, bot: this.bot.localpart }, 'webhook queue read failed');
        nextAt = Date.now() + 1000;
      }
      if (!this.#running) break;
      const wait = Number.isFinite(nextAt) ? Math.max(10, nextAt - (d.now ?? Date.now)()) : 60000;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(wait, 60000));
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  async #attempt(h: Delivery): Promise<void> {
    const d = this.#d;
    const now = (d.now ?? Date.now)();
    const body = d.store.payload(h.id);
    if (body === null) {
      d.store.markDead(h.id, 'payload missing');
      return;
    }
    const url = this.bot.webhook!.url;
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
