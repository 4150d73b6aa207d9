import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { LIMITS } from '../../limits.js';
import { parseConfig, publicView, substituteEnv } from '../../config.js';
import { ConfigError } from '../../errors.js';

const EXAMPLE = readFileSync(new URL('../../../config.example.yaml', import.meta.url), 'utf8');
const ENV = {
  GATEWAY_COMPONENT_SECRET: 'component-secret-1',
  GATEWAY_ADMIN_TOKEN: 'admin-token-0123456789',
  GATEWAY_KEYSTORE_PASSPHRASE: 'a long passphrase',
  ALERTS_BOT_TOKEN: 'alerts-token-0123456789',
  ALERTS_WEBHOOK_SECRET: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=',
};

const configError = (path: string, re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
  assert.equal(e.path, path);
  if (re) assert.match(e.message, re);
  return true;
};

function minimal(extra = ''): string {
  return `component:\n  domain: gw.example.org\n  secret: component-secret-1\nhttp:\n  admin_token: admin-token-0123456789\nkeystore:\n  passphrase: a long passphrase\n${extra}`;
}

test('config.example.yaml parses with its variables set and yields the documented defaults', () => {
  const c = parseConfig(EXAMPLE, ENV);
  assert.equal(c.component.domain, 'gw.example.org');
  assert.equal(c.component.secret, 'component-secret-1');
  assert.deepEqual(c.bridge.outboundPreference, ['omemo2', 'omemo', 'ox', 'pgp', 'otr']);
  assert.equal(c.bridge.trust, 'btbv');
  assert.equal(c.bots[0]!.localpart, 'alerts');
  assert.equal(c.bots[0]!.webhook!.url, 'https://bots.example.org/hooks/alerts');
  assert.equal(c.outbox.maxBodyBytes, 64 * 1024);
  assert.equal(c.webhooks.retryForSeconds, 86400);
  assert.equal(c.bridge.otrSessionTimeoutSeconds, 120);
  assert.ok(Object.isFrozen(c.bots[0]));
});

test('config.example.yaml carries every key the loader accepts, each with a comment', () => {
  // Every key the loader knows (it rejects unknown ones) must appear in the example.
  const doc = parse(EXAMPLE) as Record<string, Record<string, unknown>>;
  const keys = (o: unknown, prefix = ''): string[] =>
    o && typeof o === 'object' && !Array.isArray(o)
      ? Object.entries(o).flatMap(([k, v]) => [prefix + k, ...keys(v, `${prefix}${k}.`)])
      : Array.isArray(o) && o[0] && typeof o[0] === 'object'
        ? keys(o[0], prefix.replace(/\.$/, '[].'))
        : [];
  const present = new Set(keys(doc));
  const expected = [
    'component.service', 'component.domain', 'component.secret', 'component.reconnect_max_delay', 'component.keepalive',
    'http.host', 'http.port', 'http.admin_token', 'http.body_limit',
    'keystore.path', 'keystore.url', 'keystore.passphrase', 'ha.lease',
    'bridge.allowed_domains', 'bridge.trust', 'bridge.outbound_preference', 'bridge.allow_plaintext',
    'bridge.allow_unverified_pgp_keys', 'bridge.pgp_key_type', 'bridge.replay_window', 'bridge.otr_session_timeout', 'bridge.ox_max_clock_skew', 'bridge.otr_max_message_size',
    'outbox.message_ttl', 'outbox.max_body', 'webhooks.retry_for', 'webhooks.timeout', 'webhooks.max_retry_delay', 'log.level',
    'bots[].localpart', 'bots[].token', 'bots[].webhook', 'bots[].webhook.url', 'bots[].webhook.secret',
    'bots[].rate_limit', 'bots[].rate_limit.per_second', 'bots[].rate_limit.burst', 'bots[].allow_plaintext', 'bots[].rooms',
    'limits', ...Object.values(LIMITS).map((l) => l.key),
  ];
  for (const k of expected) assert.ok(present.has(k), `config.example.yaml lacks ${k}`);
  for (const k of present) assert.ok(expected.includes(k) || /^[a-z_]+$/.test(k), `example has a key the test does not know: ${k}`);
  // A comment on every line that sets a key.
  for (const line of EXAMPLE.split('\n')) {
    if (/^\s*-?\s*[a-z_]+:\s*\S/.test(line)) assert.match(line, /#/, `no comment: ${line}`);
  }
  // And the loader rejects a key it does not know, naming it.
  assert.throws(() => parseConfig(minimal('bridge:\n  trusst: btbv\n')), configError('bridge.trusst', /unknown key/));
});

test('${VAR} substitution: defaults, and an unset variable names the key', () => {
  assert.deepEqual(substituteEnv({ a: { b: 'x-${FOO}-${BAR:-dflt}' } }, { FOO: 'foo' }), { a: { b: 'x-foo-dflt' } });
  assert.throws(() => parseConfig(EXAMPLE, { ...ENV, GATEWAY_COMPONENT_SECRET: undefined }), configError('component.secret', /GATEWAY_COMPONENT_SECRET is not set/));
  assert.throws(() => parseConfig(EXAMPLE, { ...ENV, ALERTS_BOT_TOKEN: '' }), configError('bots[0].token', /ALERTS_BOT_TOKEN/));
});

test('errors name the key path and the problem', () => {
  assert.throws(() => parseConfig('component:\n  domain: gw.example.org\n'), configError('component.secret', /required/));
  assert.throws(() => parseConfig(minimal().replace('gw.example.org', 'not a domain')), configError('component.domain'));
  assert.throws(() => parseConfig(minimal('bridge:\n  trust: sometimes\n')), configError('bridge.trust', /btbv, tofu, manual/));
  assert.throws(() => parseConfig(minimal('bridge:\n  outbound_preference: [omemo, smoke]\n')), configError('bridge.outbound_preference[1]'));
  assert.throws(() => parseConfig(minimal('bots:\n  - localpart: a\n    token: short\n')), configError('bots[0].token', /16/));
  assert.throws(
    () => parseConfig(minimal('bots:\n  - localpart: a\n    token: aaaaaaaaaaaaaaaaaaaa\n    webhook:\n      url: http://bots.example.org/x\n      secret: ssssssssssssssssssss\n')),
    configError('bots[0].webhook.url', /https/),
  );
  assert.throws(
    () => parseConfig(minimal('bots:\n  - localpart: a\n    token: aaaaaaaaaaaaaaaaaaaa\n  - localpart: a\n    token: bbbbbbbbbbbbbbbbbbbb\n')),
    configError('bots[1].localpart', /twice/),
  );
  assert.throws(() => parseConfig(minimal().replace('component-secret-1', 'changeme')), configError('component.secret', /placeholder/));
  assert.throws(() => parseConfig(minimal('http:\n  port: 99999\n')), (e: unknown) => e instanceof ConfigError);
  assert.throws(() => parseConfig('component: [\n'), (e: unknown) => e instanceof ConfigError && /YAML/.test(e.message));
});

test('http on loopback is accepted for webhooks; sha256 tokens are normalised; publicView has no secrets', () => {
  const c = parseConfig(
    minimal(`bots:\n  - localpart: ci\n    token: sha256:${'AB'.repeat(32)}\n    webhook:\n      url: http://127.0.0.1:9000/hook\n      secret: ssssssssssssssssssss\n`),
  );
  assert.equal(c.bots[0]!.token, `sha256:${'ab'.repeat(32)}`);
  const text = JSON.stringify(publicView(c));
  for (const secret of ['component-secret-1', 'admin-token-0123456789', 'a long passphrase', 'ssssssssssssssssssss', 'abab']) assert.ok(!text.includes(secret), secret);
});
