// Every endpoint's success and error paths through supertest on the real app (no server needed:
// messages are queued while the component is offline), and the OpenAPI document held against what
// the implementation answers: each call's (route, status) must be documented, and each documented
// operation must have been exercised here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { validateConfig } from '../../config.js';
import { Gateway } from '../../context.js';
import { createLogger } from '../../log.js';
import { openapi } from '../../http/openapi.js';
import xml from '@xmpp/xml';

const ADMIN = 'admin-token-0123456789';
const BOT = 'alerts-token-0123456789';
const SLOW = 'slowbot-token-0123456789';
let gw: Gateway;
const observed: Array<{ method: string; path: string; status: number }> = [];

type Method = 'get' | 'post' | 'put' | 'delete';
async function call(method: Method, path: string, opts: { token?: string; body?: unknown; headers?: Record<string, string>; raw?: string } = {}) {
  let r = request(gw.app)[method](path);
  if (opts.token) r = r.set('Authorization', `Bearer ${opts.token}`);
  for (const [k, v] of Object.entries(opts.headers ?? {})) r = r.set(k, v);
  if (opts.raw !== undefined) r = r.set('Content-Type', 'application/json').send(opts.raw);
  else if (opts.body !== undefined) r = r.send(opts.body as object);
  const res = await r;
  observed.push({ method, path: path.split('?')[0]!, status: res.status });
  if (res.status >= 400 && res.status !== 503) {
    assert.equal(typeof res.body?.error?.code, 'string', `${method} ${path} ${res.status}: error body ${res.text}`);
    assert.equal(typeof res.body?.error?.message, 'string');
  }
  return res;
}

function operationFor(method: string, path: string): { template: string; op: { responses: Record<string, unknown> } } | null {
  for (const [template, ops] of Object.entries(openapi.paths)) {
    const re = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    const op = (ops as Record<string, { responses: Record<string, unknown> }>)[method];
    if (re.test(path) && op) return { template, op };
  }
  return null;
}

before(() => {
  const config = validateConfig({
    component: { domain: 'gw.example.org', secret: 'component-secret' },
    http: { admin_token: ADMIN },
    keystore: { path: ':memory:', passphrase: 'passphrase-for-tests' },
    outbox: { max_body: '1kb' },
    bridge: { allowed_domains: ['example.org'] },
    bots: [
      {
        localpart: 'alerts',
        token: BOT,
        webhook: { url: 'http://127.0.0.1:9/hook', secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=' },
        rooms: ['ops@conference.example.org', { jid: 'Semi@Conference.example.org', nick: 'alertbot' }],
      },
      { localpart: 'slow', token: SLOW, rate_limit: { per_second: 1, burst: 2 } },
    ],
  });
  gw = new Gateway(config, { log: createLogger('silent'), keystore: { kdf: { N: 1024, r: 8, p: 1 } } });
});

after(() => gw.keystore.close());

describe('POST /v1/messages and GET /v1/messages/{id}', () => {
  test('a message is queued durably (202, Location), readable by its bot and the admin only', async () => {
    const res = await call('post', '/v1/messages', { token: BOT, body: { to: 'Bob@Example.org/phone', body: 'disk 91% full' } });
    assert.equal(res.status, 202);
    assert.equal(res.body.status, 'queued');
    assert.match(res.body.id, /^msg_/);
    assert.equal(res.headers.location, `/v1/messages/${res.body.id}`);
    const stored = gw.outbox.get(res.body.id)!;
    assert.equal(stored.to, 'bob@example.org');
    assert.equal(gw.outbox.body(res.body.id), 'disk 91% full');
    // At rest the body is sealed.
    const raw = gw.keystore.db.prepare('SELECT body FROM outbox WHERE id = ?').get(res.body.id) as { body: Buffer };
    assert.ok(!raw.body.includes(Buffer.from('disk 91% full')));
    const got = await call('get', `/v1/messages/${res.body.id}`, { token: BOT });
    assert.equal(got.status, 200);
    assert.deepEqual({ id: got.body.id, to: got.body.to, status: got.body.status, encryption: got.body.encryption }, { id: res.body.id, to: 'bob@example.org', status: 'queued', encryption: null });
    assert.equal((await call('get', `/v1/messages/${res.body.id}`, { token: ADMIN })).status, 200);
    assert.equal((await call('get', `/v1/messages/${res.body.id}`, { token: SLOW })).status, 404);
    assert.equal((await call('get', '/v1/messages/msg_nope', { token: BOT })).status, 404);
    assert.equal((await call('get', '/v1/messages/msg_nope')).status, 401);
  });

  test('Idempotency-Key returns the same message; a different request with the key is 409', async () => {
    const headers = { 'Idempotency-Key': 'deploy-42' };
    const a = await call('post', '/v1/messages', { token: BOT, headers, body: { to: 'bob@example.org', body: 'deployed' } });
    const b = await call('post', '/v1/messages', { token: BOT, headers, body: { to: 'bob@example.org', body: 'deployed' } });
    assert.equal(a.status, 202);
    assert.equal(b.status, 202);
    assert.equal(b.body.id, a.body.id);
    assert.equal(b.headers['idempotent-replayed'], 'true');
    const c = await call('post', '/v1/messages', { token: BOT, headers, body: { to: 'bob@example.org', body: 'something else' } });
    assert.equal(c.status, 409);
    assert.equal(c.body.error.code, 'conflict');
    // Another bot may use the same key independently.
    const d = await call('post', '/v1/messages', { token: SLOW, headers, body: { to: 'bob@example.org', body: 'deployed' } });
    assert.equal(d.status, 202);
    assert.notEqual(d.body.id, a.body.id);
  });

  test('bad requests name the field (400), oversized bodies are 413, outside domains 403, the admin token 403', async () => {
    const cases: Array<[unknown, number, string, RegExp?]> = [
      [{ body: 'x' }, 400, 'invalid_field', /"to" is required/],
      [{ to: 'bob@example.org' }, 400, 'invalid_field', /"body" is required/],
      [{ to: 'bob@example.org', body: 42 }, 400, 'invalid_field', /"body" must be a string/],
      [{ to: 'not a jid', body: 'x' }, 400, 'invalid_field', /"to"/],
      [{ to: 'example.org', body: 'x' }, 400, 'invalid_field', /user JID/],
      [{ to: 'bob@example.org', body: 'x', encryption: 'rot13' }, 400, 'invalid_field', /"encryption"/],
      [{ to: 'bob@example.org', body: 'x', priority: 'high' }, 400, 'invalid_field', /Unknown field "priority"/],
      [['array'], 400, 'bad_request'],
      [{ to: 'bob@example.org', body: 'x', encryption: 'none' }, 400, 'plaintext_refused'],
      [{ to: 'eve@evil.test', body: 'x' }, 403, 'recipient_not_allowed'],
      [{ to: 'bob@example.org', body: 'é'.repeat(600) }, 413, 'payload_too_large'],
    ];
    for (const [body, status, code, re] of cases) {
      const res = await call('post', '/v1/messages', { token: BOT, body });
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(res.body.error.code, code, JSON.stringify(body));
      if (re) assert.match(res.body.error.message, re);
    }
    const bad = await call('post', '/v1/messages', { token: BOT, raw: '{"to":' });
    assert.equal(bad.body.error.code, 'bad_json');
    const admin = await call('post', '/v1/messages', { token: ADMIN, body: { to: 'bob@example.org', body: 'x' } });
    assert.equal(admin.status, 403);
    assert.equal(admin.body.error.code, 'forbidden');
    const none = await call('post', '/v1/messages', { body: { to: 'bob@example.org', body: 'x' } });
    assert.equal(none.status, 401);
  });

  test('per-bot rate limit: 429 with Retry-After, other bots unaffected', async () => {
    const send = () => call('post', '/v1/messages', { token: SLOW, body: { to: 'bob@example.org', body: 'tick' } });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await send()).status);
    assert.deepEqual(statuses.slice(0, 1), [202]);
    const limited = await send();
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error.code, 'rate_limited');
    assert.ok(Number(limited.headers['retry-after']) >= 1);
    assert.equal((await call('post', '/v1/messages', { token: BOT, body: { to: 'bob@example.org', body: 'ok' } })).status, 202);
  });
});

describe('identities, contacts and trust', () => {
  test('GET /v1/identities/{jid} for bots and proxies; errors for the domain, unknown and outside JIDs', async () => {
    const bot = await call('get', `/v1/identities/${encodeURIComponent('alerts@gw.example.org')}`, { token: BOT });
    assert.equal(bot.status, 200);
    assert.equal(bot.body.jid, 'alerts@gw.example.org');
    for (const k of ['omemo', 'pgp', 'otr', 'ox']) assert.ok(k in bot.body, k);
    const proxy = await call('get', `/v1/identities/${encodeURIComponent('bob%example.org@gw.example.org')}`, { token: ADMIN });
    assert.equal(proxy.status, 200);
    assert.equal(proxy.body.jid, 'bob\\40example.org@gw.example.org');
    // Created on first use: an OMEMO device and an OpenPGP key whose user ID is the escaped JID.
    assert.equal(proxy.body.omemo.length, 1);
    assert.match(proxy.body.omemo[0].fingerprint, /^[0-9a-f]{64}$/);
    assert.match(proxy.body.pgp.fingerprint, /^[0-9A-F]{40}$/);
    assert.match(proxy.body.pgp.public_key, /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    const again = await call('get', `/v1/identities/${encodeURIComponent('bob\\40example.org@gw.example.org')}`, { token: BOT });
    assert.deepEqual(again.body, proxy.body, 'the same identity on the next call');
    assert.equal((await call('get', `/v1/identities/${encodeURIComponent('gw.example.org')}`, { token: BOT })).status, 404);
    assert.equal((await call('get', `/v1/identities/${encodeURIComponent('nobody@gw.example.org')}`, { token: BOT })).status, 404);
    assert.equal((await call('get', `/v1/identities/${encodeURIComponent('eve\\40evil.test@gw.example.org')}`, { token: BOT })).status, 403);
    assert.equal((await call('get', `/v1/identities/${encodeURIComponent('a b@@')}`, { token: BOT })).status, 400);
    assert.equal((await call('get', `/v1/identities/${encodeURIComponent('alerts@gw.example.org')}`)).status, 401);
  });

  test('devices and trust: list, set by fingerprint, unknown fingerprint 404, bot token 403', async () => {
    gw.trust.observe('bob@example.org', 'omemo', '1234', 'ab'.repeat(32));
    const list = await call('get', `/v1/contacts/${encodeURIComponent('bob@example.org')}/devices`, { token: ADMIN });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.devices.map((d: { device_id: number; trust: string }) => [d.device_id, d.trust]), [[1234, 'trusted']]);
    const set = await call('put', `/v1/contacts/${encodeURIComponent('bob@example.org')}/trust`, { token: ADMIN, body: { fingerprint: 'AB'.repeat(32), trust: 'verified' } });
    assert.equal(set.status, 200);
    assert.equal(set.body.trust, 'verified');
    assert.equal(gw.trust.get('bob@example.org', 'omemo', 'ab'.repeat(32))!.trust, 'verified');
    assert.equal((await call('put', `/v1/contacts/${encodeURIComponent('bob@example.org')}/trust`, { token: ADMIN, body: { fingerprint: 'cd'.repeat(32), trust: 'trusted' } })).status, 404);
    assert.equal((await call('put', `/v1/contacts/${encodeURIComponent('bob@example.org')}/trust`, { token: ADMIN, body: { fingerprint: 'ab', trust: 'maybe' } })).status, 400);
    assert.equal((await call('get', `/v1/contacts/${encodeURIComponent('bob@example.org')}/devices`, { token: BOT })).status, 403);
    assert.equal((await call('put', `/v1/contacts/${encodeURIComponent('bob@example.org')}/trust`, { token: BOT, body: {} })).status, 403);
    assert.equal((await call('get', `/v1/contacts/${encodeURIComponent('bob@')}/devices`, { token: ADMIN })).status, 400);
    assert.equal((await call('get', `/v1/contacts/${encodeURIComponent('eve@evil.test')}/devices`, { token: ADMIN })).status, 403);
    assert.equal((await call('get', `/v1/contacts/${encodeURIComponent('bob@example.org')}/devices`)).status, 401);
    assert.equal((await call('put', `/v1/contacts/${encodeURIComponent('bob@example.org')}/trust`, {})).status, 401);
  });

  test('PUT /v1/contacts/{jid} sets and clears the preferred protocol', async () => {
    const jid = encodeURIComponent('carol@example.org');
    const set = await call('put', `/v1/contacts/${jid}`, { token: ADMIN, body: { protocol: 'pgp' } });
    assert.equal(set.status, 200);
    assert.equal(gw.contacts.get('carol@example.org')!.preferredProtocol, 'pgp');
    assert.equal((await call('put', `/v1/contacts/${jid}`, { token: ADMIN, body: { protocol: null } })).status, 200);
    assert.equal(gw.contacts.get('carol@example.org')!.preferredProtocol, null);
    assert.equal((await call('put', `/v1/contacts/${jid}`, { token: ADMIN, body: { protocol: 'carrier-pigeon' } })).status, 400);
    assert.equal((await call('put', `/v1/contacts/${jid}`, { token: ADMIN, body: {} })).status, 400);
    assert.equal((await call('put', `/v1/contacts/${jid}`, { token: BOT, body: { protocol: 'pgp' } })).status, 403);
    assert.equal((await call('put', `/v1/contacts/${encodeURIComponent('eve@evil.test')}`, { token: ADMIN, body: { protocol: 'pgp' } })).status, 403);
    assert.equal((await call('put', `/v1/contacts/${jid}`, { body: { protocol: 'pgp' } })).status, 401);
  });
});

describe('webhook dead letters (admin)', () => {
  test('list and retry; unknown ids 404; bot token 403', async () => {
    gw.webhookStore.enqueue('alerts', 'bob@example.org', { id: 'evt_dead1', type: 'message' });
    gw.webhookStore.markDead('evt_dead1', 'HTTP 500');
    const list = await call('get', '/v1/webhooks/dead-letters?bot=alerts', { token: ADMIN });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.dead_letters.map((d: { id: string; last_error: string }) => [d.id, d.last_error]), [['evt_dead1', 'HTTP 500']]);
    const retry = await call('post', '/v1/webhooks/dead-letters/evt_dead1/retry', { token: ADMIN });
    assert.equal(retry.status, 202);
    assert.equal(gw.webhookStore.get('evt_dead1')!.status, 'pending');
    assert.equal((await call('post', '/v1/webhooks/dead-letters/evt_dead1/retry', { token: ADMIN })).status, 404);
    assert.equal((await call('get', '/v1/webhooks/dead-letters', { token: BOT })).status, 403);
    assert.equal((await call('post', '/v1/webhooks/dead-letters/evt_x/retry', { token: BOT })).status, 403);
    assert.equal((await call('get', '/v1/webhooks/dead-letters')).status, 401);
    assert.equal((await call('post', '/v1/webhooks/dead-letters/evt_x/retry')).status, 401);
  });
});

describe('XEP-0027 key registration without the PGP engine', () => {
  test('PUT and DELETE /v1/contacts/{jid}/pgp-key answer as documented', async () => {
    const jid = encodeURIComponent('dave@example.org');
    for (const m of ['put', 'delete'] as const) {
      assert.equal((await call(m, `/v1/contacts/${jid}/pgp-key`, { body: m === 'put' ? { key: 'x' } : undefined })).status, 401);
      assert.equal((await call(m, `/v1/contacts/${jid}/pgp-key`, { token: BOT, body: m === 'put' ? { key: 'x' } : undefined })).status, 403);
    }
  });
});

describe('group chats', () => {
  test('GET /v1/bots/{localpart}/rooms: that bot or the admin; another bot sees nothing', async () => {
    const r = await call('get', '/v1/bots/alerts/rooms', { token: BOT });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.rooms.map((x: { jid: string; nick: string; state: string }) => [x.jid, x.nick, x.state]), [
      ['ops@conference.example.org', 'alerts', 'offline'],
      ['semi@conference.example.org', 'alertbot', 'offline'],
    ]);
    assert.equal((await call('get', '/v1/bots/alerts/rooms', { token: ADMIN })).status, 200);
    assert.equal((await call('get', '/v1/bots/alerts/rooms', { token: SLOW })).status, 404);
    assert.equal((await call('get', '/v1/bots/nobody/rooms', { token: ADMIN })).status, 404);
    assert.equal((await call('get', '/v1/bots/alerts/rooms')).status, 401);
  });

  test('a POST to a room of the bot is queued (its MUC domain need not be bridged); a room known not to be private is refused at once', async () => {
    const ok = await call('post', '/v1/messages', { token: BOT, body: { to: 'ops@conference.example.org', body: 'to the room' } });
    assert.equal(ok.status, 202);
    // Another bot may not post to a room that is not its own: the domain is not bridged. (The slow
    // bot's rate limit, 1 per second, was used up by an earlier test: wait for a token first.)
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await call('post', '/v1/messages', { token: SLOW, body: { to: 'ops@conference.example.org', body: 'x' } })).status, 403);
    gw.rooms.onOnline();
    try {
      // The room answers the join with our own presence (110) without status 100: semi-anonymous.
      await gw.router.handle(
        xml('presence', { from: 'semi@conference.example.org/alertbot', to: 'alerts@gw.example.org/gw' }, xml('x', { xmlns: 'http://jabber.org/protocol/muc#user' }, xml('item', { affiliation: 'member', role: 'participant' }), xml('status', { code: '110' }))),
      );
      const rooms = (await call('get', '/v1/bots/alerts/rooms', { token: BOT })).body.rooms as Array<{ jid: string; state: string; last_error: { code: string } | null }>;
      const semi = rooms.find((x) => x.jid === 'semi@conference.example.org')!;
      assert.equal(semi.state, 'not_private');
      assert.equal(semi.last_error?.code, 'room_not_private');
      const refused = await call('post', '/v1/messages', { token: BOT, body: { to: 'semi@conference.example.org', body: 'x' } });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, 'room_not_private');
    } finally {
      gw.rooms.onOffline();
    }
  });
});

describe('public endpoints', () => {
  test('/healthz, /readyz, /metrics and /openapi.json', async () => {
    assert.equal((await call('get', '/healthz')).status, 200);
    assert.equal((await call('get', '/readyz')).status, 503);
    assert.equal((await call('get', '/metrics')).status, 200);
    const doc = await call('get', '/openapi.json');
    assert.equal(doc.status, 200);
    assert.equal(doc.body.openapi, '3.0.3');
  });
});

describe('OpenAPI document matches the implementation', () => {
  test('every answered (route, status) is documented, every documented operation was exercised', () => {
    const exercised = new Set<string>();
    for (const o of observed) {
      const found = operationFor(o.method, o.path);
      assert.ok(found, `undocumented route: ${o.method.toUpperCase()} ${o.path}`);
      assert.ok(String(o.status) in found.op.responses, `${o.method.toUpperCase()} ${found.template} answered ${o.status}, not in openapi.json`);
      exercised.add(`${o.method} ${found.template}`);
    }
    for (const [template, ops] of Object.entries(openapi.paths)) {
      for (const method of Object.keys(ops)) assert.ok(exercised.has(`${method} ${template}`), `documented but never exercised: ${method.toUpperCase()} ${template}`);
    }
  });
});
