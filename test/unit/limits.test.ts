// The limits table (limits.ts) against the README's "Limits" section and config.example.yaml, and
// the token buckets and stanza size the limits are built from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import xml from '@xmpp/xml';
import { DEFAULT_LIMITS, KeyedBuckets, LIMITS, perMinute } from '../../limits.js';
import { parseConfig } from '../../config.js';
import { StanzaLimits, stanzaSize } from '../../component/stanza-limits.js';
import { Metrics } from '../../http/metrics.js';

const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const EXAMPLE = readFileSync(new URL('../../../config.example.yaml', import.meta.url), 'utf8');
const ENV = {
  GATEWAY_COMPONENT_SECRET: 'component-secret-1',
  GATEWAY_ADMIN_TOKEN: 'admin-token-0123456789',
  GATEWAY_KEYSTORE_PASSPHRASE: 'a long passphrase',
  ALERTS_BOT_TOKEN: 'alerts-token-0123456789',
  ALERTS_WEBHOOK_SECRET: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=',
};

test('the README "Limits" section lists exactly the limits of limits.ts, with their keys, defaults and metrics', () => {
  const section = README.split(/^## Limits$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, 'README has a "## Limits" section');
  const rows = [...section.matchAll(/^\| `([^`]+)` \| `([^`]+)` \| `([^`]+)` \| (.+) \|$/gm)].map((m) => ({ key: m[1]!, shown: m[2]!, metric: m[3]! }));
  const table = Object.values(LIMITS).map((l) => ({ key: l.key, shown: l.shown, metric: l.metric }));
  assert.deepEqual(rows, table);
});

test('config.example.yaml sets every limit to its default; the loader reads each key', () => {
  const c = parseConfig(EXAMPLE, ENV);
  assert.deepEqual(c.limits, DEFAULT_LIMITS);
  const minimal = (extra: string) =>
    `component:\n  domain: gw.example.org\n  secret: component-secret-1\nhttp:\n  admin_token: admin-token-0123456789\nkeystore:\n  passphrase: a long passphrase\n${extra}`;
  const l = parseConfig(minimal('limits:\n  max_stanza: 1mb\n  max_event_loop_lag: 2s\n  sender_stanza_burst: 7\nbridge:\n  max_hosted_identities: 12\n')).limits;
  assert.equal(l.max_stanza, 1024 * 1024);
  assert.equal(l.max_event_loop_lag, 2000);
  assert.equal(l.sender_stanza_burst, 7);
  assert.equal(l.max_hosted_identities, 12);
  assert.equal(l.identities_per_minute, LIMITS.identities_per_minute.value);
  assert.throws(() => parseConfig(minimal('limits:\n  max_stanzas: 1\n')), /limits.max_stanzas: unknown key/);
  assert.throws(() => parseConfig(minimal('limits:\n  max_event_loop_lag: soon\n')), /limits.max_event_loop_lag: must be a duration/);
});

test('KeyedBuckets: burst, steady refill, one refusal per episode, and at most maxKeys buckets', () => {
  const b = new KeyedBuckets(2, 3, 100);
  const t0 = 1_000_000;
  assert.deepEqual([1, 2, 3].map(() => b.admit('a', t0)), ['ok', 'ok', 'ok']);
  assert.equal(b.admit('a', t0), 'refuse');
  assert.equal(b.admit('a', t0 + 100), 'silent');
  assert.ok(Math.abs(b.wait('a', t0 + 100) - 0.4) < 1e-9, 'a token in 0.4 s');
  assert.equal(b.admit('b', t0), 'ok', 'buckets are per key');
  // Half a second gives one token back (2 per second); a new episode starts with a refusal again.
  assert.equal(b.admit('a', t0 + 500), 'ok');
  assert.equal(b.admit('a', t0 + 500), 'refuse');
  // Never more than the burst, however long it was idle.
  assert.deepEqual([1, 2, 3, 4].map(() => b.take('a', t0 + 3_600_000)), [0, 0, 0, 0.5]);
  const m = perMinute(30, 100);
  for (let i = 0; i < 30; i++) assert.equal(m.take('x', t0), 0);
  assert.ok(Math.abs(m.take('x', t0) - 2) < 1e-9, 'the next one in 2 s (30 per minute)');
  // Bounded: many keys, at most maxKeys held.
  for (let i = 0; i < 1000; i++) b.take(`k${i}`, t0);
  assert.equal(b.size, 100);
});

test('stanzaSize: close to the serialized size, and stops counting past its cap', () => {
  const el = xml('message', { from: 'a@example.org/x', to: 'b\\40example.org@gw.example.org', id: 'x1' }, xml('body', {}, 'hello '.repeat(1000)), xml('active', { xmlns: 'http://jabber.org/protocol/chatstates' }));
  const real = el.toString().length;
  const est = stanzaSize(el);
  assert.ok(est >= real * 0.9 && est <= real * 1.2, `estimate ${est} vs ${real}`);
  assert.ok(stanzaSize(el, 100) < real);
});

const stanzaLimits = (over: Partial<typeof DEFAULT_LIMITS>, isRoom?: (bare: string) => boolean) => {
  let now = 1_000_000;
  const l = new StanzaLimits({ limits: { ...DEFAULT_LIMITS, ...over }, metrics: new Metrics({ processMetrics: false }), ownDomain: 'gw.example.org', now: () => now, ...(isRoom ? { isRoom } : {}) });
  const check = (from: string) => l.check(xml('message', { from, to: 'alerts@gw.example.org' }, xml('body', {}, 'x'))).ok;
  return { check, advance: (ms: number) => (now += ms) };
};

test('StanzaLimits: in a room the bots joined the sender is the occupant, not the room', () => {
  const room = 'ops@conference.example.org';
  const l = stanzaLimits({ sender_stanzas_per_second: 1, sender_stanza_burst: 5 }, (bare) => bare === room);
  // Ten occupants, five stanzas each: all through (each its own bucket); the room's bare JID would have had 5.
  for (let n = 0; n < 10; n++) for (let k = 0; k < 5; k++) assert.equal(l.check(`${room}/nick${n}`), true, `occupant ${n}, stanza ${k}`);
  assert.equal(l.check(`${room}/nick0`), false, 'each occupant has its own limit');
  // Another MUC-like bare JID that is not a room of ours is one sender.
  const other = stanzaLimits({ sender_stanzas_per_second: 1, sender_stanza_burst: 5 }, (bare) => bare === room);
  const through = Array.from({ length: 10 }, (_, n) => other.check(`chat@conference.example.org/nick${n}`)).filter(Boolean).length;
  assert.equal(through, 5);
});

test('StanzaLimits: noisy accounts that drain their domain do not starve its quiet users, and the domain stays bounded', () => {
  const l = stanzaLimits({ sender_stanzas_per_second: 20, sender_stanza_burst: 400, domain_stanzas_per_second: 200, domain_stanza_burst: 4000 });
  // Thirty noisy accounts of evil.example flood as fast as they can for ten seconds (starting a
  // tick apart, so their own buckets refill out of step).
  let admitted = 0;
  let quietSent = 0;
  let quietThrough = 0;
  for (let tick = 0; tick < 1000; tick++) {
    for (let a = 0; a < 30 && a <= tick; a++) for (let k = 0; k < 5; k++) if (l.check(`noisy${a}@evil.example/x`)) admitted++;
    // Once the flood has drained the domain (its burst, and the noisy accounts' own), a quiet
    // colleague sends about one stanza a second.
    if (tick >= 200 && tick % 97 === 50) {
      quietSent++;
      if (l.check('quiet@evil.example/y')) quietThrough++;
    }
    l.advance(10);
  }
  assert.equal(quietThrough, quietSent, 'every stanza of the quiet account went through');
  // Bounded: at most the domain's burst plus its rate over the ten seconds.
  assert.ok(admitted <= 4000 + 200 * 10, `admitted ${admitted}`);
  assert.ok(admitted >= 3000 + 200 * 9, `the noisy ones still got the rest of the budget (${admitted})`);
});
