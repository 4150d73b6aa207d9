// Sends the outbox (bot messages and bridged ones) while the component is connected: queued -> sent
// (-> delivered on a XEP-0184 receipt) or failed with a reason a user can act on. Messages to one
// recipient from one bot (or one proxy JID) go in order (a message waits while an earlier one to the same recipient is being retried); different
// recipients are sent concurrently. Transient failures (server away, remote timeouts) are retried
// with backoff until the message expires. A message waiting for an OTR session (the engine has
// started the AKE) is retried every second, and fails with no_otr_session after otrSessionTimeoutMs.
import type { Logger } from 'pino';
import type { BotConfig } from '../config.js';
import { GatewayError, KeysNotVisibleError, toGatewayError } from '../errors.js';
import { errorSummary } from '../log.js';
import type { Metrics } from '../http/metrics.js';
import type { OutboxMessage, OutboxStore } from '../keystore/outbox-store.js';
import type { OutboundSender, Encryption, Prepared } from './outbound.js';
import { KeyedWorker } from '../keyed-worker.js';

/** Messages of one line sent together at most (a backlog: see OutboxSender.#line). */
const BATCH_MAX = 32;

/** How long a bot's message waits for a recipient to let the bot read their keys (keys_not_visible). */
export const APPROVAL_WAIT_MS = 15 * 60_000;

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

/** The message without the plaintext it may carry (what status changes pass on). */
function withoutBody(m: Pending): OutboxMessage {
  const { plaintext: _, ...rest } = m;
  return rest;
}

/** Messages from one bot (or proxy JID) to one recipient form a line: sent in order, one at a time. */
const lineKey = (m: Pick<OutboxMessage, 'bot' | 'to'>) => `${m.bot}\0${m.to}`;

/** A queued message; `plaintext` when it comes straight from its POST (no read of the sealed body). */
type Pending = OutboxMessage & { plaintext?: string };

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
  /**
   * The recipient's keys are readable to approved contacts only (keys_not_visible): ask them, from
   * the sending hosted JID, to approve it (PresenceService.askToFollow). Resolves what it did:
   * sent a request now, or why not (one pending, approved already, declined lately).
   */
  askToFollow?: (from: string, to: string) => Promise<'asked' | 'pending' | 'following' | 'declined'>;
  /** How long a bot's message waits for that approval before it fails (default APPROVAL_WAIT_MS). */
  approvalWaitMs?: number;
}

export class OutboxSender {
  readonly #o: OutboxSenderOptions;
  readonly #bots: Map<string, BotConfig>;
  readonly #worker: KeyedWorker<Pending>;

  constructor(o: OutboxSenderOptions) {
    this.#o = o;
    this.#bots = new Map(o.bots.map((b) => [b.localpart, b]));
    this.#worker = new KeyedWorker({
      name: 'outbox',
      // A line per (bot, recipient): a message waits while an earlier one to the same recipient retries.
      pending: () => o.store.queued(1000).map((m) => ({ key: lineKey(m), dueAt: m.nextAttemptAt, item: m })),
      process: (m) => this.#line(m),
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

  /**
   * One message was queued (committed): only its line is looked at (no rescan of the outbox). With
   * its body, a line known to be empty starts with it at once, without reading it back.
   */
  queued(m: OutboxMessage, body?: string): void {
    const key = lineKey(m);
    this.#worker.kick(key, body === undefined ? undefined : { key, dueAt: m.nextAttemptAt, item: { ...m, plaintext: body } });
  }

  /**
   * `contact` approved hosted JID `local`'s subscription: a bot message of that line waiting for it
   * (keys_not_visible) is tried now instead of at its next retry (up to a minute away).
   */
  approved(local: string, contact: string): void {
    const bot = this.#o.bots.find((b) => this.#o.botJid(b.localpart) === local);
    if (!bot) return;
    const head = this.#o.store.nextInLine(bot.localpart, contact);
    if (head?.status !== 'queued' || head.error?.code !== 'keys_not_visible') return;
    this.#o.store.retryLater(head.id, Date.now(), head.error.code, head.error.message);
    this.#worker.kick();
  }

  /** Stops taking new work and waits for sends in flight. */
  stop(): Promise<void> {
    return this.#worker.stop();
  }

  /**
   * The head of a line. One that was read from the queue may have more due behind it (a backlog):
   * those are sent together (issue 16): encrypted in order, their stanzas written back to back (one
   * socket write), marked sent in one transaction that the line waits for, as for a single message.
   */
  async #line(head: Pending): Promise<boolean> {
    if (head.plaintext !== undefined || head.kind !== 'bot' || this.#o.rooms?.isRoom(head.bot, head.to)) return this.#send(head);
    const batch = this.#o.store.lineBatch(head.bot, head.to, head.id, BATCH_MAX);
    // One alone goes the usual way, with the body the batch read already opened.
    return batch.length > 1 ? this.#sendBatch(batch) : this.#send(batch[0] ?? head);
  }

  /** Messages of one bot to one user, due, in line order (their bodies opened): see #line. Resolves false if one stays queued for a retry. */
  async #sendBatch(batch: ReadonlyArray<OutboxMessage & { plaintext: string }>): Promise<boolean> {
    const prepared: Array<{ m: Pending; p: Prepared }> = [];
    let failure: { m: Pending; e: unknown } | null = null;
    for (const m of batch) {
      const bot = this.#bots.get(m.bot);
      // Anything out of the ordinary is left to the one-message path, once the batch before it is done
      // (the line reads the queue again: see the return value).
      if (!bot || Date.now() > m.expiresAt) break;
      try {
        const p = await this.#o.outbound.prepare({
          from: this.#o.botJid(m.bot),
          to: m.to,
          body: m.plaintext,
          id: m.id,
          encryption: (m.encryptionRequested ?? undefined) as Encryption | undefined,
          requestReceipt: true,
          allowPlaintext: this.#o.allowPlaintext || bot.allowPlaintext,
        });
        prepared.push({ m, p });
      } catch (e) {
        // Failed or kept for a retry once the ones before it are sent; the rest stay queued behind it.
        failure = { m, e };
        break;
      }
    }
    if (failure && prepared.length === 0) return this.#failed(failure.m, failure.e);
    if (prepared.length === 0) return this.#send(batch[0]!);
    // Written in order; a message of several stanzas (OTR fragments) is written whole before the next.
    const writes: Array<Promise<unknown>> = [];
    for (const { p } of prepared) {
      const w = this.#o.outbound.write(p);
      writes.push(w);
      if (p.stanzas.length > 1) await w.catch(() => undefined);
    }
    // Each written one is marked sent (committed with the next transaction: see #markSent); one not
    // written (unserializable, the connection gone) fails or waits for a retry.
    const results = await Promise.allSettled(writes);
    let done = true;
    for (const [i, { m, p }] of prepared.entries()) {
      const r = results[i]!;
      if (r.status === 'rejected') done = this.#failed(m, r.reason) && done;
      else this.#markSent(m, p.encryption);
    }
    if (failure) done = this.#failed(failure.m, failure.e) && done;
    // Messages left out of the batch are still queued behind it.
    return done && prepared.length === batch.length;
  }

  /** Resolves false when the message stays queued for a retry. */
  async #send(m: Pending): Promise<boolean> {
    const { store, metrics } = this.#o;
    const now = Date.now();
    if (now > m.expiresAt) {
      this.#fail(m, new GatewayError('expired', `The message could not be sent within its time to live (last problem: ${m.error?.code ?? 'none'}).`));
      return true;
    }
    const bridged = m.kind === 'bridge';
    const bot = bridged ? undefined : this.#bots.get(m.bot);
    const origin = bridged ? store.origin(m.id) : null;
    const body = m.plaintext ?? store.body(m.id);
    if ((bridged ? !origin : !bot) || body === null) {
      this.#fail(m, new GatewayError('internal', 'The message can no longer be sent (its bot or body is gone).'));
      return true;
    }
    // A bridged message goes out from the sender's proxy JID, stored as its "bot".
    const from = bridged ? m.bot : this.#o.botJid(m.bot);
    try {
      const allowPlaintext = this.#o.allowPlaintext || (bot?.allowPlaintext ?? false);
      const rooms = this.#o.rooms;
      if (!bridged && rooms?.isRoom(m.bot, m.to)) {
        const res = await rooms.send({ localpart: m.bot, room: m.to, body, id: m.id, encryption: (m.encryptionRequested ?? undefined) as Encryption | undefined, allowPlaintext });
        if (await store.markSentSoon(m.id, res.encryption, res.undeliveredTo)) {
          metrics.acceptToSentSeconds.observe((Date.now() - m.createdAt) / 1000);
          this.#o.onStatus({ message: { ...withoutBody(m), status: 'sent', encryption: res.encryption, undeliveredTo: res.undeliveredTo }, status: 'sent' });
        }
        return true;
      }
      const res = await this.#o.outbound.send({
        from,
        to: m.to,
        body,
        id: m.id,
        encryption: (m.encryptionRequested ?? undefined) as Encryption | undefined,
        requestReceipt: origin ? origin.receiptRequested : true,
        allowPlaintext,
      });
      this.#markSent(m, res.encryption);
      return true;
    } catch (e) {
      if (e instanceof KeysNotVisibleError) return this.#notVisible(m, from, e, now);
      return this.#failed(m, e, now);
    }
  }

  /**
   * A written message's sent mark, not waited for (issue 16): it rides on the outbox's next
   * transaction (the next POST's, a receipt's) or its timer, so a message costs one commit, not two.
   * The line goes on at once: the next message's stanza may leave before this mark is committed, but
   * marks are committed in the order they were made, so a crash can only make a tail of the line be
   * sent again, in order, under the same ids (the at-least-once window, README). Every read of the
   * queue commits waiting marks first, so a sent message is never read back as queued.
   */
  #markSent(m: Pending, encryption: Encryption): void {
    // Accept to written (what the histogram measures), not to the mark's commit.
    this.#o.metrics.acceptToSentSeconds.observe((Date.now() - m.createdAt) / 1000);
    this.#o.store.markSentLater(m.id, encryption).then(
      (ok) => {
        if (ok) this.#o.onStatus({ message: { ...withoutBody(m), status: 'sent', encryption }, status: 'sent' });
      },
      (e: unknown) => this.#o.log.error({ err: e, id: m.id }, 'outbox: the sent mark could not be committed (the message may be sent again after a restart)'),
    );
  }

  /**
   * The recipient's keys are not readable for the sending hosted JID: it asks for their approval (a
   * subscription request, once). A bot's message waits for it, retried, up to approvalWaitMs; a
   * bridged one fails at once, so the person who wrote learns why now and can write again.
   */
  async #notVisible(m: Pending, from: string, e: KeysNotVisibleError, now: number): Promise<boolean> {
    const asked = this.#o.askToFollow
      ? await this.#o.askToFollow(from, m.to).catch((err: unknown) => {
          this.#o.log.warn({ id: m.id, err: errorSummary(err) }, 'outbox: the subscription request could not be sent');
          return 'pending' as const;
        })
      : 'pending';
    const fail = (why: string) => {
      this.#fail(m, new KeysNotVisibleError(e.certain, `${e.userText} ${why}`));
      return true;
    };
    const request = asked === 'asked' ? `${from} has sent ${m.to} a request for approval (a presence subscription)` : `${from} has asked ${m.to} for approval before (a presence subscription)`;
    if (asked === 'declined') return fail(`${m.to} declined ${from}'s request for approval; it is not asked again for a day.`);
    if (asked === 'following') return fail(`${m.to} has approved ${from}, yet their server does not let it read them (an access model narrower than presence, e.g. a roster group).`);
    // Not certain that there are keys at all (PubsubPort.fetch): failed now, as with none.
    if (!e.certain) return fail(`${request}; once given, send again.`);
    const waitMs = this.#o.approvalWaitMs ?? APPROVAL_WAIT_MS;
    if (m.kind === 'bridge') return fail(`${request}; write again once they approve.`);
    if (now - m.createdAt >= waitMs) return fail(`${request}; not approved within ${Math.round(waitMs / 60000)} minutes.`);
    return this.#failed(m, new GatewayError('keys_not_visible', `${e.userText} ${request}; the message waits for the approval.`), now);
  }

  /** A message that could not be sent: failed for good (true), or kept for a retry later (false). */
  #failed(m: Pending, e: unknown, now = Date.now()): boolean {
    const { store, log } = this.#o;
    const g = toGatewayError(e);
    if (PERMANENT.has(g.code) || (g.code === 'internal' && m.attempts + 1 >= (this.#o.maxInternalAttempts ?? 5))) {
      if (g.code === 'internal') log.error({ err: e, id: m.id }, 'outbox message failed');
      this.#fail(m, g);
      return true;
    }
    if (g.code === 'no_otr_session') {
      if (now - m.createdAt >= (this.#o.otrSessionTimeoutMs ?? 120_000)) {
        this.#fail(m, new GatewayError('no_otr_session', `No OTR session with ${m.to} could be set up in time.`));
        return true;
      }
      store.retryLater(m.id, Date.now() + 1000, g.code, g.userText);
      return false;
    }
    const delay = Math.min(60000, 1000 * 2 ** Math.min(m.attempts, 6));
    store.retryLater(m.id, Date.now() + delay, g.code, g.userText);
    log.info({ id: m.id, code: g.code, attempt: m.attempts + 1, retryInMs: delay }, 'outbox message will be retried');
    return false;
  }

  #fail(m: Pending, g: GatewayError): void {
    if (this.#o.store.markFailed(m.id, g.code, g.userText)) {
      this.#o.metrics.messagesFailed.inc({ reason: g.code });
      this.#o.log.info({ id: m.id, bot: m.bot, code: g.code }, 'outbox message failed');
      this.#o.onStatus({ message: { ...withoutBody(m), status: 'failed', error: { code: g.code, message: g.userText } }, status: 'failed' });
    }
  }
}
