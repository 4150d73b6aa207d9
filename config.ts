// The YAML configuration: read, `${VAR}` substituted from the environment, validated into a frozen,
// typed Config. Every error names the key path (`bots[1].webhook.url: must be https`). Secrets are
// split into their own object so that the rest can be logged.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors.js';
import { LIMITS, LIMITS_SECTION_KEYS, type LimitName, type Limits, type LimitSpec } from './limits.js';

export type ProtocolName = 'omemo2' | 'omemo' | 'ox' | 'pgp' | 'otr';
/** Also the default bridge.outbound_preference: newest OMEMO first. */
export const PROTOCOLS: readonly ProtocolName[] = ['omemo2', 'omemo', 'ox', 'pgp', 'otr'];
export type TrustPolicy = 'btbv' | 'tofu' | 'manual';

export interface BotConfig {
  localpart: string;
  /** Plain token or `sha256:<hex>`; compared in constant time. */
  token: string;
  webhook: { url: string; secret: string } | null;
  rateLimit: { perSecond: number; burst: number };
  allowPlaintext: boolean;
  /** XEP-0045 rooms the bot joins (bare room JIDs, lowercase), each with the nick it uses. */
  rooms?: RoomConfig[];
}

export interface RoomConfig {
  jid: string;
  nick: string;
}

export interface Config {
  component: { service: string; domain: string; secret: string; reconnectMaxDelayMs: number; keepaliveMs: number };
  http: { host: string; port: number; adminToken: string; bodyLimitBytes: number };
  /** path: the SQLite file ('' when url is set); url: PostgreSQL (more than one instance), or null. */
  keystore: { path: string; url: string | null; passphrase: string };
  ha: { leaseMs: number };
  bridge: {
    allowedDomains: string[];
    trust: TrustPolicy;
    outboundPreference: ProtocolName[];
    allowPlaintext: boolean;
    allowUnverifiedPgpKeys: boolean;
    pgpKeyType: 'curve25519' | 'rsa';
    replayWindowDays: number;
    /** How long a message to an OTR contact waits for the AKE before it fails (no_otr_session). */
    otrSessionTimeoutSeconds: number;
    /** OX: how far a message's <time> may be from now (or from its <delay> stamp). */
    oxMaxClockSkewMs: number;
    /** Longest OTR body the gateway sends; longer ones go as OTR fragments (0: never fragment). */
    otrMaxMessageSize: number;
  };
  outbox: { messageTtlSeconds: number; maxBodyBytes: number };
  webhooks: { retryForSeconds: number; timeoutMs: number; maxAttemptDelaySeconds: number };
  log: { level: string };
  bots: BotConfig[];
  /** Every limit of limits.ts (its `limits:` keys, bridge.max_hosted_identities and the older ones). */
  limits: Limits;
}

type Raw = Record<string, unknown>;

/** `${VAR}` and `${VAR:-default}` in every string value, replaced from `env`; unset names the key. */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path = ''): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, dflt?: string) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (dflt !== undefined) return dflt;
      throw new ConfigError(path || '(root)', `environment variable ${name} is not set`);
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, `${path}[${i}]`));
  if (value && typeof value === 'object') {
    const out: Raw = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, env, path ? `${path}.${k}` : k);
    return out;
  }
  return value;
}

// ---- small typed readers; each throws ConfigError naming the path ----

class Reader {
  constructor(private readonly obj: Raw, readonly path: string) {}

  static root(value: unknown): Reader {
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new ConfigError('(root)', 'must be a mapping');
    return new Reader(value as Raw, '');
  }

  private at(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  section(key: string, required = false): Reader {
    const v = this.obj[key];
    if (v === undefined || v === null) {
      if (required) throw new ConfigError(this.at(key), 'required');
      return new Reader({}, this.at(key));
    }
    if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(this.at(key), 'must be a mapping');
    return new Reader(v as Raw, this.at(key));
  }

  list(key: string): Reader[] {
    const v = this.obj[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new ConfigError(this.at(key), 'must be a list');
    return v.map((item, i) => {
      const p = `${this.at(key)}[${i}]`;
      if (!item || typeof item !== 'object' || Array.isArray(item)) throw new ConfigError(p, 'must be a mapping');
      return new Reader(item as Raw, p);
    });
  }

  string(key: string, dflt?: string): string {
    const v = this.obj[key];
    if (v === undefined || v === null || v === '') {
      if (dflt !== undefined) return dflt;
      throw new ConfigError(this.at(key), 'required');
    }
    if (typeof v !== 'string' && typeof v !== 'number') throw new ConfigError(this.at(key), 'must be a string');
    return String(v);
  }

  secret(key: string, minLength: number): string {
    const v = this.string(key);
    if (/^(change-?me|secret|password|xxx+)$/i.test(v)) throw new ConfigError(this.at(key), 'still holds a placeholder value; set a real secret');
    if (v.length < minLength) throw new ConfigError(this.at(key), `must be at least ${minLength} characters`);
    return v;
  }

  int(key: string, dflt: number, min: number, max: number): number {
    const v = this.obj[key];
    if (v === undefined || v === null || v === '') return dflt;
    const n = typeof v === 'number' ? v : Number(v);
    if (!Number.isInteger(n)) throw new ConfigError(this.at(key), 'must be a whole number');
    if (n < min || n > max) throw new ConfigError(this.at(key), `must be between ${min} and ${max}`);
    return n;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.obj[key];
    if (v === undefined || v === null || v === '') return dflt;
    if (typeof v === 'boolean') return v;
    if (v === 'true') return true;
    if (v === 'false') return false;
    throw new ConfigError(this.at(key), 'must be true or false');
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], dflt: T): T {
    const v = this.string(key, dflt);
    if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(this.at(key), `must be one of ${allowed.join(', ')}`);
    return v as T;
  }

  strings(key: string, dflt: string[]): string[] {
    const v = this.obj[key];
    if (v === undefined || v === null) return dflt;
    if (!Array.isArray(v)) throw new ConfigError(this.at(key), 'must be a list');
    return v.map((item, i) => {
      if (typeof item !== 'string' || item === '') throw new ConfigError(`${this.at(key)}[${i}]`, 'must be a non-empty string');
      return item;
    });
  }

  /** Sizes such as `256kb`, `1mb` or a plain byte count. */
  bytes(key: string, dflt: number): number {
    const v = this.obj[key];
    if (v === undefined || v === null || v === '') return dflt;
    const m = /^(\d+)\s*(b|kb|mb)?$/i.exec(String(v));
    if (!m) throw new ConfigError(this.at(key), 'must be a size such as 65536, 64kb or 1mb');
    const unit = (m[2] ?? 'b').toLowerCase();
    return Number(m[1]) * (unit === 'mb' ? 1024 * 1024 : unit === 'kb' ? 1024 : 1);
  }

  /** Short durations such as `500ms`, `2s` or plain milliseconds. */
  millis(key: string, dflt: number): number {
    const v = this.obj[key];
    if (v === undefined || v === null || v === '') return dflt;
    const m = /^(\d+)\s*(ms|s)?$/i.exec(String(v));
    if (!m) throw new ConfigError(this.at(key), 'must be a duration such as 500ms or 2s');
    return Number(m[1]) * ((m[2] ?? 'ms').toLowerCase() === 's' ? 1000 : 1);
  }

  /** A limit of limits.ts, with the table's default. */
  limit(key: string, s: LimitSpec): number {
    if (s.kind === 'bytes') return this.bytes(key, s.value);
    if (s.kind === 'millis') return this.millis(key, s.value);
    if (s.kind === 'rate') {
      const v = this.obj[key];
      if (v === undefined || v === null || v === '') return s.value;
      const n = typeof v === 'number' ? v : Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new ConfigError(this.at(key), 'must be a positive number (per second; decimals allowed)');
      return n;
    }
    return this.int(key, s.value, 0, 1_000_000_000);
  }

  /** Durations such as `30s`, `15m`, `24h`, `7d` or plain seconds. */
  seconds(key: string, dflt: number): number {
    const v = this.obj[key];
    if (v === undefined || v === null || v === '') return dflt;
    const m = /^(\d+)\s*(s|m|h|d)?$/i.exec(String(v));
    if (!m) throw new ConfigError(this.at(key), 'must be a duration such as 90s, 15m, 24h or 7d');
    const mult = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's').toLowerCase() as 's'];
    return Number(m[1]) * mult;
  }

  keys(): string[] {
    return Object.keys(this.obj);
  }

  /** The raw value under `key` (lists of mixed forms). */
  value(key: string): unknown {
    return this.obj[key];
  }

  /** Unknown keys are errors: a typo must not silently fall back to a default. */
  only(...allowed: string[]): void {
    for (const k of Object.keys(this.obj)) {
      if (!allowed.includes(k)) throw new ConfigError(this.at(k), `unknown key (expected one of ${allowed.join(', ')})`);
    }
  }
}

const DOMAIN_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const LOCALPART_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

function checkDomain(path: string, v: string): string {
  const d = v.toLowerCase();
  if (!DOMAIN_RE.test(d)) throw new ConfigError(path, `"${v}" is not a valid domain name`);
  return d;
}

function checkService(path: string, v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError(path, 'must be a URL such as xmpp://127.0.0.1:5347');
  }
  if (u.protocol !== 'xmpp:' || !u.hostname) throw new ConfigError(path, 'must be a URL such as xmpp://127.0.0.1:5347');
  return v;
}

function checkWebhookUrl(path: string, v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError(path, 'must be an absolute URL');
  }
  if (u.protocol === 'https:') return v;
  if (u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname)) return v;
  throw new ConfigError(path, 'must be https (plain http is accepted only for loopback addresses)');
}

function checkToken(path: string, v: string): string {
  if (v.startsWith('sha256:')) {
    if (!/^sha256:[0-9a-f]{64}$/i.test(v)) throw new ConfigError(path, 'a sha256: token must be followed by 64 hex digits');
    return v.toLowerCase();
  }
  if (v.length < 16) throw new ConfigError(path, 'must be at least 16 characters (or sha256:<hex>)');
  return v;
}

export function validateConfig(raw: unknown): Config {
  const root = Reader.root(raw);
  root.only('component', 'http', 'keystore', 'ha', 'bridge', 'bots', 'outbox', 'webhooks', 'log', 'limits');

  const c = root.section('component', true);
  c.only('service', 'domain', 'secret', 'reconnect_max_delay', 'keepalive');
  const component = {
    service: checkService('component.service', c.string('service', 'xmpp://127.0.0.1:5347')),
    domain: checkDomain('component.domain', c.string('domain')),
    secret: c.secret('secret', 8),
    reconnectMaxDelayMs: c.seconds('reconnect_max_delay', 60) * 1000,
    keepaliveMs: c.seconds('keepalive', 30) * 1000,
  };

  const h = root.section('http');
  h.only('host', 'port', 'admin_token', 'body_limit');
  const http = {
    host: h.string('host', '127.0.0.1'),
    port: h.int('port', 8080, 0, 65535),
    adminToken: checkToken('http.admin_token', h.secret('admin_token', 16)),
    bodyLimitBytes: h.bytes('body_limit', LIMITS.http_body_limit.value),
  };

  const k = root.section('keystore', true);
  k.only('path', 'url', 'passphrase');
  // Exactly one of path (SQLite, the default) and url (PostgreSQL); an empty url counts as unset.
  const url = k.has('url') ? k.string('url', '') : '';
  if (url && k.has('path')) throw new ConfigError('keystore.url', 'set keystore.path (SQLite) or keystore.url (PostgreSQL), not both');
  if (url && !/^postgres(ql)?:\/\//.test(url)) throw new ConfigError('keystore.url', 'must be a postgresql:// URL');
  const keystore = { path: url ? '' : k.string('path', './data/gateway.db'), url: url || null, passphrase: k.secret('passphrase', 12) };
  const hs = root.section('ha');
  hs.only('lease');
  const ha = { leaseMs: Math.round(hs.seconds('lease', 10) * 1000) };
  if (ha.leaseMs < 1000) throw new ConfigError('ha.lease', 'must be at least 1s');

  const b = root.section('bridge');
  b.only('allowed_domains', 'trust', 'outbound_preference', 'allow_plaintext', 'allow_unverified_pgp_keys', 'pgp_key_type', 'replay_window', 'otr_session_timeout', 'ox_max_clock_skew', 'max_hosted_identities', 'otr_max_message_size');
  const allowedDomains = b.strings('allowed_domains', []).map((d, i) => checkDomain(`bridge.allowed_domains[${i}]`, d));
  const outboundPreference = b.strings('outbound_preference', [...PROTOCOLS]).map((p, i) => {
    if (!(PROTOCOLS as readonly string[]).includes(p)) throw new ConfigError(`bridge.outbound_preference[${i}]`, `must be one of ${PROTOCOLS.join(', ')}`);
    return p as ProtocolName;
  });
  if (new Set(outboundPreference).size !== outboundPreference.length) throw new ConfigError('bridge.outbound_preference', 'lists a protocol twice');
  if (allowedDomains.includes(component.domain)) throw new ConfigError('bridge.allowed_domains', 'must not contain the gateway\'s own domain');
  const bridge = {
    allowedDomains,
    trust: b.oneOf('trust', ['btbv', 'tofu', 'manual'] as const, 'btbv'),
    outboundPreference,
    allowPlaintext: b.bool('allow_plaintext', false),
    allowUnverifiedPgpKeys: b.bool('allow_unverified_pgp_keys', false),
    pgpKeyType: b.oneOf('pgp_key_type', ['curve25519', 'rsa'] as const, 'curve25519'),
    replayWindowDays: Math.round(b.seconds('replay_window', 30 * 86400) / 86400),
    otrSessionTimeoutSeconds: b.seconds('otr_session_timeout', 120),
    oxMaxClockSkewMs: b.seconds('ox_max_clock_skew', 600) * 1000,
    otrMaxMessageSize: b.int('otr_max_message_size', 0, 0, 1 << 20),
  };

  const o = root.section('outbox');
  o.only('message_ttl', 'max_body');
  const outbox = { messageTtlSeconds: o.seconds('message_ttl', 86400), maxBodyBytes: o.bytes('max_body', LIMITS.outbox_max_body.value) };
  if (outbox.maxBodyBytes > http.bodyLimitBytes) throw new ConfigError('outbox.max_body', 'must not exceed http.body_limit');

  const w = root.section('webhooks');
  w.only('retry_for', 'timeout', 'max_retry_delay');
  const webhooks = {
    retryForSeconds: w.seconds('retry_for', 86400),
    timeoutMs: w.seconds('timeout', 10) * 1000,
    maxAttemptDelaySeconds: w.seconds('max_retry_delay', 3600),
  };

  const l = root.section('log');
  l.only('level');
  const log = { level: l.oneOf('level', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info') };

  const seen = new Set<string>();
  const bots = root.list('bots').map((bot, i): BotConfig => {
    bot.only('localpart', 'token', 'webhook', 'rate_limit', 'allow_plaintext', 'rooms');
    const localpart = bot.string('localpart');
    if (!LOCALPART_RE.test(localpart)) throw new ConfigError(`bots[${i}].localpart`, 'must be lowercase letters, digits, ".", "_" or "-" (no escapes)');
    if (seen.has(localpart)) throw new ConfigError(`bots[${i}].localpart`, `"${localpart}" is configured twice`);
    seen.add(localpart);
    let webhook: BotConfig['webhook'] = null;
    if (bot.has('webhook')) {
      const wh = bot.section('webhook');
      wh.only('url', 'secret');
      webhook = { url: checkWebhookUrl(`bots[${i}].webhook.url`, wh.string('url')), secret: wh.secret('secret', 16) };
    }
    const rl = bot.section('rate_limit');
    rl.only('per_second', 'burst');
    return {
      localpart,
      token: checkToken(`bots[${i}].token`, bot.secret('token', 16)),
      webhook,
      rateLimit: { perSecond: rl.int('per_second', LIMITS.bot_rate_per_second.value, 1, 100000), burst: rl.int('burst', LIMITS.bot_rate_burst.value, 1, 1000000) },
      allowPlaintext: bot.bool('allow_plaintext', false),
      rooms: readRooms(`bots[${i}].rooms`, bot.value('rooms'), localpart),
    };
  });

  const lim = root.section('limits');
  lim.only(...LIMITS_SECTION_KEYS);
  const limits = Object.fromEntries(
    (Object.entries(LIMITS) as Array<[LimitName, LimitSpec]>).map(([name, s]) => {
      if (s.key.startsWith('limits.')) return [name, lim.limit(s.key.slice('limits.'.length), s)];
      if (s.key === 'bridge.max_hosted_identities') return [name, b.limit('max_hosted_identities', s)];
      return [name, s.value];
    }),
  ) as { -readonly [K in LimitName]: number };
  // The older limits are read in their own sections; the table mirrors what was read.
  limits.http_body_limit = http.bodyLimitBytes;
  limits.outbox_max_body = outbox.maxBodyBytes;

  return deepFreeze({ component, http, keystore, ha, bridge, outbox, webhooks, log, bots, limits });
}

const ROOM_JID_RE = /^[^@/\s"&'<>]{1,1023}@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/** `bots[i].rooms`: room JIDs (nick = the bot's localpart) or `{jid, nick}` mappings. */
function readRooms(path: string, v: unknown, localpart: string): RoomConfig[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ConfigError(path, 'must be a list of room JIDs or {jid, nick} mappings');
  const seen = new Set<string>();
  return v.map((item, j): RoomConfig => {
    const p = `${path}[${j}]`;
    let jid: unknown = item;
    let nick: unknown = localpart;
    if (item && typeof item === 'object' && !Array.isArray(item)) {
      const r = new Reader(item as Raw, p);
      r.only('jid', 'nick');
      jid = r.string('jid');
      nick = r.string('nick', localpart);
    }
    if (typeof jid !== 'string') throw new ConfigError(p, 'must be a room JID (room@conference.example.org) or a {jid, nick} mapping');
    const at = jid.lastIndexOf('@');
    const bare = at > 0 ? `${jid.slice(0, at).toLowerCase()}@${jid.slice(at + 1).toLowerCase()}` : jid;
    if (!ROOM_JID_RE.test(bare)) throw new ConfigError(p, `"${jid}" is not a bare room JID (room@conference.example.org)`);
    if (typeof nick !== 'string' || nick.trim() === '' || nick.length > 64 || /[\u0000-\u001f\u007f]/.test(nick)) {
      throw new ConfigError(`${p}.nick`, 'must be 1 to 64 printable characters');
    }
    if (seen.has(bare)) throw new ConfigError(p, `"${bare}" is listed twice`);
    seen.add(bare);
    return { jid: bare, nick };
  });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

export function parseConfig(text: string, env: NodeJS.ProcessEnv = process.env, source = 'config'): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError(source, `not valid YAML (${(e as Error).message.split('\n')[0]})`);
  }
  return validateConfig(substituteEnv(raw, env));
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, `cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseConfig(text, env, file);
}

/** The config without secrets, for the startup log line. */
export function publicView(cfg: Config): unknown {
  return {
    component: { service: cfg.component.service, domain: cfg.component.domain },
    http: { host: cfg.http.host, port: cfg.http.port },
    keystore: cfg.keystore.url ? { url: redactPassword(cfg.keystore.url) } : { path: cfg.keystore.path },
    bridge: cfg.bridge,
    bots: cfg.bots.map((b) => ({ localpart: b.localpart, webhook: b.webhook ? new URL(b.webhook.url).origin : null, rooms: (b.rooms ?? []).map((r) => r.jid) })),
  };
}

/** A URL with its password hidden (logs, the startup line). */
export function redactPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable url)';
  }
}
