// /healthz (the process is up), /readyz (200 only while the component is connected and the keystore
// open; otherwise 503 with the reasons) and /metrics. No authentication on these three.
import { Router } from 'express';
import type { Metrics } from './metrics.js';

export interface ReadinessCheck {
  name: string;
  check(): { ok: boolean; reason?: string };
}

export function healthRoutes(metrics: Metrics, checks: ReadinessCheck[], role: () => 'active' | 'standby' = () => 'active'): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  r.get('/readyz', (_req, res) => {
    const results = Object.fromEntries(checks.map((c) => [c.name, c.check()]));
    const ready = Object.values(results).every((c) => c.ok);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not_ready', role: role(), checks: results });
  });
  r.get('/metrics', async (_req, res, next) => {
    try {
      const { contentType, body } = await metrics.render();
      res.setHeader('Content-Type', contentType);
      res.send(body);
    } catch (e) {
      next(e);
    }
  });
  return r;
}
