// The one place HTTP errors become responses: `{error: {code, message}}` with the code's status.
// 500s get a generic message; their cause goes to the log only.
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import { GatewayError, toGatewayError } from '../errors.js';

/** Maps body-parser's errors (bad JSON, too large) onto our codes. */
export function fromHttpError(err: unknown): GatewayError {
  const e = err as { type?: string; status?: number };
  if (e && e.type === 'entity.parse.failed') return new GatewayError('bad_json');
  if (e && e.type === 'entity.too.large') return new GatewayError('payload_too_large');
  if (e && (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported')) return new GatewayError('bad_request', 'Unsupported body encoding.');
  if (e && e.status === 400 && e.type) return new GatewayError('bad_request');
  return toGatewayError(err);
}

export function errorHandler(log: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    const g = fromHttpError(err);
    if (g.http >= 500 && g.code !== 'not_ready' && g.code !== 'keystore_unavailable') {
      log.error({ err, method: req.method, path: req.route?.path ?? 'unmatched' }, 'request failed');
    }
    if (res.headersSent) return;
    const message = g.code === 'internal' ? 'Internal error.' : g.userText;
    res.status(g.http).json({ error: { code: g.code, message } });
  };
}
