// The HTTP API of a standby instance (keystore.url): health, metrics and the bot message calls,
// which work on PostgreSQL directly. POST /v1/messages (to users and to the bots' rooms) is committed
// to gw_accepted before its 202 and sent by the active instance; GET /v1/messages/{id} reads what the active instance last committed.
// Anything else needs the engines and answers 503 `standby`.
import { Router, type Express } from 'express';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { GatewayError } from '../errors.js';
import { Addressing } from '../component/addressing.js';
import { createApp } from '../http/app.js';
import { TokenAuth, principalOf } from '../http/auth.js';
import type { Metrics } from '../http/metrics.js';
import { openapiRoutes } from '../http/openapi.js';
import { TokenBuckets } from '../http/rate-limit.js';
import { expressMessageRequest, messageView, readMessageRequest, writeAccepted } from '../http/routes/messages.js';
import { OutboxStore, toMessage, type OutboxMessage, type OutboxRow } from '../keystore/outbox-store.js';
import type { PgBackend } from '../keystore/pg/backend.js';

export interface StandbyDeps {
  config: Config;
  backend: PgBackend;
  metrics: Metrics;
  log: Logger;
  /** Whether the keystore answered lately (readiness). */
  reachable: () => boolean;
}

export function standbyApp(d: StandbyDeps): Express {
  const addressing = new Addressing(d.config.component.domain, d.config.bots.map((b) => b.localpart), d.config.bridge.allowedDomains);
  // A bot's rooms are in its config, so a standby tells a group message from a refused domain the
  // same way; whether a room is private enough is known only to the active instance, which fails
  // the message then (status failed, room_not_private) instead of a 409 here.
  const rooms = new Set(d.config.bots.flatMap((b) => (b.rooms ?? []).map((r) => `${b.localpart}\0${r.jid}`)));
  const deps = {
    config: d.config,
    addressing,
    buckets: new TokenBuckets(),
    rooms: { isRoom: (localpart: string, jid: string) => rooms.has(`${localpart}\0${jid}`), refusal: () => null },
  };
  const r = Router();
  r.post('/messages', async (req, res) => {
    const m = readMessageRequest(deps, expressMessageRequest(req, res));
    const result = await d.backend.accept({ ...m, id: OutboxStore.newId(), createdAt: Date.now() });
    if (!result.created && !result.sameRequest) throw new GatewayError('conflict', 'This Idempotency-Key was used for a different request.');
    writeAccepted(res, { id: result.id, status: 'queued', replayed: !result.created });
  });
  r.get('/messages/:id', async (req, res) => {
    const p = principalOf(res);
    const id = req.params.id!;
    let m: OutboxMessage | undefined;
    const row = await d.backend.committedRow('outbox', JSON.stringify([id]));
    if (row) m = toMessage(row as unknown as OutboxRow);
    else {
      const a = await d.backend.acceptedMessage(id);
      if (a) {
        m = {
          id, kind: 'bot', bot: a.bot, to: a.to, encryptionRequested: a.encryption, encryption: null, status: 'queued', error: null,
          attempts: 0, nextAttemptAt: a.createdAt, createdAt: a.createdAt, sentAt: null, deliveredAt: null, expiresAt: a.createdAt + a.ttlMs, undeliveredTo: null,
        };
      }
    }
    if (!m || (p.kind === 'bot' && m.bot !== p.bot.localpart)) throw new GatewayError('not_found', 'No such message.');
    res.json(messageView(m));
  });
  r.use((_req, _res, next) => next(new GatewayError('standby')));
  return createApp({
    log: d.log,
    metrics: d.metrics,
    auth: new TokenAuth(d.config.http.adminToken, d.config.bots),
    bodyLimitBytes: d.config.http.bodyLimitBytes,
    readiness: [{ name: 'keystore', check: () => (d.reachable() ? { ok: true } : { ok: false, reason: 'PostgreSQL does not answer' }) }],
    role: () => 'standby',
    publicRoutes: [openapiRoutes()],
    api: [r],
  });
}
