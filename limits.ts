// Every limit of the gateway in one table, as errors.ts holds every error: its config key, its
// default (as written in YAML), the metric that counts what it refused, and what the refused party
// sees. config.ts reads the keys with these defaults; the README's "Limits" section is checked
// against this table by a unit test. Beside it, the two small tools the limits are built from: a
// bounded set of token buckets and a bounded cache that reports its size.
import { AsyncLocalStorage } from 'node:async_hooks';
import { LRUCache } from 'lru-cache';
import { GatewayError, type ErrorCode } from './errors.js';

/** count: a whole number; rate: a number per second (decimals allowed); bytes: 64kb, 1mb; millis: 500ms, 2s. */
export type LimitKind = 'count' | 'rate' | 'bytes' | 'millis';

export interface LimitSpec {
  /** The config key (dotted path; `[]` for list items). */
  key: string;
  kind: LimitKind;
  /** The default as written in YAML (and in the README). */
  shown: string;
  /** The default as the code uses it (bytes, milliseconds, a count). */
  value: number;
  metric: string;
  refusal: string;
}

const spec = (key: string, kind: LimitKind, shown: string, value: number, metric: string, refusal: string): LimitSpec => ({ key, kind, shown, value, metric, refusal });
const limited = (name: string) => `gateway_limited_total{limit="${name}"}`;
const STANZA_REFUSAL = 'one `resource-constraint` error reply (type wait), then silence while over the limit';
const IDENTITY_STANZA_REFUSAL = 'stanza: one `resource-constraint` error per requester, then silence until its retry time';

export const LIMITS = {
  // inbound stanzas (token buckets per sender bare JID and per sender domain)
  sender_stanzas_per_second: spec('limits.sender_stanzas_per_second', 'rate', '20', 20, limited('sender_stanzas'), STANZA_REFUSAL),
  sender_stanza_burst: spec('limits.sender_stanza_burst', 'count', '400', 400, limited('sender_stanzas'), STANZA_REFUSAL),
  domain_stanzas_per_second: spec('limits.domain_stanzas_per_second', 'rate', '200', 200, limited('domain_stanzas'), STANZA_REFUSAL),
  domain_stanza_burst: spec('limits.domain_stanza_burst', 'count', '4000', 4000, limited('domain_stanzas'), STANZA_REFUSAL),
  // inbound sizes
  max_stanza: spec('limits.max_stanza', 'bytes', '256kb', 256 * 1024, limited('max_stanza'), '`policy-violation` error reply; the stanza is not processed'),
  omemo_max_body: spec('limits.omemo_max_body', 'bytes', '128kb', 128 * 1024, limited('omemo_max_body'), '`policy-violation` error reply; nothing is delivered'),
  pgp_max_body: spec('limits.pgp_max_body', 'bytes', '128kb', 128 * 1024, limited('pgp_max_body'), '`policy-violation` error reply; nothing is delivered'),
  // identities
  identities_per_requester_per_minute: spec(
    'limits.identities_per_requester_per_minute',
    'count',
    '20',
    20,
    limited('identities_per_requester'),
    IDENTITY_STANZA_REFUSAL + '; API: 429 `identity_rate_limited` with `Retry-After`',
  ),
  identities_per_minute: spec(
    'limits.identities_per_minute',
    'count',
    '300',
    300,
    limited('identities_per_minute'),
    IDENTITY_STANZA_REFUSAL + '; API: 429 `identity_rate_limited` with `Retry-After`',
  ),
  max_hosted_identities: spec(
    'bridge.max_hosted_identities',
    'count',
    '50000',
    50_000,
    limited('max_hosted_identities'),
    'stanza: one `policy-violation` error per requester a minute, then silence; API: 403 `identity_limit_reached`',
  ),
  // outbound work a peer can cause
  bundle_fetches_per_contact_per_minute: spec(
    'limits.bundle_fetches_per_contact_per_minute',
    'count',
    '20',
    20,
    limited('bundle_fetches'),
    'the OMEMO bundle is not fetched: no session repair for that device, and it is skipped when sending',
  ),
  // automatic text replies (loops between automata: our notice answered by a bot's notice, and so on)
  auto_replies_per_contact_per_minute: spec(
    'limits.auto_replies_per_contact_per_minute',
    'count',
    '10',
    10,
    limited('auto_replies'),
    'the chat-command answer or "not delivered"/"not encrypted" notice is not sent (the message itself is still refused or answered with an error stanza)',
  ),
  // error replies to messages a contact floods with (undecryptable, plaintext, too large): what the
  // server must read back, in turn with everything else (ping answers too)
  message_errors_per_contact_per_minute: spec(
    'limits.message_errors_per_contact_per_minute',
    'count',
    '20',
    20,
    limited('message_errors'),
    'the error reply to an undecryptable, refused or oversized message is not sent (the message is still not delivered)',
  ),
  // output pacing on the component connection (component/output-pacer.ts): low-priority output
  // (errors, disco results) waits while the server has not read what came before it
  output_window: spec(
    'limits.output_window',
    'bytes',
    '8kb',
    8 * 1024,
    limited('output_window'),
    'errors and disco answers are held while this much output is unconfirmed by the server (messages, presence, pongs and our own iqs never are), then written round robin between recipients; past eight windows unconfirmed, inbound stanzas other than pings wait in the inbound queue',
  ),
  max_held_output: spec('limits.max_held_output', 'bytes', '1mb', 1024 * 1024, limited('max_held_output'), 'the oldest held stanza of the recipient with the most held is not sent'),
  held_output_max_age: spec('limits.held_output_max_age', 'millis', '30s', 30_000, limited('held_output_max_age'), 'a stanza held longer than this is not sent (its requester has given up)'),
  // memory
  peer_cache_entries: spec('limits.peer_cache_entries', 'count', '20000', 20_000, 'gateway_cache_entries{cache}', 'the least recently used entry is forgotten (a rate-limit bucket starts full again, a cache entry is re-read)'),
  max_inbound_queue: spec('limits.max_inbound_queue', 'count', '20000', 20_000, limited('inbound_queue'), 'dropped while that many stanzas wait to be handled; an iq gets a `resource-constraint` error'),
  // back-pressure on POST /v1/messages
  max_outbox_depth: spec('limits.max_outbox_depth', 'count', '10000', 10_000, limited('outbox_depth'), '503 `overloaded` with `Retry-After`'),
  max_webhook_queue_depth: spec('limits.max_webhook_queue_depth', 'count', '10000', 10_000, limited('webhook_queue_depth'), "503 `overloaded` with `Retry-After` (the posting bot's own queue)"),
  max_event_loop_lag: spec('limits.max_event_loop_lag', 'millis', '500ms', 500, limited('event_loop_lag'), '503 `overloaded` with `Retry-After`'),
  // limits that existed before this table (read in their own sections)
  http_body_limit: spec('http.body_limit', 'bytes', '256kb', 256 * 1024, 'gateway_http_requests_total{status="413"}', '413 `payload_too_large`'),
  outbox_max_body: spec('outbox.max_body', 'bytes', '64kb', 64 * 1024, 'gateway_http_requests_total{status="413"}', '413 `payload_too_large`'),
  bot_rate_per_second: spec('bots[].rate_limit.per_second', 'count', '50', 50, 'gateway_http_requests_total{status="429"}', '429 `rate_limited` with `Retry-After`'),
  bot_rate_burst: spec('bots[].rate_limit.burst', 'count', '100', 100, 'gateway_http_requests_total{status="429"}', '429 `rate_limited` with `Retry-After`'),
} as const satisfies Record<string, LimitSpec>;

export type LimitName = keyof typeof LIMITS;
/** The limits as configured: each a number in the unit of its kind (bytes, milliseconds, a count). */
export type Limits = { readonly [K in LimitName]: number };

export const DEFAULT_LIMITS: Limits = Object.fromEntries(Object.entries(LIMITS).map(([k, s]) => [k, s.value])) as Limits;

/** The names of the limits read from the `limits:` section. */
export const LIMITS_SECTION_KEYS: readonly string[] = Object.values(LIMITS)
  .filter((s) => s.key.startsWith('limits.'))
  .map((s) => s.key.slice('limits.'.length));

const requesterScope = new AsyncLocalStorage<string>();

/**
 * Runs `fn` with `requester` (a sender's bare JID, or `token:<bot>` / `admin` for the API) as the
 * party that per-requester limits charge for work done inside it, across awaits.
 */
export function asRequester<T>(requester: string, fn: () => T): T {
  return requesterScope.run(requester, fn);
}

export const currentRequester = (): string | undefined => requesterScope.getStore();

/** A refusal by a limit: a GatewayError that says when to retry (the HTTP layer sends Retry-After). */
export class LimitError extends GatewayError {
  readonly limit: LimitName;
  readonly retryAfterSeconds: number | null;
  /**
   * A later refusal of the same requester while the first one still holds: XMPP gets no reply
   * (one error, then silence, as the stanza buckets do); the API answers every request.
   */
  silent = false;
  constructor(code: ErrorCode, limit: LimitName, retryAfterSeconds: number | null, text?: string) {
    super(code, text);
    this.limit = limit;
    this.retryAfterSeconds = retryAfterSeconds === null ? null : Math.max(1, Math.ceil(retryAfterSeconds));
  }
}

/** Outcome of offering one unit of work to a bucket that refuses with one reply, then silence. */
export type Admission = 'ok' | 'refuse' | 'silent';

/**
 * Token buckets per key, at most `maxKeys` of them (least recently used forgotten: it starts full
 * again). take() is O(1) and allocation-free for a known key.
 */
export class KeyedBuckets {
  readonly #buckets: LRUCache<string, { tokens: number; at: number; refused: boolean }>;
  readonly #perSecond: number;
  readonly #burst: number;

  constructor(perSecond: number, burst: number, maxKeys: number) {
    this.#perSecond = perSecond;
    this.#burst = Math.max(1, burst);
    this.#buckets = new LRUCache({ max: maxKeys });
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** 0 when a token was taken, else the seconds until one is available. */
  take(key: string, now = Date.now()): number {
    const b = this.#refill(key, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.refused = false;
      return 0;
    }
    return this.#perSecond > 0 ? (1 - b.tokens) / this.#perSecond : Infinity;
  }

  /** Like take(), but says whether this is the first refusal of an episode (answer it) or a later one (stay silent). */
  admit(key: string, now = Date.now()): Admission {
    if (this.take(key, now) === 0) return 'ok';
    const b = this.#buckets.get(key)!;
    if (b.refused) return 'silent';
    b.refused = true;
    return 'refuse';
  }

  /**
   * Like admit(), but leaves `reserve` tokens in the bucket: a token is taken only while more than
   * `reserve` remain (fair sharing of a domain's bucket, stanza-limits.ts).
   */
  admitAbove(key: string, reserve: number, now = Date.now()): Admission {
    const b = this.#refill(key, now);
    if (b.tokens >= reserve + 1) {
      b.tokens -= 1;
      // Taking from the reserve does not end a refusal episode of the others.
      if (reserve > 0) b.refused = false;
      return 'ok';
    }
    if (b.refused) return 'silent';
    b.refused = true;
    return 'refuse';
  }

  /** The tokens `key` holds now (a full bucket for an unknown key). Takes nothing. */
  level(key: string, now = Date.now()): number {
    return this.#refill(key, now).tokens;
  }

  get burst(): number {
    return this.#burst;
  }

  /** Seconds until `key` has a token again (0: it has one now). Takes nothing. */
  wait(key: string, now = Date.now()): number {
    const b = this.#refill(key, now);
    return b.tokens >= 1 ? 0 : this.#perSecond > 0 ? (1 - b.tokens) / this.#perSecond : Infinity;
  }

  #refill(key: string, now: number): { tokens: number; at: number; refused: boolean } {
    let b = this.#buckets.get(key);
    if (!b) this.#buckets.set(key, (b = { tokens: this.#burst, at: now, refused: false }));
    else {
      b.tokens = Math.min(this.#burst, b.tokens + (Math.max(0, now - b.at) / 1000) * this.#perSecond);
      b.at = now;
    }
    return b;
  }
}

/** Per-minute buckets (capacity = the per-minute figure). */
export const perMinute = (n: number, maxKeys: number): KeyedBuckets => new KeyedBuckets(n / 60, n, maxKeys);
