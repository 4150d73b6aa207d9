// Back-pressure (http/back-pressure.ts) and the event-loop lag it reads (loop-lag.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BackPressure } from '../../http/back-pressure.js';
import { LoopLag } from '../../loop-lag.js';
import { DEFAULT_LIMITS, LimitError } from '../../limits.js';
import { Metrics } from '../../http/metrics.js';

test('BackPressure: refuses past the outbox depth, the bot\'s webhook queue depth or the loop lag, with Retry-After; depths recounted once a second', () => {
  const metrics = new Metrics({ processMetrics: false });
  let outbox = 0;
  let counted = 0;
  const webhooks = new Map<string, number>();
  let lag = 0;
  let t = 1_000_000;
  const bp = new BackPressure({
    limits: { ...DEFAULT_LIMITS, max_outbox_depth: 100, max_webhook_queue_depth: 10, max_event_loop_lag: 500 },
    metrics,
    outboxDepth: () => (counted++, outbox),
    webhookDepths: () => webhooks,
    lagMs: () => lag,
    now: () => t,
  });
  assert.equal(bp.check('alerts'), null);
  outbox = 100;
  assert.equal(bp.check('alerts'), null, 'counted less than a second ago');
  t += 1000;
  const e = bp.check('alerts');
  assert.ok(e instanceof LimitError);
  assert.equal(e.code, 'overloaded');
  assert.equal(e.http, 503);
  assert.equal(e.limit, 'max_outbox_depth');
  assert.ok(e.retryAfterSeconds! >= 1);
  assert.equal(counted, 2);
  outbox = 0;
  webhooks.set('alerts', 10);
  t += 1000;
  assert.equal(bp.check('alerts')?.limit, 'max_webhook_queue_depth');
  assert.equal(bp.check('other'), null, "another bot's queue does not count");
  webhooks.clear();
  lag = 501;
  assert.equal(bp.check('other')?.limit, 'max_event_loop_lag');
  lag = 0;
  assert.equal(bp.check('other'), null);
});

test('LoopLag: a blocked event loop shows as lag', async () => {
  const l = new LoopLag();
  l.start();
  try {
    await new Promise((r) => setTimeout(r, 250));
    const until = performance.now() + 400;
    while (performance.now() < until) {
      /* block the loop */
    }
    assert.ok(l.ms >= 250, `lag right after a 400 ms block: ${l.ms} ms`);
    await new Promise((r) => setTimeout(r, 150));
    assert.ok(l.ms >= 250, `lag remembered for a second: ${l.ms} ms`);
  } finally {
    l.stop();
  }
});
