import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { validateConfig } from '../../config.js';
import { Gateway } from '../../context.js';
import { createLogger } from '../../log.js';

let gw: Gateway;

before(() => {
  const config = validateConfig({
    component: { domain: 'gw.example.org', secret: 'component-secret' },
    http: { admin_token: 'admin-token-0123456789', body_limit: '1kb' },
    keystore: { path: ':memory:', passphrase: 'passphrase-for-tests' },
    outbox: { max_body: '512' },
    bridge: { allowed_domains: ['example.org'] },
    bots: [{ localpart: 'alerts', token: 'alerts-token-0123456789' }],
  });
  gw = new Gateway(config, { log: createLogger('silent'), keystore: { kdf: { N: 1024, r: 8, p: 1 } } });
});

after(() => gw.keystore.close());

test('/healthz is 200 without auth; /readyz is 503 with the reason while the component is not connected', async () => {
  await request(gw.app).get('/healthz').expect(200, { status: 'ok' });
  const r = await request(gw.app).get('/readyz').expect(503);
  assert.equal(r.body.status, 'not_ready');
  assert.equal(r.body.checks.component.ok, false);
  assert.equal(r.body.checks.keystore.ok, true);
});

test('/metrics is Prometheus text with the component gauge and process metrics', async () => {
  const r = await request(gw.app).get('/metrics').expect(200);
  assert.match(String(r.headers['content-type']), /text\/plain/);
  assert.match(r.text, /^gateway_component_connected 0$/m);
  assert.match(r.text, /gateway_process_cpu_seconds_total/);
  assert.match(r.text, /# TYPE gateway_stanzas_in_total counter/);
});

test('API errors are JSON {error:{code,message}}: 401 without or with a wrong token, 404, 400 bad JSON, 413 too large', async () => {
  const noAuth = await request(gw.app).get('/v1/messages/x').expect(401);
  assert.equal(noAuth.body.error.code, 'unauthorized');
  assert.equal(noAuth.headers['www-authenticate'], 'Bearer');
  const wrong = await request(gw.app).get('/v1/messages/x').set('Authorization', 'Bearer not-a-valid-token').expect(401);
  assert.equal(wrong.body.error.code, 'unauthorized');
  const missing = await request(gw.app).get('/v1/nothing-here').set('Authorization', 'Bearer admin-token-0123456789').expect(404);
  assert.equal(missing.body.error.code, 'not_found');
  const bad = await request(gw.app)
    .post('/v1/messages')
    .set('Authorization', 'Bearer alerts-token-0123456789')
    .set('Content-Type', 'application/json')
    .send('{"to": ')
    .expect(400);
  assert.equal(bad.body.error.code, 'bad_json');
  const big = await request(gw.app)
    .post('/v1/messages')
    .set('Authorization', 'Bearer alerts-token-0123456789')
    .set('Content-Type', 'application/json')
    .send(JSON.stringify({ to: 'bob@example.org', body: 'x'.repeat(4096) }))
    .expect(413);
  assert.equal(big.body.error.code, 'payload_too_large');
  const notJson = await request(gw.app).post('/v1/messages').set('Authorization', 'Bearer alerts-token-0123456789').set('Content-Type', 'text/plain').send('hi').expect(400);
  assert.equal(notJson.body.error.code, 'bad_request');
});
