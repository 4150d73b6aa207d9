// POST /v1/messages ahead of the express router (issue 16): the bots' hot path. It takes only the
// plain case, decided from the headers before a byte of the body is read: exactly that path, a bot's
// bearer token, `Content-Type: application/json` (charset utf-8 or none), a Content-Length between 1
// and http.body_limit, no Content-Encoding, no Transfer-Encoding. Anything else (gzip, chunked,
// another charset, a bad token, the admin, a body too large, ...) goes to express unchanged, so
// every status, error shape and header of the contract keeps coming from one place. What it does is
// what express did for that case: the body read whole, decoded as UTF-8 without a BOM, parsed
// strictly (`{` or `[` first, else bad_json), then the same readMessageRequest and acceptMessage,
// answered by the same writeAccepted as the express route (writeHead + end).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { TokenAuth } from './auth.js';
import { errorReply } from './error-handler.js';
import type { Metrics } from './metrics.js';
import { acceptMessage, writeAccepted, type MessageRequest, type MessagesDeps } from './routes/messages.js';
import { GatewayError } from '../errors.js';

export interface FastMessagesDeps {
  messages: MessagesDeps;
  auth: TokenAuth;
  metrics: Metrics;
  log: Logger;
  bodyLimitBytes: number;
}

const ROUTE = '/v1/messages';
const JSON_TYPE = /^application\/json[ \t]*(?:;[ \t]*charset[ \t]*=[ \t]*(?:utf-8|"utf-8")[ \t]*)?$/i;
const BEARER = /^Bearer\s+(\S+)\s*$/i;
const CONTENT_TYPE = 'application/json; charset=utf-8';

/** Returns a handler that answers the plain POST /v1/messages and returns true, or returns false (untouched) for express. */
export function fastMessages(d: FastMessagesDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const accepted = d.metrics.httpRequests.labels({ route: ROUTE, status: '202' }); // one child, no label work per message
  return (req, res) => {
    if (req.method !== 'POST' || req.url !== ROUTE) return false;
    const h = req.headers;
    if (h['transfer-encoding'] !== undefined || h['content-encoding'] !== undefined) return false;
    const type = h['content-type'];
    if (type === undefined || !JSON_TYPE.test(type)) return false;
    const lengthHeader = h['content-length'];
    if (lengthHeader === undefined || !/^[0-9]{1,10}$/.test(lengthHeader)) return false;
    const length = Number(lengthHeader);
    if (length === 0 || length > d.bodyLimitBytes) return false;
    const authorization = h.authorization;
    const bearer = typeof authorization === 'string' ? BEARER.exec(authorization) : null;
    const principal = bearer ? d.auth.identify(bearer[1]!) : null;
    if (!principal || principal.kind !== 'bot') return false;
    readBody(req, length, (body) => {
      let parsed: unknown;
      try {
        parsed = parseStrictJson(body);
      } catch (err) {
        reply(d, req, res, err, 'unmatched');
        return;
      }
      const extra: string[] = [];
      const request: MessageRequest = {
        principal,
        body: parsed,
        idempotencyKey: h['idempotency-key'] as string | undefined,
        setHeader: (name, value) => extra.push(name, value),
      };
      acceptMessage(d.messages, request).then(
        (a) => {
          if (writeAccepted(res, a)) accepted.inc();
        },
        (err: unknown) => reply(d, req, res, err, ROUTE, extra),
      );
    });
    return true;
  };
}

/** Collects exactly `length` bytes (the HTTP parser frames them); a request that aborts is dropped, as nothing can be answered. */
function readBody(req: IncomingMessage, length: number, done: (body: Buffer) => void): void {
  const chunks: Buffer[] = [];
  let received = 0;
  req.on('data', (c: Buffer) => {
    chunks.push(c);
    received += c.length;
  });
  req.on('end', () => {
    if (received !== length) return;
    done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received));
  });
  req.on('error', () => {});
}

/** body-parser's json({strict: true}) on a UTF-8 body: BOM dropped, `{` or `[` first, JSON.parse. */
function parseStrictJson(body: Buffer): unknown {
  let text = body.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.length === 0) return {};
  const first = /^[\x20\x09\x0a\x0d]*([^\x20\x09\x0a\x0d]|$)/.exec(text)?.[1];
  if (first !== '{' && first !== '[') throw new GatewayError('bad_json');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new GatewayError('bad_json');
  }
}

function reply(d: FastMessagesDeps, req: IncomingMessage, res: ServerResponse, err: unknown, route: string, extra: string[] = []): void {
  const r = errorReply(d.log, err, req.method, route === ROUTE ? '/messages' : 'unmatched');
  const text = JSON.stringify(r.body);
  const headers = [...extra];
  if (r.retryAfter !== null && !extra.includes('Retry-After')) headers.push('Retry-After', r.retryAfter);
  headers.push('Content-Type', CONTENT_TYPE, 'Content-Length', String(Buffer.byteLength(text)));
  write(d, res, r.status, headers, text, route);
}

function write(d: FastMessagesDeps, res: ServerResponse, status: number, headers: string[], text: string, route: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, headers);
  res.end(text);
  d.metrics.httpRequests.inc({ route, status: String(status) });
}
