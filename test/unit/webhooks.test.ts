// The webhook dispatcher against a local HTTP receiver: signatures that the Standard Webhooks
// library verifies, retries with the same id and a fresh signature, order per sender, dead letters,
// and one bot's dead webhook not delaying another bot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { Keystore } from '../../keystore/keystore.js';
import { WebhookStore } from '../../keystore/webhook-store.js';
import { WebhookDispatcher } from '../../http/webhooks.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import type { BotConfig } from '../../config.js';
import { signingKey } from '../../http/webhook-signing.js';
import { waitUntil } from '../harness/gateway.js';

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
  status: number;
  at: number;
}

async function receiver(answer: (n: number, body: string) => number | Promise<number>): Promise<{ server: Server; url: string; got: Received[] }> {
  const got: Received[] = [];
  let n = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', async () => {
      const status = await answer(n++, body);
      got.push({ headers: req.headers, body, status, at: Date.now() });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, got };
}

function setup(bots: BotConfig[], opts: Partial<ConstructorParameters<typeof WebhookDispatcher>[0]> = {}) {
  const ks = Keystore.open(':memory:', 'passphrase-for-tests', { kdf: { N: 1024, r: 8, p: 1 } });
  const store = new WebhookStore(ks);
  const metrics = new Metrics({ processMetrics: false });
  const d = new WebhookDispatcher({ store, bots, metrics, log: createLogger('silent'), timeoutMs: 2000, retryForMs: 60000, maxDelayMs: 200, baseDelayMs: 20, ...opts });
  return { ks, store, metrics, d };
}

const bot = (localpart: string, url: string, secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'): BotConfig => ({
  localpart,
  token: 'x'.repeat(20),
  webhook: { url, secret },
  rateLimit: { perSecond: 10, burst: 10 },
  allowPlaintext: false,
});

test('signatures: X-Gateway-Signature and Standard Webhooks headers verify with the standardwebhooks library', async () => {
  const rx = await receiver(() => 204);
  const { d, ks, metrics } = setup([bot('alerts', rx.url)]);
  d.start();
  try {
    d.enqueue('alerts', 'bob@example.org', { id: 'evt_1', type: 'message', body: 'héllo\nworld' });
    await waitUntil(() => rx.got.length === 1, 5000, 'delivery');
    const { headers, body } = rx.got[0]!;
    assert.deepEqual(JSON.parse(body), { id: 'evt_1', type: 'message', body: 'héllo\nworld' });
    const key = signingKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    assert.equal(headers['x-gateway-signature'], `sha256=${createHmac('sha256', key).update(body).digest('hex')}`);
    assert.equal(headers['webhook-id'], 'evt_1');
    const wh = new Webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    assert.deepEqual(wh.verify(body, headers as Record<string, string>), JSON.parse(body));
    assert.throws(() => wh.verify(body.replace('world', 'w0rld'), headers as Record<string, string>));
    // The receiver records the request before the dispatcher has read the answer and counted it.
    const counted = /gateway_webhook_deliveries_total\{bot="alerts",result="ok"\} 1/;
    let text = '';
    await waitUntil(async () => counted.test((text = await metrics.registry.metrics())), 5000, 'delivery counted');
    assert.match(text, counted);
  } finally {
    await d.stop();
    rx.server.close();
    ks.close();
  }
});

test('a plain-text secret signs with its UTF-8 bytes', async () => {
  const rx = await receiver(() => 200);
  const { d, ks } = setup([bot('alerts', rx.url, 'plain-text-secret-123')]);
  d.start();
  try {
    d.enqueue('alerts', 'k', { id: 'evt_p', type: 'message' });
    await waitUntil(() => rx.got.length === 1, 5000, 'delivery');
    const { headers, body } = rx.got[0]!;
    const ts = headers['webhook-timestamp'];
    assert.equal(headers['webhook-signature'], `v1,${createHmac('sha256', Buffer.from('plain-text-secret-123')).update(`evt_p.${ts}.${body}`).digest('base64')}`);
  } finally {
    await d.stop();
    rx.server.close();
    ks.close();
  }
});

test('a failing webhook is retried with the same id and a new signature, in order per sender, each delivered once', async () => {
  // Down for the first 4 attempts, then up.
  const rx = await receiver((n) => (n < 4 ? 503 : 200));
  const { d, ks, store } = setup([bot('alerts', rx.url)]);
  d.start();
  try {
    for (let i = 0; i < 5; i++) d.enqueue('alerts', 'bob@example.org', { id: `evt_b${i}`, type: 'message', seq: i });
    await waitUntil(() => rx.got.filter((g) => g.status === 200).length === 5, 10000, 'all delivered');
    const ok = rx.got.filter((g) => g.status === 200).map((g) => JSON.parse(g.body).seq);
    assert.deepEqual(ok, [0, 1, 2, 3, 4]);
    // All failed attempts were for the head of the line, and with the same id.
    const failed = rx.got.filter((g) => g.status !== 200);
    assert.ok(failed.every((g) => g.headers['webhook-id'] === 'evt_b0'));
    const sigs = new Set(rx.got.filter((g) => g.headers['webhook-id'] === 'evt_b0').map((g) => g.headers['webhook-timestamp'] + String(g.headers['webhook-signature'])));
    assert.ok(sigs.size >= 1);
    assert.equal(store.get('evt_b0')!.status, 'delivered');
    assert.equal(store.payload('evt_b0'), null, 'payload wiped after delivery');
  } finally {
    await d.stop();
    rx.server.close();
    ks.close();
  }
});

test('after retry_for a delivery is dead-lettered and the sender\'s next message proceeds; an admin retry delivers it', async () => {
  let up = false;
  const rx = await receiver((_n, body) => (up || JSON.parse(body).id !== 'evt_d0' ? 200 : 500));
  const { d, ks, store, metrics } = setup([bot('alerts', rx.url)], { retryForMs: 150 });
  d.start();
  try {
    d.enqueue('alerts', 'bob@example.org', { id: 'evt_d0', type: 'message' });
    d.enqueue('alerts', 'bob@example.org', { id: 'evt_d1', type: 'message' });
    await waitUntil(() => store.get('evt_d0')!.status === 'dead', 5000, 'dead letter');
    await waitUntil(() => store.get('evt_d1')!.status === 'delivered', 5000, 'next delivered');
    assert.match(await metrics.registry.metrics(), /result="dead"\} 1/);
    up = true;
    assert.ok(store.revive('evt_d0'));
    d.kick('alerts');
    await waitUntil(() => store.get('evt_d0')!.status === 'delivered', 5000, 'revived delivered');
  } finally {
    await d.stop();
    rx.server.close();
    ks.close();
  }
});

test('a dead (hanging) webhook of one bot does not delay another bot', async () => {
  const slow = await receiver(() => new Promise<number>((r) => setTimeout(() => r(200), 3000)));
  const fast = await receiver(() => 200);
  const { d, ks } = setup([bot('slow', slow.url), bot('fast', fast.url)], { timeoutMs: 5000 });
  d.start();
  try {
    for (let i = 0; i < 3; i++) d.enqueue('slow', `s${i}`, { id: `evt_s${i}`, type: 'message' });
    const t0 = Date.now();
    for (let i = 0; i < 5; i++) d.enqueue('fast', 'k', { id: `evt_f${i}`, type: 'message' });
    await waitUntil(() => fast.got.length === 5, 2500, 'fast bot delivered');
    assert.ok(Date.now() - t0 < 2500);
    assert.equal(slow.got.length, 0);
  } finally {
    await d.stop();
    slow.server.close();
    slow.server.closeAllConnections();
    fast.server.close();
    ks.close();
  }
});
