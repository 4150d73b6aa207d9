// Sends the outbox (bot messages and bridged ones) while the component is connected: queued -> sent
// (-> delivered on a XEP-0184 receipt) or failed with a reason a user can act on. Messages to one
// recipient from one bot (or one proxy JID) go in order (a message waits while an earlier one to the same recipient is being retried); different
// recipients are sent concurrently. Transient failures (server away, remote timeouts) are retried
// with backoff until the message expires. A message waiting for an OTR session (the engine has
// started the AKE) is retried every second, and fails with no_otr_session after otrSessionTimeoutMs.
import type { Logger } from 'pino';
import type { BotConfig } from '../config.js';
import { GatewayError, toGatewayError } from '../errors.js';
import type { Metrics } from '../http/metrics.js';
import type { OutboxMessage, OutboxStore } from '../keystore/outbox-store.js';
import type { OutboundSender, Encryption } from './outbound.js';
import { KeyedWorker } from '../keyed-worker.js';

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
  'stanza_unserializable',
  'room_not_private',
  'room_unavailable',
]);

/** Messages from one bot (or proxy JID) to one recipient form a line: sent in order, one at a time. */
const lineKey = (m: Pick<OutboxMessage, 'bot' | 'to'>) => `${m.bot}\0${m.to}`;

export interface StatusChange {
  message: OutboxMessage;
  status: 'sent' | 'delivered' | 'failed';
}

/** Where messages to a bot's rooms go (one groupchat stanza to many occupants). */
export interface RoomSender {
  isRoom(localpart: string, jid: string): boolean;
  send(req: { localpart: string; room: string; body: string; id: string; encryption?: Encryption; allowPlaintext: boolean }): Promise<{ encryption: Encryption; undeliveredTo: string[] }>;
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
  rooms?: RoomSender;
  concurrency?: number;
  /** How long a message may wait for an OTR session (bridge.otr_session_timeout). */
  otrSessionTimeoutMs?: number;
  /** Tries for an unexpected (internal) error before the message fails. */
  maxInternalAttempts?: number;
}

export class OutboxSender {
  readonly #o: OutboxSenderOptions;
  readonly #bots: Map<string, BotConfig>;
  readonly #worker: KeyedWorker<OutboxMessage>;

  constructor(o: OutboxSenderOptions) {
    this.#o = o;
    this.#bots = new Map(o.bots.map((b) => [b.localpart, b]));
    this.#worker = new KeyedWorker({
      name: 'outbox',
      // A line per (bot, recipient): a message waits while an earlier one to the same recipient retries.
      pending: () => o.store.queued(1000).map((m) => ({ key: lineKey(m), dueAt: m.nextAttemptAt, item: m })),
      process: (m) => this.#send(m),
      nextInLine: (key) => {
        const [bot, to] = key.split('\0') as [string, string];
        const m = o.store.nextInLine(bot, to);
        return m ? { key, dueAt: m.nextAttemptAt, item: m } : undefined;
      },
      ready: o.isOnline,
      concurrency: o.concurrency ?? 32,
      log: o.log,
    });
  }

  start(): void {
    this.#worker.start();
  }

  /** Wakes the loop: messages were queued, or the component came online (rescans the outbox). */
  kick(): void {
    this.#worker.kick();
  }

  /** One message was queued: only its line is looked at (no rescan of the outbox). */
  queued(m: Pick<OutboxMessage, 'bot' | 'to'>): void {
    this.#worker.kick(lineKey(m));
  }

  /** Stops taking new work and waits for sends in flight. */
  stop(): Promise<void> {
    return this.#worker.stop();
  }

  async #send(m: OutboxMessage): Promise<void> {
    const { store, metrics, log } = this.#o;
    const now = Date.now();
    if (now > m.expiresAt) {
      this.#fail(m, new GatewayError('expired', `The message could not be sent within its time to live (last problem: ${m.error?.code ?? 'none'}).`));
      return;
    }
    const bridged = m.kind === 'bridge';
    const bot = bridged ? undefined : this.#bots.get(m.bot);
    const origin = bridged ? store.origin(m.id) : null;
    const body = store.body(m.id);
    if ((bridged ? !origin : !bot) || body === null) {
      this.#fail(m, new GatewayError('internal', 'The message can no longer be sent (its bot or body is gone).'));
      return;
    }
    try {
      const allowPlaintext = this.#o.allowPlaintext || (bot?.allowPlaintext ?? false);
      const rooms = this.#o.rooms;
      if (!bridged && rooms?.isRoom(m.bot, m.to)) {
        const res = await rooms.send({ localpart: m.bot, room: m.to, body, id: m.id, encryption: (m.encryptionRequested ?? undefined) as Encryption | undefined, allowPlaintext });
        if (await store.markSentSoon(m.id, res.encryption, res.undeliveredTo)) {
          metrics.acceptToSentSeconds.observe((Date.now() - m.createdAt) / 1000);
          this.#o.onStatus({ message: { ...m, status: 'sent', encryption: res.encryption, undeliveredTo: res.undeliveredTo }, status: 'sent' });
        }
        return;
      }
      const res = await this.#o.outbound.send({
        // A bridged message goes out from the sender's proxy JID, stored as its "bot".
        from: bridged ? m.bot : this.#o.botJid(m.bot),
        to: m.to,
        body,
        id: m.id,
        encryption: (m.encryptionRequested ?? undefined) as Encryption | undefined,
        requestReceipt: origin ? origin.receiptRequested : true,
        allowPlaintext,
      });
      // Committed with this turn's other outbox writes; the line goes on once it is.
      if (await store.markSentSoon(m.id, res.encryption)) {
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
      if (g.code === 'no_otr_session') {
        if (now - m.createdAt >= (this.#o.otrSessionTimeoutMs ?? 120_000)) {
          this.#fail(m, new GatewayError('no_otr_session', `No OTR session with ${m.to} could be set up in time.`));
        } else {
          store.retryLater(m.id, Date.now() + 1000, g.code, g.userText);
        }
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
