// Issue 15 bugs 4 and 5 at the HTTP API: JIDs with control or XML-invalid characters are refused
// with 400 (they used to be accepted and then cut the component connection on every send attempt),
// and malformed percent-escapes or undecodable compressed bodies are a 400 with a JSON error, never
// a 500 (nor an error log line with a stack).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import { validateConfig } from '../../config.js';
import { Gateway } from '../../context.js';
import { createLogger } from '../../log.js';
import { LogCapture } from '../harness/gateway.js';

const ADMIN = 'admin-token-0123456789';
const BOT = 'alerts-token-0123456789';
let gw: Gateway;
let server: http.Server;
let base: string;
const logs = new LogCapture();

before(async () => {
  const config = validateConfig({
    component: { domain: 'gw.example.org', secret: 'component-secret' },
    http: { admin_token: ADMIN },
    keystore: { path: ':memory:', passphrase: 'passphrase-for-tests' },
    bridge: { allowed_domains: ['example.org'] },
    bots: [{ localpart: 'alerts', token: BOT }],
  });
  gw = new Gateway(config, { log: createLogger('debug', logs), keystore: { kdf: { N: 1024, r: 8, p: 1 } } });
  server = http.createServer(gw.app).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise((r) => server.close(r));
  gw.keystore.close();
});

async function call(method: string, path: string, token: string, body?: Buffer | string, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body } : {}),
  });
  const text = await res.text();
  return { status: res.status, text, json: (() => { try { return JSON.parse(text); } catch { return null; } })() };
}

const expect400 = (r: { status: number; text: string; json: { error?: { code?: string } } | null }, what: string, code?: string) => {
  assert.equal(r.status, 400, `${what}: ${r.status} ${r.text.slice(0, 200)}`);
  assert.equal(typeof r.json?.error?.code, 'string', `${what}: JSON error`);
  if (code) assert.equal(r.json!.error!.code, code, what);
  assert.doesNotMatch(r.text, /at .*\.js:\d+|stack/i, `${what}: no stack trace`);
};

test('bug 4: POST /v1/messages with a "to" holding U+0000 or any control / XML-invalid character / no valid JID is a 400', async () => {
  const tos = ['bob\u0000@example.org', 'bob@example.org\u0000', 'b\u0001ob@example.org', 'bob\uFFFE@example.org', 'bob\uD800@example.org', `${'x'.repeat(1024)}@example.org`, 'bob@exa..mple.org', 'bob@example.org/\u0000'];
  for (const to of tos) expect400(await call('POST', '/v1/messages', BOT, JSON.stringify({ to, body: 'x' })), JSON.stringify(to), 'invalid_field');
  assert.equal(gw.outbox.stats().depth, 0, 'nothing was queued');
  // a JID in a path likewise
  expect400(await call('GET', '/v1/identities/a%00b%40example.org%40gw.example.org', ADMIN), 'identities NUL');
  expect400(await call('GET', '/v1/contacts/bob%00%40example.org/devices', ADMIN), 'contacts NUL', 'invalid_field');
});

test('bug 5: malformed percent-escapes in /v1/identities, /v1/messages and /v1/contacts/.../devices are a 400, not a 500', async () => {
  for (const path of ['/v1/identities/%E0%A4%A', '/v1/identities/%', '/v1/messages/%zz', '/v1/messages/%E0%80', '/v1/contacts/%/devices', '/v1/contacts/%C3%28%/devices']) {
    expect400(await call('GET', path, ADMIN), path, 'bad_request');
  }
  expect400(await call('PUT', '/v1/contacts/%zz/trust', ADMIN, JSON.stringify({ fingerprint: 'x', trust: 'verified' })), 'PUT trust', 'bad_request');
});

test('bug 5: Content-Encoding deflate/gzip/br bodies that do not decompress are a 400; valid ones are read', async () => {
  const json = JSON.stringify({ to: 'bob@example.org', body: 'compressed' });
  const bad: Array<[string, Buffer]> = [
    ['deflate', Buffer.from('not deflate at all')],
    ['gzip', Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4])],
    ['gzip', zlib.gzipSync(json).subarray(0, 20)],
    ['br', Buffer.from('garbage')],
    ['deflate', zlib.gzipSync(json)],
  ];
  for (const [enc, body] of bad) expect400(await call('POST', '/v1/messages', BOT, body, { 'content-encoding': enc }), `${enc} ${body.length}`, 'bad_request');
  for (const [enc, body] of [['deflate', zlib.deflateSync(json)], ['gzip', zlib.gzipSync(json)], ['br', zlib.brotliCompressSync(json)]] as const) {
    const r = await call('POST', '/v1/messages', BOT, body, { 'content-encoding': enc });
    assert.equal(r.status, 202, `${enc}: ${r.text}`);
  }
  // none of this was an internal error in the log
  assert.doesNotMatch(logs.text(), /"level":50/);
});
