// The one place HTTP errors become responses: `{error: {code, message}}` with the code's status.
// 500s get a generic message; their cause goes to the log only.
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import { GatewayError, toGatewayError } from '../errors.js';
import { LimitError } from '../limits.js';

/**
 * Maps the errors of express and body-parser onto our codes. Whatever comes of the client's own
 * bytes (a path, a body, its encoding) is a 4xx, never a 500 with a stack in the log (issue 15).
 */
export function fromHttpError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as { type?: string; status?: number; code?: unknown };
  if (e && e.type === 'entity.parse.failed') return new GatewayError('bad_json');
  if (e && e.type === 'entity.too.large') return new GatewayError('payload_too_large');
  if (e && (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported')) return new GatewayError('bad_request', 'Unsupported body encoding.');
  // The router decodes path parameters with decodeURIComponent: `%zz`, `%E0%A4%A`, a lone `%`.
  if (err instanceof URIError) return new GatewayError('bad_request', 'The path holds a malformed percent-escape.');
  // A compressed body that does not decompress (Content-Encoding: gzip, deflate, br): body-parser
  // passes zlib's own error on.
  if (e && typeof e.code === 'string' && /^(Z_|ERR__ERROR|ERR_BROTLI|ERR_ZLIB)/.test(e.code)) {
    return new GatewayError('bad_request', 'The body could not be decompressed (Content-Encoding).');
  }
  if (e && typeof e.status === 'number' && e.status >= 400 && e.status < 500) return new GatewayError(e.status === 413 ? 'payload_too_large' : 'bad_request');
  return toGatewayError(err);
}

/** The reply for an error (its 500 cause logged): status, Retry-After if any, and the `{error}` body. */
export function errorReply(log: Logger, err: unknown, method: string | undefined, path: string): { status: number; retryAfter: string | null; body: { error: { code: string; message: string } } } {
  const g = fromHttpError(err);
  if (g.http >= 500 && g.code !== 'not_ready' && g.code !== 'keystore_unavailable') {
    log.error({ err, method, path }, 'request failed');
  }
  const retryAfter = g instanceof LimitError && g.retryAfterSeconds !== null ? String(g.retryAfterSeconds) : null;
  const message = g.code === 'internal' ? 'Internal error.' : g.userText;
  return { status: g.http, retryAfter, body: { error: { code: g.code, message } } };
}

export function errorHandler(log: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    const r = errorReply(log, err, req.method, req.route?.path ?? 'unmatched');
    if (res.headersSent) return;
    if (r.retryAfter !== null) res.setHeader('Retry-After', r.retryAfter);
    res.status(r.status).json(r.body);
  };
}
