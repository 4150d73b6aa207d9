// Sends the bot outbox while the component is connected: queued -> sent (-> delivered on a XEP-0184
// receipt) or failed with a reason a user can act on. Messages to one recipient from one bot go in
// order (a message waits while an earlier one to the same recipient is being retried); different
// recipients are sent concurrently. Transient failures (server away, remote timeouts) are retried
// with backoff until the message expires.
import type { Logger } from 'pino';
import type { BotConfig } from '../config.js';
import { GatewayError, toGatewayError } from '../errors.js';
import type { Metrics } from '../http/metrics.js';
import type { OutboxMessage, OutboxStore } from '../keystore/outbox-store.js';
import type { OutboundSender, Encryption } from './outbound.js';

/** Codes that retrying will not cure. */
const PERMANENT = new Set([
  'no_encryption_available',
  'no_trusted_devices',
  'recipient_not_allowed',
  'plaintext_refused',
  'jid_malformed',
  'not_hosted',
  'bad_request',
  'invalid_field',
]);

export interface StatusChange {
  message: OutboxMessage;
  status: 'sent' | 'delivered' | 'failed';
}

export interface OutboxSenderOptions {
  store: OutboxStore;
  outbound: OutboundSender;
  bots: readonly BotConfig[];
  botJid: (localpart: string) => string;
  isOnline: () => boolean;
  allowPlaintext: boolean;
  metrics: Metrics;
  log: Logger;
  onStatus: (change: StatusChange) => void;
  concurrency?: number;
  /** Tries for an unexpected (internal) error before the message fails. */
  maxInternalAttempts?: number;
}

export class OutboxSender {
  readonly #o: OutboxSenderOptions;
  readonly #bots: Map<string, BotConfig>;
  readonly #busy = new Set<string>();
  readonly #inflight = new Set<Promise<void>>();
  #running = false;
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;

  constructor(o: OutboxSenderOptions) {
    this.#o = o;
    this.#bots = new Map(o.bots.map((b) => [b.localpart, b]));
  }

  start(): void {
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Wakes the loop: a message was queued, or the component came online. */
  kick(): void {
    this.#wake?.();
  }

  /** Stops taking new work and waits for sends in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    this.kick();
    await this.#loop;
    await Promise.allSettled([...this.#inflight]);
  }

  async #run(): Promise<void> {
    const limit = this.#o.concurrency ?? 32;
    while (this.#running) {
      let nextAt = Infinity;
      if (this.#o.isOnline()) {
        try {
          nextAt = this.#startDue(limit);
        } catch (e) {
          this.#o.log.error({ err: e }, 'outbox read failed');
          nextAt = Date.now() + 1000;
        }
      }
      if (!this.#running) break;
      const wait = Number.isFinite(nextAt) ? Math.max(5, nextAt - Date.now()) : 30000;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(wait, 30000));
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  /** Starts every message that is the head of its (bot, recipient) line and due; returns when to look again. */
  #startDue(limit: number): number {
    const now = Date.now();
    let nextAt = Infinity;
    const seen = new Set<string>();
    for (const m of this.#o.store.queued(1000)) {
      const key = `${m.bot}\0${m.to}`;
      if (seen.has(key)) continue; // only the head of each line
      seen.add(key);
      if (this.#busy.has(key)) continue;
      if (m.nextAttemptAt > now) {
        nextAt = Math.min(nextAt, m.nextAttemptAt);
        continue;
      }
      if (this.#busy.size >= limit) return now + 5;
      this.#busy.add(key);
      const p = this.#send(m).finally(() => {
        this.#busy.delete(key);
        this.#inflight.delete(p);
        this.kick();
      });
      this.#inflight.add(p);
    }
    return nextAt;
  }

  async #send(m: OutboxMessage): Promise<void> {
    const { store, metrics, log } = this.#o;
    const now = Date.now();
    if (now > m.expiresAt) {
      this.#fail(m, new GatewayError('expired', `The message could not be sent within its time to live (last problem: ${m.error?.code ?? 'none'}).`));
      return;
    }
    const bot = this.#bots.get(m.bot);
    const body = store.body(m.id);
    if (!bot || body === null) {
      this.#fail(m, new GatewayError('internal', 'The message can no longer be sent (its bot or body is gone).'));
      return;
    }
    try {
      const res = await this.#o.outbound.send({
        from: this.#o.botJid(m.bot),
        to: m.to,
        body,
        id: m.id,
        encryption: (m.encryptionRequested ?? undefined) as Encryption | undefined,
        requestReceipt: true,
        allowPlaintext: this.#o.allowPlaintext || bot.allowPlaintext,
      });
      if (store.markSent(m.id, res.encryption)) {
        metrics.acceptToSentSeconds.observe((Date.now() - m.createdAt) / 1000);
        this.#o.onStatus({ message: { ...m, status: 'sent', encryption: res.encryption }, status: 'sent' });
      }
    } catch (e) {
      const g = toGatewayError(e);
      if (PERMANENT.has(g.code) || (g.code === 'internal' && m.attempts + 1 >= (this.#o.maxInternalAttempts ?? 5))) {
        if (g.code === 'internal') log.error({ err: e, id: m.id }, 'outbox message failed');
        this.#fail(m, g);
        return;
      }
      const delay = Math.min(60000, 1000 * 2 ** Math.min(m.attempts, 6));
      store.retryLater(m.id, Date.now() + delay, g.code, g.userText);
      log.info({ id: m.id, code: g.code, attempt: m.attempts + 1, retryInMs: delay }, 'outbox message will be retried');
    }
  }

  #fail(m: OutboxMessage, g: GatewayError): void {
    if (this.#o.store.markFailed(m.id, g.code, g.userText)) {
      this.#o.metrics.messagesFailed.inc({ reason: g.code });
      this.#o.log.info({ id: m.id, bot: m.bot, code: g.code }, 'outbox message failed');
      this.#o.onStatus({ message: { ...m, status: 'failed', error: { code: g.code, message: g.userText } }, status: 'failed' });
    }
  }
}
