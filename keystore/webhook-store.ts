// The durable webhook queue: every message decrypted for a bot (and every status change of a sent
// message) is committed here, sealed, before anything acknowledges it; the dispatcher then delivers
// in order per (bot, sender), retrying, and dead-letters what keeps failing.
import { randomBytes } from 'node:crypto';
import type { Keystore } from './keystore.js';

export type DeliveryStatus = 'pending' | 'delivered' | 'dead';

export interface Delivery {
  id: string;
  bot: string;
  orderingKey: string;
  seq: number;
  status: DeliveryStatus;
  attempts: number;
  nextAttemptAt: number;
  firstAttemptAt: number | null;
  lastError: string | null;
  createdAt: number;
}

interface Row {
  id: string;
  bot: string;
  ordering_key: string;
  payload: Buffer | null;
  seq: number;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: number;
  first_attempt_at: number | null;
  last_error: string | null;
  created_at: number;
}

const toDelivery = (r: Row): Delivery => ({
  id: r.id,
  bot: r.bot,
  orderingKey: r.ordering_key,
  seq: r.seq,
  status: r.status,
  attempts: r.attempts,
  nextAttemptAt: r.next_attempt_at,
  firstAttemptAt: r.first_attempt_at,
  lastError: r.last_error,
  createdAt: r.created_at,
});

const COLS = 'id, bot, ordering_key, seq, status, attempts, next_attempt_at, first_attempt_at, last_error, created_at';

export class WebhookStore {
  readonly #ks: Keystore;
  readonly #insert;
  readonly #heads;
  readonly #nextInLine;
  readonly #payload;
  readonly #delivered;
  readonly #retry;
  readonly #dead;
  readonly #deadList;
  readonly #revive;
  readonly #byId;
  readonly #counts;
  readonly #prune;
  #seq: number;

  constructor(ks: Keystore) {
    this.#ks = ks;
    const db = ks.db;
    this.#insert = db.prepare(
      "INSERT INTO webhook_queue (id, bot, ordering_key, payload, seq, status, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
    );
    // The head of each sender's line: the oldest pending delivery per ordering key.
    // (SQLite: with a lone min() aggregate, the other columns come from the row holding the minimum.)
    this.#heads = db.prepare<[string, number], Row>(
      `SELECT id, bot, ordering_key, min(seq) AS seq, status, attempts, next_attempt_at, first_attempt_at, last_error, created_at
         FROM webhook_queue WHERE bot = ? AND status = 'pending' GROUP BY ordering_key ORDER BY seq LIMIT ?`,
    );
    this.#nextInLine = db.prepare<[string, string], Row>(
      `SELECT ${COLS} FROM webhook_queue WHERE bot = ? AND status = 'pending' AND ordering_key = ? ORDER BY seq LIMIT 1`,
    );
    this.#payload = db.prepare<[string], { payload: Buffer | null }>('SELECT payload FROM webhook_queue WHERE id = ?');
    this.#delivered = db.prepare("UPDATE webhook_queue SET status = 'delivered', payload = NULL, delivered_at = ?, attempts = attempts + 1 WHERE id = ? AND status = 'pending'");
    this.#retry = db.prepare(
      "UPDATE webhook_queue SET attempts = attempts + 1, next_attempt_at = ?, first_attempt_at = coalesce(first_attempt_at, ?), last_error = ? WHERE id = ? AND status = 'pending'",
    );
    this.#dead = db.prepare("UPDATE webhook_queue SET status = 'dead', attempts = attempts + 1, last_error = ? WHERE id = ? AND status = 'pending'");
    this.#deadList = db.prepare<[string | null, string | null], Row>(`SELECT ${COLS} FROM webhook_queue WHERE status = 'dead' AND (? IS NULL OR bot = ?) ORDER BY seq`);
    this.#revive = db.prepare("UPDATE webhook_queue SET status = 'pending', attempts = 0, first_attempt_at = NULL, next_attempt_at = ?, seq = ? WHERE id = ? AND status = 'dead'");
    this.#byId = db.prepare<[string], Row>(`SELECT ${COLS} FROM webhook_queue WHERE id = ?`);
    this.#counts = db.prepare<[], { bot: string; status: DeliveryStatus; n: number }>("SELECT bot, status, count(*) AS n FROM webhook_queue WHERE status != 'delivered' GROUP BY bot, status");
    this.#prune = db.prepare("DELETE FROM webhook_queue WHERE status = 'delivered' AND delivered_at < ?");
    this.#seq = (db.prepare('SELECT max(seq) AS s FROM webhook_queue').get() as { s: number | null }).s ?? 0;
  }

  static newId(): string {
    return `evt_${randomBytes(12).toString('base64url')}`;
  }

  /** Commits a delivery; its id is the webhook-id the receiver sees on every attempt. */
  enqueue(bot: string, orderingKey: string, payload: { id: string; [k: string]: unknown }, now = Date.now()): string {
    const text = JSON.stringify(payload);
    this.#insert.run(payload.id, bot, orderingKey, this.#ks.sealer.seal(text, `webhook\0${payload.id}`), ++this.#seq, now, now);
    return payload.id;
  }

  /** For each sender with pending deliveries, its oldest one (only heads may be sent, to keep order). */
  heads(bot: string, limit: number): Delivery[] {
    return this.#heads.all(bot, limit).map(toDelivery);
  }

  /** The oldest pending delivery of one sender's line. */
  nextInLine(bot: string, orderingKey: string): Delivery | undefined {
    const r = this.#nextInLine.get(bot, orderingKey);
    return r ? toDelivery(r) : undefined;
  }

  payload(id: string): string | null {
    const r = this.#payload.get(id);
    return r?.payload ? this.#ks.sealer.open(r.payload, `webhook\0${id}`).toString('utf8') : null;
  }

  markDelivered(id: string, now = Date.now()): void {
    this.#delivered.run(now, id);
  }

  retryLater(id: string, at: number, error: string, now = Date.now()): void {
    this.#retry.run(at, now, error, id);
  }

  markDead(id: string, error: string): void {
    this.#dead.run(error, id);
  }

  get(id: string): Delivery | undefined {
    const r = this.#byId.get(id);
    return r ? toDelivery(r) : undefined;
  }

  deadLetters(bot?: string): Delivery[] {
    return this.#deadList.all(bot ?? null, bot ?? null).map(toDelivery);
  }

  /** Puts a dead letter back in line (at the end), to be tried again now. */
  revive(id: string, now = Date.now()): boolean {
    return this.#revive.run(now, ++this.#seq, id).changes > 0;
  }

  counts(): Array<{ bot: string; status: DeliveryStatus; n: number }> {
    return this.#counts.all();
  }

  prune(olderThan: number): number {
    return this.#prune.run(olderThan).changes;
  }
}
