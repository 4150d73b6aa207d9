// Back-pressure on POST /v1/messages (limits.ts): past limits.max_outbox_depth queued messages, past
// limits.max_webhook_queue_depth pending deliveries for the posting bot, or while the event loop
// lags more than limits.max_event_loop_lag (sustained: loop-lag.ts), new messages are refused with 503 `overloaded` and a
// Retry-After, instead of piling up work the gateway cannot keep up with. Queue depths are counted
// in the keystore at most once a second.
import type { Limits } from '../limits.js';
import { LimitError } from '../limits.js';
import type { Metrics } from './metrics.js';

export interface BackPressureDeps {
  limits: Limits;
  metrics: Metrics;
  outboxDepth: () => number;
  /** Pending webhook deliveries per bot. */
  webhookDepths: () => ReadonlyMap<string, number>;
  /** The sustained event-loop lag (LoopLag.sustainedMs). */
  lagMs: () => number;
  now?: () => number;
}

const RECOUNT_MS = 1000;

export class BackPressure {
  readonly #d: BackPressureDeps;
  #countedAt = -Infinity;
  #outbox = 0;
  #webhooks: ReadonlyMap<string, number> = new Map();

  constructor(d: BackPressureDeps) {
    this.#d = d;
  }

  /** The refusal for a new message from `bot`, or null when it may be accepted. */
  check(bot: string): LimitError | null {
    const { limits, metrics } = this.#d;
    const lag = this.#d.lagMs();
    if (lag > limits.max_event_loop_lag) {
      metrics.limited.inc({ limit: 'event_loop_lag' });
      return new LimitError('overloaded', 'max_event_loop_lag', 2, 'The gateway is overloaded (its event loop lags); retry in a few seconds.');
    }
    const now = (this.#d.now ?? Date.now)();
    if (now - this.#countedAt >= RECOUNT_MS) {
      this.#outbox = this.#d.outboxDepth();
      this.#webhooks = this.#d.webhookDepths();
      this.#countedAt = now;
    }
    if (this.#outbox >= limits.max_outbox_depth) {
      metrics.limited.inc({ limit: 'outbox_depth' });
      return new LimitError('overloaded', 'max_outbox_depth', 10, `The gateway has ${this.#outbox} messages waiting to be sent; retry later.`);
    }
    const pending = this.#webhooks.get(bot) ?? 0;
    if (pending >= limits.max_webhook_queue_depth) {
      metrics.limited.inc({ limit: 'webhook_queue_depth' });
      return new LimitError('overloaded', 'max_webhook_queue_depth', 10, `This bot has ${pending} webhook deliveries waiting; retry once its webhook catches up.`);
    }
    return null;
  }
}
