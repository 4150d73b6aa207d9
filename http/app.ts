// The express app: health and metrics, then the authenticated /v1 API. createApp() does not listen,
// so tests drive it with supertest.
import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Express, type Router } from 'express';
import type { Logger } from 'pino';
import { GatewayError } from '../errors.js';
import type { TokenAuth } from './auth.js';
import { errorHandler } from './error-handler.js';
import { healthRoutes, type ReadinessCheck } from './health.js';
import type { Metrics } from './metrics.js';

export interface AppDeps {
  log: Logger;
  metrics: Metrics;
  auth: TokenAuth;
  bodyLimitBytes: number;
  readiness: ReadinessCheck[];
  /** Authenticated API routers mounted under /v1. */
  api: Router[];
  /** Unauthenticated extras (e.g. /openapi.json). */
  publicRoutes?: Router[];
  /** For /readyz: 'standby' on a standby instance (keystore.url). */
  role?: () => 'active' | 'standby';
  /** Answers a request ahead of the router and returns true, or returns false for express (http/fast-messages.ts). */
  fast?: (req: IncomingMessage, res: ServerResponse) => boolean;
}

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use((req, res, next) => {
    res.on('finish', () => {
      const route = req.route?.path ? `${req.baseUrl}${req.route.path}` : 'unmatched';
      deps.metrics.httpRequests.inc({ route, status: String(res.statusCode) });
    });
    next();
  });
  app.use(healthRoutes(deps.metrics, deps.readiness, deps.role));
  for (const r of deps.publicRoutes ?? []) app.use(r);
  // Authenticate first (401 before any body is read), then JSON only, size-limited; a wrong
  // content type is refused rather than ignored.
  app.use('/v1', deps.auth.middleware());
  app.use('/v1', (req, _res, next) => {
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if ((req.method === 'POST' || req.method === 'PUT') && hasBody && !req.is('application/json')) {
      next(new GatewayError('bad_request', 'The body must be JSON (Content-Type: application/json).'));
      return;
    }
    next();
  });
  app.use('/v1', express.json({ limit: deps.bodyLimitBytes, strict: true }));
  for (const r of deps.api) app.use('/v1', r);
  app.use((_req, _res, next) => next(new GatewayError('not_found')));
  app.use(errorHandler(deps.log));
  const fast = deps.fast;
  if (fast) {
    // Ahead of the router: express's own entry point (app(req, res) calls app.handle) is wrapped.
    type Handle = (req: IncomingMessage, res: ServerResponse, done?: unknown) => void;
    const entry = app as unknown as { handle: Handle };
    const routed = entry.handle.bind(app);
    entry.handle = (req, res, done) => {
      if (!fast(req, res)) routed(req, res, done);
    };
  }
  return app;
}
