// Admin view of dead-lettered webhook deliveries, and retrying them.
import { Router } from 'express';
import { GatewayError } from '../../errors.js';
import type { Delivery, WebhookStore } from '../../keystore/webhook-store.js';
import { requireAdmin } from '../auth.js';

const view = (d: Delivery) => ({
  id: d.id,
  bot: d.bot,
  attempts: d.attempts,
  last_error: d.lastError,
  created_at: new Date(d.createdAt).toISOString(),
  first_attempt_at: d.firstAttemptAt ? new Date(d.firstAttemptAt).toISOString() : null,
});

export function webhookAdminRoutes(d: { store: WebhookStore; kick: (bot: string) => void }): Router {
  const r = Router();
  r.get('/webhooks/dead-letters', (req, res) => {
    requireAdmin(res);
    const bot = typeof req.query.bot === 'string' ? req.query.bot : undefined;
    res.json({ dead_letters: d.store.deadLetters(bot).map(view) });
  });
  r.post('/webhooks/dead-letters/:id/retry', (req, res) => {
    requireAdmin(res);
    const delivery = d.store.get(req.params.id!);
    if (!delivery || delivery.status !== 'dead' || !d.store.revive(delivery.id)) throw new GatewayError('not_found', 'No such dead letter.');
    d.kick(delivery.bot);
    res.status(202).json({ id: delivery.id, status: 'pending' });
  });
  return r;
}
