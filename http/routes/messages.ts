// POST /v1/messages and GET /v1/messages/{id}: bots send end-to-end encrypted messages. A message is
// committed to the outbox (body sealed) before the 202 (group commit per
// event-loop turn: OutboxStore.accept); an Idempotency-Key returns the same message.
import type { ServerResponse } from 'node:http';
import { Router, type Request, type Response } from 'express';
import type { Config } from '../../config.js';
import { PROTOCOLS } from '../../config.js';
import { GatewayError } from '../../errors.js';
import type { Addressing } from '../../component/addressing.js';
import { bare } from '../../component/jid.js';
import type { NewMessage, OutboxMessage, OutboxStore } from '../../keystore/outbox-store.js';
import { principalOf, type Principal } from '../auth.js';
import type { TokenBuckets } from '../rate-limit.js';
import { jsonObject, optionalEnum, requiredString } from '../validate.js';

export interface MessagesDeps {
  config: Config;
  addressing: Addressing;
  outbox: OutboxStore;
  buckets: TokenBuckets;
  /** Called after a message is committed (wakes the sender for its line), with its body (the sender need not read it back). */
  queued: (m: OutboxMessage, body: string) => void;
  /** The bots' rooms: a `to` that is one of them is a group message (its domain need not be bridged). */
  rooms?: { isRoom(localpart: string, jid: string): boolean; refusal(localpart: string, jid: string, allowPlaintext: boolean): GatewayError | null };
  /** Back-pressure (http/back-pressure.ts): the refusal for a new message from this bot, or null. */
  overloaded?: (bot: string) => GatewayError | null;
}

export function messageView(m: OutboxMessage): Record<string, unknown> {
  return {
    id: m.id,
    to: m.to,
    status: m.status,
    encryption: m.encryption ?? m.encryptionRequested ?? null,
    ...(m.error ? { error: m.error } : {}),
    ...(m.undeliveredTo ? { undelivered_to: m.undeliveredTo } : {}),
    created_at: new Date(m.createdAt).toISOString(),
    ...(m.sentAt ? { sent_at: new Date(m.sentAt).toISOString() } : {}),
    ...(m.deliveredAt ? { delivered_at: new Date(m.deliveredAt).toISOString() } : {}),
  };
}

/** What readMessageRequest reads of a POST /v1/messages: the same from express and from the fast path (http/fast-messages.ts). */
export interface MessageRequest {
  principal: Principal;
  /** The parsed JSON body (undefined when there was none). */
  body: unknown;
  /** The Idempotency-Key header as received. */
  idempotencyKey: string | undefined;
  /** Sets a response header (Retry-After on a refusal). */
  setHeader(name: string, value: string): void;
}

export function expressMessageRequest(req: Request, res: Response): MessageRequest {
  return { principal: principalOf(res), body: req.body, idempotencyKey: req.get('Idempotency-Key'), setHeader: (n, v) => res.setHeader(n, v) };
}

const ENCRYPTIONS = [...PROTOCOLS, 'none'] as const;

/** Validates a POST /v1/messages (and takes its rate-limit token): the message to queue. */
export function readMessageRequest(d: Pick<MessagesDeps, 'config' | 'addressing' | 'buckets' | 'overloaded' | 'rooms'>, req: MessageRequest): NewMessage {
  if (req.principal.kind !== 'bot') throw new GatewayError('forbidden', 'This call needs a bot token.');
  const bot = req.principal.bot;
  const wait = d.buckets.take(bot.localpart, bot.rateLimit.perSecond, bot.rateLimit.burst);
  if (wait > 0) {
    req.setHeader('Retry-After', String(Math.max(1, Math.ceil(wait))));
    throw new GatewayError('rate_limited', `Rate limit of ${bot.rateLimit.perSecond} messages per second exceeded.`);
  }
  const overload = d.overloaded?.(bot.localpart);
  if (overload) throw overload;
  const o = jsonObject(req.body, ['to', 'body', 'encryption']);
  const toRaw = requiredString(o, 'to');
  const body = requiredString(o, 'body');
  const encryption = optionalEnum(o, 'encryption', ENCRYPTIONS) ?? null;
  if (Buffer.byteLength(body, 'utf8') > d.config.outbox.maxBodyBytes) {
    throw new GatewayError('payload_too_large', `"body" is larger than ${d.config.outbox.maxBodyBytes} bytes.`);
  }
  let to: string;
  try {
    to = bare(toRaw);
  } catch {
    throw new GatewayError('invalid_field', '"to" is not a valid JID.');
  }
  if (!to.includes('@')) throw new GatewayError('invalid_field', '"to" must be a user JID (local@domain).');
  const room = d.rooms?.isRoom(bot.localpart, to) ?? false;
  if (room) {
    const refused = d.rooms!.refusal(bot.localpart, to, d.config.bridge.allowPlaintext || bot.allowPlaintext);
    if (refused) throw refused;
  } else if (!d.addressing.isAllowedJid(to)) throw new GatewayError('recipient_not_allowed', `"to": ${to.split('@')[1]} is not a domain this gateway serves.`);
  if (encryption === 'none' && !(d.config.bridge.allowPlaintext || bot.allowPlaintext)) {
    throw new GatewayError('plaintext_refused', 'Plaintext sending is not enabled for this bot.');
  }
  const key = req.idempotencyKey;
  if (key !== undefined && (key.length === 0 || key.length > 255)) throw new GatewayError('invalid_field', 'Idempotency-Key must be 1 to 255 characters.');
  return { bot: bot.localpart, to, body, encryption, idempotencyKey: key ?? null, ttlMs: d.config.outbox.messageTtlSeconds * 1000 };
}

/** POST /v1/messages past the HTTP layer: validated, committed (with the other messages of this event-loop turn) before the 202. */
export async function acceptMessage(d: MessagesDeps, req: MessageRequest): Promise<{ id: string; status: string; replayed: boolean }> {
  const m = readMessageRequest(d, req);
  const result = await d.outbox.accept(m);
  if (!result.created && !result.sameRequest) {
    throw new GatewayError('conflict', 'This Idempotency-Key was used for a different request.');
  }
  if (result.created) d.queued(result.message, m.body);
  return { id: result.message.id, status: result.message.status, replayed: !result.created };
}

const JSON_UTF8 = 'application/json; charset=utf-8';

/**
 * The 202 of POST /v1/messages, written the same way by the express route, the fast path
 * (http/fast-messages.ts) and a standby (ha/standby-app.ts): Location, Idempotent-Replayed on a
 * replay, the JSON body; one writeHead and one end (no ETag: a 202 to a POST has nothing to
 * revalidate). Returns false when the response could no longer be written.
 */
export function writeAccepted(res: ServerResponse, a: { id: string; status: string; replayed: boolean }): boolean {
  if (res.headersSent || res.destroyed) return false;
  const text = `{"id":${JSON.stringify(a.id)},"status":${JSON.stringify(a.status)}}`;
  const headers = ['Location', `/v1/messages/${a.id}`];
  if (a.replayed) headers.push('Idempotent-Replayed', 'true');
  headers.push('Content-Type', JSON_UTF8, 'Content-Length', String(Buffer.byteLength(text)));
  res.writeHead(202, headers);
  res.end(text);
  return true;
}

export function messagesRoutes(d: MessagesDeps): Router {
  const r = Router();

  r.post('/messages', async (req, res) => {
    writeAccepted(res, await acceptMessage(d, expressMessageRequest(req, res)));
  });

  r.get('/messages/:id', (req, res) => {
    const p = principalOf(res);
    const m = d.outbox.get(req.params.id!);
    // Another bot's message is as invisible as a missing one; the admin may read any.
    if (!m || (p.kind === 'bot' && m.bot !== p.bot.localpart)) throw new GatewayError('not_found', 'No such message.');
    res.json(messageView(m));
  });

  return r;
}
