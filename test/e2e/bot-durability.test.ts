// Bots: what is accepted is never lost and never doubled. The gateway runs as its own process;
// the bot's webhook goes down for a while; the gateway is killed with SIGKILL while messages wait in
// the outbox (server away) and in the webhook queue (webhook away). Against a python-omemo user.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { waitUntil } from '../harness/gateway.js';
import { GatewayProcess } from '../harness/gateway-process.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';

const BOT_TOKEN = 'alerts-bot-token-0001';

describe('durable outbox and webhook queue', () => {
  let server: Prosody;
  let hook: WebhookReceiver;
  let gw: GatewayProcess;
  let bob: PythonOmemoUser;
  let bot: string;

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    gw = await GatewayProcess.create(server, {
      bots: [{ localpart: 'alerts', token: BOT_TOKEN, webhook: { url: hook.url, secret: hook.secret }, rate_limit: { per_second: 1000, burst: 1000 } }],
      extra: { webhooks: { retry_for: '1h', max_retry_delay: '1s', timeout: '5s' } },
    });
    await gw.start();
    bot = `alerts@${server.componentDomain}`;
    bob = await PythonOmemoUser.start(server, 'bob', { resource: 'phone' });
    await bob.subscribe(bot);
  });

  after(async () => {
    await bob?.stop();
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test('the webhook down for a while, then back: every message delivered exactly once and in order', async () => {
    hook.up = false;
    for (let i = 0; i < 10; i++) await bob.send(bot, `outage #${i}`);
    await waitUntil(() => hook.requests.filter(([, s]) => s === 503).length >= 3, 15000, 'failed attempts while down');
    assert.equal(hook.accepted.length, 0);
    hook.up = true;
    await waitUntil(() => hook.messages().length === 10, 20000, 'all ten delivered');
    await new Promise((r) => setTimeout(r, 1500)); // anything doubled would arrive now
    const msgs = hook.messages();
    assert.deepEqual(msgs.map((m) => m.body), Array.from({ length: 10 }, (_, i) => `outage #${i}`));
    assert.equal(new Set(hook.accepted.map((d) => d.id)).size, hook.accepted.length, 'no webhook id accepted twice');
    assert.equal(hook.badSignatures.length, 0);
    // The first one was retried under the same id.
    assert.ok(hook.accepted[0]!.attempts > 1);
  });

  test('SIGKILL with messages in the outbox and in the webhook queue: all delivered after restart, none twice', async () => {
    const acceptedBefore = hook.messages().length;
    // Inbound: the webhook is down, so bob's messages wait in the gateway's webhook queue.
    hook.up = false;
    for (let i = 0; i < 5; i++) await bob.send(bot, `queued inbound #${i}`);
    await waitUntil(async () => {
      const m = await (await fetch(`${gw.url}/metrics`)).text();
      return /gateway_webhook_queue_depth\{bot="alerts"\} 5\b/.test(m);
    }, 15000, 'five deliveries queued');
    // Outbound: the server goes away, so the bot's messages wait in the outbox.
    await server.stop();
    await waitUntil(async () => (await fetch(`${gw.url}/readyz`)).status === 503, 10000, 'gateway offline');
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await gw.post('/v1/messages', BOT_TOKEN, { to: 'bob@example.org', body: `queued outbound #${i}` });
      assert.equal(r.status, 202);
      ids.push(String(r.body.id));
    }
    await gw.kill();

    hook.up = true;
    await server.start();
    await gw.start();
    await waitUntil(() => hook.messages().length === acceptedBefore + 5, 20000, 'queued inbound delivered after restart');
    for (let i = 0; i < 10; i++) await bob.waitForMessage((m) => m.body === `queued outbound #${i}`, 30000, `outbound #${i}`);
    await new Promise((r) => setTimeout(r, 2000)); // anything doubled would arrive now

    assert.deepEqual(hook.messages().slice(acceptedBefore).map((m) => m.body), Array.from({ length: 5 }, (_, i) => `queued inbound #${i}`));
    const outbound = bob.messages.filter((m) => m.from === bot && m.body?.startsWith('queued outbound')).map((m) => m.body);
    assert.deepEqual(outbound, Array.from({ length: 10 }, (_, i) => `queued outbound #${i}`), 'each once, in order');
    for (const id of ids) {
      const s = await gw.get(`/v1/messages/${id}`, BOT_TOKEN);
      assert.ok(['sent', 'delivered'].includes(String(s.body.status)), `${id}: ${JSON.stringify(s.body)}`);
    }
  });
});
