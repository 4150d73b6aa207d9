// POST /v1/messages ahead of the express router (http/fast-messages.ts) answers exactly as the
// express route does: each request below is sent twice, once plain (the fast path takes it) and once
// with `Content-Encoding: identity` (the fast path leaves any Content-Encoding to express, whose
// body-parser reads identity as plain), and the status, headers and body must match (message ids
// and the ETag express adds aside).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { validateConfig } from '../../config.js';
import { Gateway } from '../../context.js';
import { createLogger } from '../../log.js';

const BOT = 'alerts-token-0123456789';
const SLOW = 'slowbot-token-0123456789';
let gw: Gateway;

before(() => {
  const config = validateConfig({
    component: { domain: 'gw.example.org', secret: 'component-secret' },
    http: { admin_token: 'admin-token-0123456789', body_limit: '2kb' },
    keystore: { path: ':memory:', passphrase: 'passphrase-for-tests' },
    outbox: { max_body: '1kb' },
    bridge: { allowed_domains: ['example.org'] },
    bots: [
      { localpart: 'alerts', token: BOT },
      { localpart: 'slow', token: SLOW, rate_limit: { per_second: 1, burst: 1 } },
    ],
  });
  gw = new Gateway(config, { log: createLogger('silent'), keystore: { kdf: { N: 1024, r: 8, p: 1 } } });
});

after(() => gw.keystore.close());

const msg = (o: Record<string, unknown>) => JSON.stringify({ to: 'bob@example.org', body: 'hi', ...o });

async function post(headers: Record<string, string>, body: string | Buffer, viaExpress: boolean) {
  let r = request(gw.app).post('/v1/messages');
  for (const [k, v] of Object.entries(headers)) r = r.set(k, v);
  if (viaExpress) r = r.set('Content-Encoding', 'identity');
  const res = await r.send(body);
  const h: Record<string, unknown> = { ...res.headers };
  for (const k of ['date', 'etag', 'connection', 'keep-alive']) delete h[k];
  const ids = (s: string) => s.replace(/msg_[A-Za-z0-9_-]+/g, 'msg_ID');
  if (typeof h.location === 'string') h.location = ids(h.location);
  return { status: res.status, headers: Object.entries(h), text: ids(res.text), etag: res.headers.etag as string | undefined };
}

test('the fast POST /v1/messages answers as the express route: success, replay, conflict, every refusal', async () => {
  const json = { Authorization: `Bearer ${BOT}`, 'Content-Type': 'application/json' };
  const cases: Array<[string, Record<string, string>, string | Buffer]> = [
    ['queued', json, msg({})],
    ['charset=UTF-8', { ...json, 'Content-Type': 'application/json; charset=UTF-8' }, msg({})],
    ['a BOM', json, `\ufeff${msg({})}`],
    ['invalid UTF-8 inside a string', json, Buffer.concat([Buffer.from('{"to":"bob@example.org","body":"'), Buffer.from([0xff]), Buffer.from('"}')])],
    ['not an object', json, '  "text"'],
    ['whitespace only', json, '   '],
    ['an array', json, '[1]'],
    ['truncated JSON', json, '{"to":'],
    ['an unknown field', json, msg({ x: 1 })],
    ['a bad encryption', json, msg({ encryption: 'rot13' })],
    ['plaintext refused', json, msg({ encryption: 'none' })],
    ['a domain not served', json, msg({ to: 'bob@elsewhere.net' })],
    ['no localpart', json, msg({ to: 'example.org' })],
    ['a body over outbox.max_body', json, msg({ body: 'x'.repeat(1500) })],
    ['a long Idempotency-Key', { ...json, 'Idempotency-Key': 'k'.repeat(256) }, msg({})],
  ];
  for (const [what, headers, body] of cases) {
    const fast = await post(headers, body, false);
    const routed = await post(headers, body, true);
    assert.deepEqual({ ...fast, etag: undefined }, { ...routed, etag: undefined }, what);
    assert.equal(fast.etag, undefined, `${what}: the fast path answered`);
  }
  // Idempotency: first, replay, conflict, each on its own key per path.
  for (const viaExpress of [false, true]) {
    const key = { ...json, 'Idempotency-Key': `key-${viaExpress}` };
    const first = await post(key, msg({}), viaExpress);
    const again = await post(key, msg({}), viaExpress);
    const other = await post(key, msg({ body: 'other' }), viaExpress);
    assert.equal(first.status, 202);
    assert.deepEqual(again.headers.find(([k]) => k === 'idempotent-replayed'), ['idempotent-replayed', 'true']);
    assert.equal(other.status, 409);
    assert.match(other.text, /"code":"conflict"/);
  }
  // The rate limit: 429 with Retry-After.
  const slow = { ...json, Authorization: `Bearer ${SLOW}` };
  assert.equal((await post(slow, msg({}), false)).status, 202);
  const fast = await post(slow, msg({}), false);
  assert.equal(fast.status, 429);
  assert.match(fast.text, /"code":"rate_limited"/);
  assert.ok(fast.headers.some(([k]) => k === 'retry-after'));
});
