// The durable outbox of bot and bridged messages. A message is committed here (body sealed) before the API
// answers 202, so it survives a crash; its body is wiped once it has been sent.
//
// Group commit (issue 16): accept(), markSentSoon() and markDeliveredSoon() collect what one event-loop
// turn brings (POSTs, stanzas sent, receipts) and write it in one transaction at setImmediate; each
// caller's promise settles once that transaction is committed, so a 202 still means "in the
// keystore". A crash before the commit loses only what nobody was told about yet (a POST not
// answered, a receipt not recorded) or sends a message again (sent, not yet marked: the at-least-once
// window that was there before, now up to the end of the turn).
// A receipt (markDeliveredSoon) and a sent mark (markSentLater) do not start a transaction of their
// own: they wait for the next one (the next POST), at most DELIVERED_DEFER_MS; nobody waits on them
// but a status webhook (the outbox line goes on at once: reads of the queue commit them first).
import { createHash } from 'node:crypto';
import { GatewayError } from '../errors.js';
import type { Keystore } from './keystore.js';
import { pooledRandomBytes } from './seal.js';

export type OutboxStatus = 'queued' | 'sent' | 'delivered' | 'failed';

/** A bridged message's origin: whom to acknowledge (XEP-0184) or tell about a failure. */
export interface BridgeOrigin {
  /** The hosted JID the original was addressed to (the recipient's proxy): acks come from it. */
  local: string;
  /** The original sender's bare and full JIDs, its stanza id and the protocol it wrote in. */
  from: string;
  fromFull: string;
  stanzaId: string | null;
  encryption: string;
  receiptRequested: boolean;
}

export type OutboxKind = 'bot' | 'bridge';

export interface OutboxMessage {
  id: string;
  kind: OutboxKind;
  /** A bot's localpart, or for a bridged message the hosted JID it is sent from. */
  bot: string;
  to: string;
  encryptionRequested: string | null;
  encryption: string | null;
  status: OutboxStatus;
  error: { code: string; message: string } | null;
  attempts: number;
  nextAttemptAt: number;
  createdAt: number;
  sentAt: number | null;
  deliveredAt: number | null;
  expiresAt: number;
  /** Room messages: occupants (bare JIDs) with no usable device when it was sent. */
  undeliveredTo: string[] | null;
}

export interface OutboxRow {
  id: string;
  kind: OutboxKind;
  bot: string;
  recipient: string;
  body: Buffer | null;
  encryption_requested: string | null;
  encryption: string | null;
  status: OutboxStatus;
  error_code: string | null;
  error_message: string | null;
  idempotency_key: string | null;
  request_hash: string | null;
  seq: number;
  attempts: number;
  created_at: number;
  next_attempt_at: number;
  expires_at: number;
  sent_at: number | null;
  delivered_at: number | null;
  undelivered_to?: string | null;
}

export const toMessage = (r: OutboxRow): OutboxMessage => ({
  id: r.id,
  kind: r.kind,
  bot: r.bot,
  to: r.recipient,
  encryptionRequested: r.encryption_requested,
  encryption: r.encryption,
  status: r.status,
  error: r.error_code ? { code: r.error_code, message: r.error_message ?? '' } : null,
  attempts: r.attempts,
  nextAttemptAt: r.next_attempt_at,
  createdAt: r.created_at,
  sentAt: r.sent_at,
  deliveredAt: r.delivered_at,
  expiresAt: r.expires_at,
  undeliveredTo: r.undelivered_to ? (JSON.parse(r.undelivered_to) as string[]) : null,
});

export interface NewMessage {
  bot: string;
  to: string;
  body: string;
  encryption: string | null;
  idempotencyKey: string | null;
  ttlMs: number;
  /** Set for a bridged message (kind 'bridge'); `bot` is then the hosted JID it is sent from. */
  origin?: BridgeOrigin;
  /** The id a standby already answered with (keystore.url); a new one otherwise. */
  id?: string;
}

export type EnqueueResult = { created: true; message: OutboxMessage } | { created: false; message: OutboxMessage; sameRequest: boolean };

/** How long a receipt's "delivered" may wait for a transaction that other writes start. */
export const DELIVERED_DEFER_MS = 20;

/** A write waiting for this turn's transaction, and who is told once it is committed. */
interface Waiting {
  write: () => unknown;
  resolve: (r: never) => void;
  reject: (e: unknown) => void;
}

export class OutboxStore {
  readonly #ks: Keystore;
  readonly #insert;
  readonly #byId;
  readonly #byIdem;
  readonly #queued;
  readonly #nextInLine;
  readonly #lineBatch;
  readonly #body;
  readonly #origin;
  readonly #markSent;
  readonly #markFailed;
  readonly #retry;
  readonly #markDelivered;
  readonly #markBotDelivered;
  readonly #maxSeq;
  readonly #stats;
  readonly #prune;
  readonly #flushTx;
  readonly #kindOf;
  #seq: number;
  #waiting: Waiting[] = [];
  #flushScheduled = false;
  /** Only deferrable writes (receipts) wait: a timer, not setImmediate. */
  #deferTimer: NodeJS.Timeout | null = null;

  constructor(ks: Keystore) {
    this.#ks = ks;
    const db = ks.db;
    // Positional parameters: better-sqlite3 binds named ones by a property lookup each (issue 16).
    this.#insert = db.prepare<[string, OutboxKind, string, string, Buffer, string | null, string | null, string | null, number, number, number, number, number, Buffer | null]>(
      `INSERT INTO outbox (id, kind, bot, recipient, body, encryption_requested, status, idempotency_key, request_hash, seq, created_at, updated_at, next_attempt_at, expires_at, origin)
       VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#byId = db.prepare<[string], OutboxRow>('SELECT * FROM outbox WHERE id = ?');
    this.#kindOf = db.prepare<[string], { kind: OutboxKind; bot: string }>('SELECT kind, bot FROM outbox WHERE id = ?');
    this.#byIdem = db.prepare<[string, string], OutboxRow>('SELECT * FROM outbox WHERE bot = ? AND idempotency_key = ?');
    this.#queued = db.prepare<[number], OutboxRow>(
      "SELECT id, kind, bot, recipient, NULL AS body, encryption_requested, encryption, status, error_code, error_message, idempotency_key, request_hash, seq, attempts, created_at, next_attempt_at, expires_at, sent_at, delivered_at FROM outbox WHERE status = 'queued' ORDER BY seq LIMIT ?",
    );
    this.#nextInLine = db.prepare<[string, string], OutboxRow>(
      "SELECT id, kind, bot, recipient, NULL AS body, encryption_requested, encryption, status, error_code, error_message, idempotency_key, request_hash, seq, attempts, created_at, next_attempt_at, expires_at, sent_at, delivered_at FROM outbox WHERE bot = ? AND recipient = ? AND status = 'queued' ORDER BY seq LIMIT 1",
    );
    this.#lineBatch = db.prepare<[string, string, number], OutboxRow>("SELECT * FROM outbox WHERE bot = ? AND recipient = ? AND status = 'queued' ORDER BY seq LIMIT ?");
    this.#origin = db.prepare<[string], { origin: Buffer | null }>('SELECT origin FROM outbox WHERE id = ?');
    this.#body = db.prepare<[string], { body: Buffer | null }>('SELECT body FROM outbox WHERE id = ?');
    this.#markSent = db.prepare(
      "UPDATE outbox SET status = 'sent', encryption = ?, undelivered_to = ?, body = NULL, sent_at = ?, updated_at = ?, attempts = attempts + 1 WHERE id = ? AND status = 'queued'",
    );
    this.#markFailed = db.prepare("UPDATE outbox SET status = 'failed', error_code = ?, error_message = ?, body = NULL, updated_at = ? WHERE id = ? AND status IN ('queued', 'sent')");
    this.#retry = db.prepare("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, error_code = ?, error_message = ?, updated_at = ? WHERE id = ? AND status = 'queued'");
    this.#markDelivered = db.prepare("UPDATE outbox SET status = 'delivered', delivered_at = ?, updated_at = ? WHERE id = ? AND recipient = ? AND status = 'sent'");
    this.#markBotDelivered = db.prepare(
      "UPDATE outbox SET status = 'delivered', delivered_at = ?, updated_at = ? WHERE id = ? AND recipient = ? AND status = 'sent' AND kind = 'bot' AND bot = ?",
    );
    this.#maxSeq = db.prepare<[], { s: number | null }>('SELECT max(seq) AS s FROM outbox');
    this.#prune = db.prepare("DELETE FROM outbox WHERE status IN ('sent', 'delivered', 'failed') AND updated_at < ?");
    this.#stats = db.prepare<[], { n: number; oldest: number | null }>("SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE status = 'queued'");
    this.#seq = this.#maxSeq.get()?.s ?? 0;
    // One transaction for a turn's writes; one write's failure is its own (a failed statement is
    // undone alone, the transaction goes on).
    this.#flushTx = db.transaction((waiting: Waiting[]) =>
      waiting.map((w): { ok: true; value: unknown } | { ok: false; error: unknown } => {
        try {
          return { ok: true, value: w.write() };
        } catch (error) {
          return { ok: false, error };
        }
      }),
    );
    ks.beforeClose(() => this.flush());
  }

  static newId(): string {
    // 96 random bits, from the pool (a CSPRNG call per message was ~2% of the gateway's CPU, issue 16).
    return `msg_${pooledRandomBytes(12).toString('base64url')}`;
  }

  static requestHash(to: string, body: string, encryption: string | null): string {
    return createHash('sha256').update(JSON.stringify([to, body, encryption])).digest('hex');
  }

  /** Stores a new message, or returns the one an earlier request with the same idempotency key made. */
  enqueue(m: NewMessage, now = Date.now()): EnqueueResult {
    return this.#ks.transaction(() => this.#enqueueOne(m, now));
  }

  /**
   * enqueue(), committed together with whatever else this event-loop turn writes (group commit):
   * resolves once the transaction holding it is committed, in the order the calls were made.
   */
  accept(m: NewMessage, now = Date.now()): Promise<EnqueueResult> {
    return this.#soon(() => this.#enqueueOne(m, now));
  }

  /** markSent(), committed with this turn's other writes; resolves with its result once committed. */
  markSentSoon(id: string, encryption: string, undeliveredTo: readonly string[] | null = null): Promise<boolean> {
    return this.#soon(() => this.markSent(id, encryption, Date.now(), undeliveredTo));
  }

  /**
   * markSent() without a transaction of its own: it rides on the next one other writes start (the
   * next POST's accept, as a receipt does), or is committed DELIVERED_DEFER_MS later. A crash before
   * that sends the message again (under the same stanza id): the at-least-once window (README).
   * Until it is committed, every read of the queue (queued, nextInLine, lineBatch) and get() commits
   * what waits first, so the message is never read back as queued.
   */
  markSentLater(id: string, encryption: string, undeliveredTo: readonly string[] | null = null): Promise<boolean> {
    const now = Date.now();
    return this.#soon(() => this.markSent(id, encryption, now, undeliveredTo), true);
  }

  /** Commits what waits (a deferred sent mark) before a read that must see it; not inside a transaction. */
  #settle(): void {
    if (this.#waiting.length > 0 && !this.#ks.db.inTransaction) this.flush();
  }

  /**
   * markDelivered(), committed with the next transaction other writes start (or after
   * DELIVERED_DEFER_MS); resolves with its result once committed. With `bot`, only a message of that
   * bot (kind 'bot') is marked: a bot's receipt needs no read of the row first.
   */
  markDeliveredSoon(id: string, from: string, now = Date.now(), bot?: string): Promise<boolean> {
    return this.#soon(() => (bot === undefined ? this.markDelivered(id, from, now) : this.#markBotDelivered.run(now, now, id, from, bot).changes > 0), true);
  }

  /** Commits what the *Soon() calls and accept() collected (at setImmediate, or now: before close). */
  flush(): void {
    this.#flushScheduled = false;
    if (this.#deferTimer) {
      clearTimeout(this.#deferTimer);
      this.#deferTimer = null;
    }
    const waiting = this.#waiting;
    if (waiting.length === 0) return;
    this.#waiting = [];
    let results;
    try {
      if (!this.#ks.db.open) throw new GatewayError('keystore_unavailable', 'The keystore is closed.');
      results = this.#flushTx(waiting);
    } catch (e) {
      for (const w of waiting) w.reject(e);
      return;
    }
    results.forEach((r, i) => (r.ok ? waiting[i]!.resolve(r.value as never) : waiting[i]!.reject(r.error)));
  }

  #soon<T>(write: () => T, deferrable = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#waiting.push({ write, resolve: resolve as (r: never) => void, reject });
      if (this.#flushScheduled) return;
      if (deferrable) {
        this.#deferTimer ??= setTimeout(() => this.flush(), DELIVERED_DEFER_MS);
        return;
      }
      this.#flushScheduled = true;
      setImmediate(() => this.flush());
    });
  }

  #enqueueOne(m: NewMessage, now: number): EnqueueResult {
    // Only a request with an idempotency key is ever compared with another (a replay under the same
    // key): without one, no hash is computed or stored.
    const hash = m.idempotencyKey ? OutboxStore.requestHash(m.to, m.body, m.encryption) : null;
    if (m.idempotencyKey) {
      const existing = this.#byIdem.get(m.bot, m.idempotencyKey);
      if (existing) return { created: false, message: toMessage(existing), sameRequest: existing.request_hash === hash };
    }
    const id = m.id ?? OutboxStore.newId();
    const kind: OutboxKind = m.origin ? 'bridge' : 'bot';
    const seq = ++this.#seq;
    this.#insert.run(
      id,
      kind,
      m.bot,
      m.to,
      this.#ks.sealer.seal(m.body, `outbox\0${id}`),
      m.encryption,
      m.idempotencyKey,
      hash,
      seq,
      now,
      now,
      now,
      now + m.ttlMs,
      m.origin ? this.#ks.sealer.seal(JSON.stringify(m.origin), `outbox-origin\0${id}`) : null,
    );
    // The row as inserted (no read back).
    const message: OutboxMessage = {
      id,
      kind,
      bot: m.bot,
      to: m.to,
      encryptionRequested: m.encryption,
      encryption: null,
      status: 'queued',
      error: null,
      attempts: 0,
      nextAttemptAt: now,
      createdAt: now,
      sentAt: null,
      deliveredAt: null,
      expiresAt: now + m.ttlMs,
      undeliveredTo: null,
    };
    return { created: true, message };
  }

  /** Whose line a message is in (for a receipt: a bridged message or a bot's), without the rest of the row. */
  kindOf(id: string): { kind: OutboxKind; bot: string } | undefined {
    return this.#kindOf.get(id);
  }

  get(id: string): OutboxMessage | undefined {
    this.#settle();
    const r = this.#byId.get(id);
    return r ? toMessage(r) : undefined;
  }

  /** Queued messages, oldest first (without bodies); the sender picks the head of each line. */
  queued(limit: number): OutboxMessage[] {
    this.#settle();
    return this.#queued.all(limit).map(toMessage);
  }

  /** The oldest queued message from `bot` to `to`, if any. */
  nextInLine(bot: string, to: string): OutboxMessage | undefined {
    this.#settle();
    const r = this.#nextInLine.get(bot, to);
    return r ? toMessage(r) : undefined;
  }

  /**
   * The head of a line (`headId`) and the messages due right behind it, in order, bodies opened, up
   * to `limit`; empty when `headId` is not the line's head any more. It stops before a message
   * that is not due or whose body is gone.
   */
  lineBatch(bot: string, to: string, headId: string, limit: number, now = Date.now()): Array<OutboxMessage & { plaintext: string }> {
    this.#settle();
    const rows = this.#lineBatch.all(bot, to, limit);
    if (rows[0]?.id !== headId) return [];
    const out: Array<OutboxMessage & { plaintext: string }> = [];
    for (const r of rows) {
      if (r.next_attempt_at > now || !r.body) break;
      out.push({ ...toMessage(r), plaintext: this.#ks.sealer.open(r.body, `outbox\0${r.id}`).toString('utf8') });
    }
    return out;
  }

  /** The sealed body of a queued message, opened. */
  body(id: string): string | null {
    const r = this.#body.get(id);
    return r?.body ? this.#ks.sealer.open(r.body, `outbox\0${id}`).toString('utf8') : null;
  }

  /** A bridged message's origin (kept after the body is wiped, for receipts), opened. */
  origin(id: string): BridgeOrigin | null {
    const r = this.#origin.get(id);
    return r?.origin ? (JSON.parse(this.#ks.sealer.open(r.origin, `outbox-origin\0${id}`).toString('utf8')) as BridgeOrigin) : null;
  }

  /** queued -> sent; `undeliveredTo` lists a room message's occupants left out (no usable device). */
  markSent(id: string, encryption: string, now = Date.now(), undeliveredTo: readonly string[] | null = null): boolean {
    return this.#markSent.run(encryption, undeliveredTo ? JSON.stringify(undeliveredTo) : null, now, now, id).changes > 0;
  }

  markFailed(id: string, code: string, message: string, now = Date.now()): boolean {
    return this.#markFailed.run(code, message, now, id).changes > 0;
  }

  retryLater(id: string, at: number, code: string, message: string, now = Date.now()): void {
    this.#retry.run(at, code, message, now, id);
  }

  /** A XEP-0184 receipt from `from` for message `id`: sent -> delivered. */
  markDelivered(id: string, from: string, now = Date.now()): boolean {
    return this.#markDelivered.run(now, now, id, from).changes > 0;
  }

  /** Forgets finished messages last changed before `olderThan` (their status is no longer served). */
  prune(olderThan: number): number {
    return this.#prune.run(olderThan).changes;
  }

  stats(): { depth: number; oldestCreatedAt: number | null } {
    this.#settle();
    const r = this.#stats.get()!;
    return { depth: r.n, oldestCreatedAt: r.oldest };
  }
}
