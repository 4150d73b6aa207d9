// Interop with an independent OMEMO implementation: python-omemo/python-oldmemo (Syndace) on
// slixmpp, as a real user on the test Prosody, talking to a bot hosted by the gateway.
// Issue 4: first PreKey message, 20 messages each way, a gateway restart with sessions surviving,
// a second device of the user, corrupted and replayed messages rejected without harm.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';

const BOT_TOKEN = 'alerts-bot-token-0001';
const ADMIN = 'admin-token-for-tests-0001';

async function post(gw: TestGateway, body: Record<string, unknown>): Promise<string> {
  const r = await fetch(`${gw.url}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${BOT_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(r.status, 202, await r.clone().text());
  return ((await r.json()) as { id: string }).id;
}

async function status(gw: TestGateway, id: string): Promise<{ status: string; encryption: string | null; error?: { code: string } }> {
  const r = await fetch(`${gw.url}/v1/messages/${id}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  return (await r.json()) as { status: string; encryption: string | null; error?: { code: string } };
}

describe('python-omemo user and a bot through Prosody and the gateway', () => {
  let server: Prosody;
  let hook: WebhookReceiver;
  let gw: TestGateway;
  let bob: PythonOmemoUser;
  let bot: string;
  const botOpts = () => ({ bots: [{ localpart: 'alerts', token: BOT_TOKEN, webhook: { url: hook.url, secret: hook.secret } }] });

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    gw = await TestGateway.start(server, botOpts());
    bot = `alerts@${gw.domain}`;
    bob = await PythonOmemoUser.start(server, 'bob', { resource: 'phone' });
  });

  after(async () => {
    await bob?.stop();
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test('the bot\'s device list and bundle are served like PEP, with the fingerprint /v1/identities shows', async () => {
    const devices = await bob.refresh(bot);
    assert.equal(devices.length, 1);
    const ident = (await (await fetch(`${gw.url}/v1/identities/${encodeURIComponent(bot)}`, { headers: { authorization: `Bearer ${BOT_TOKEN}` } })).json()) as {
      omemo: Array<{ device_id: number; fingerprint: string }>;
    };
    assert.deepEqual(ident.omemo.map((d) => d.device_id), [devices[0]!.device_id]);
    assert.equal(devices[0]!.fingerprint, ident.omemo[0]!.fingerprint);
  });

  test('first PreKey message from the user, then 20 messages each way in order', async () => {
    await bob.subscribe(bot);
    const first = await bob.send(bot, 'hello bot, first message ✓', { receipt: true });
    assert.ok(first.prekey_rids && first.prekey_rids.length === 1, 'the first message starts a session (PreKey)');
    await waitUntil(() => hook.messages().length === 1, 15000, 'first message at the webhook');
    const m0 = hook.messages()[0]!;
    assert.equal(m0.body, 'hello bot, first message ✓');
    assert.equal(m0.encryption, 'omemo');
    assert.equal((m0.sender as { device_id: number }).device_id, bob.deviceId);
    assert.equal((m0.sender as { fingerprint: string }).fingerprint, bob.fingerprint);
    assert.equal((m0.sender as { trust: string }).trust, 'trusted');
    await bob.waitForEvent((e) => e.event === 'receipt' && e.id === first.id, 10000, 'receipt from the bot');

    for (let i = 0; i < 20; i++) await bob.send(bot, `to bot #${i}\nline two`);
    for (let i = 0; i < 20; i++) await post(gw, { to: 'bob@example.org', body: `to bob #${i} — ünïcode` });
    await waitUntil(() => hook.messages().length === 21, 20000, '20 more at the webhook');
    assert.deepEqual(hook.messages().slice(1).map((m) => m.body), Array.from({ length: 20 }, (_, i) => `to bot #${i}\nline two`));
    for (let i = 0; i < 20; i++) await bob.waitForMessage((m) => m.body === `to bob #${i} — ünïcode`, 15000, `bot message #${i}`);
    const bodies = bob.messages.filter((m) => m.from === bot && m.body?.startsWith('to bob #')).map((m) => m.body);
    assert.deepEqual(bodies, Array.from({ length: 20 }, (_, i) => `to bob #${i} — ünïcode`));
    assert.ok(bob.messages.filter((m) => m.from === bot).every((m) => m.encrypted), 'everything from the bot is encrypted');
  });

  test('a restart of the gateway keeps the sessions: no new PreKey message either way', async () => {
    await gw.stop();
    gw = await TestGateway.start(server, { ...botOpts(), dir: gw.dir });
    const sent = await bob.send(bot, 'after restart');
    assert.deepEqual(sent.prekey_rids ?? [], [], 'the session survived on the user side');
    await waitUntil(() => hook.messages().some((m) => m.body === 'after restart'), 15000, 'message after restart');
    const id = await post(gw, { to: 'bob@example.org', body: 'from the restarted gateway' });
    const got = await bob.waitForMessage((m) => m.body === 'from the restarted gateway', 15000, 'message from the restarted gateway');
    assert.equal(got.encrypted, true);
    await waitUntil(async () => (await status(gw, id)).status === 'delivered', 10000, 'delivered via receipt');
  });

  test('the user adds a second device: both devices receive the bot\'s next message', async () => {
    const tablet = await PythonOmemoUser.start(server, 'bob', { resource: 'tablet' });
    try {
      assert.notEqual(tablet.deviceId, bob.deviceId);
      // The gateway learns of the new device from the +notify event Prosody pushes (the bot is
      // subscribed to bob and its caps ask for device lists); no refresh is forced here.
      await waitUntil(async () => {
        const d = await gw.gateway.omemo!.contactDevices(bot, 'bob@example.org');
        return d.some((x) => x.device_id === tablet.deviceId && x.active);
      }, 10000, 'the device list event');
      await post(gw, { to: 'bob@example.org', body: 'for both devices' });
      await bob.waitForMessage((m) => m.body === 'for both devices', 15000, 'phone');
      await tablet.waitForMessage((m) => m.body === 'for both devices', 15000, 'tablet');
      // Now that a session exists, the admin API lists the new device with its trust (BTBV).
      const d = (await (await fetch(`${gw.url}/v1/contacts/${encodeURIComponent('bob@example.org')}/devices`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as {
        devices: Array<{ device_id: number; trust: string; fingerprint: string }>;
      };
      const t = d.devices.find((x) => x.device_id === tablet.deviceId)!;
      assert.equal(t.trust, 'trusted');
      assert.equal(t.fingerprint, tablet.fingerprint);
    } finally {
      await tablet.stop();
    }
  });

  test('the `fingerprints` command lists the bots a user is subscribed to, matching what the user sees', async () => {
    await bob.sendPlain(gw.domain, 'fingerprints');
    const reply = await bob.waitForMessage((m) => m.from === gw.domain && /OMEMO device/.test(m.body ?? ''), 10000, 'fingerprints reply');
    assert.equal(reply.encrypted, false);
    const [dev] = await bob.devices(bot);
    assert.match(reply.body!, new RegExp(bot.replace(/[.]/g, '\\.')));
    const grouped = dev!.fingerprint.replace(/(.{8})(?!$)/g, '$1 ');
    assert.ok(reply.body!.includes(`OMEMO device ${dev!.device_id}: ${grouped}`), reply.body!);
    assert.match(reply.body!, /OpenPGP \(XEP-0027\): [0-9A-F]{40}/);
  });

  test('corrupted messages are rejected without harm, a replay is not delivered twice', async () => {
    const before = hook.messages().length;
    await bob.sendCorrupted(bot, 'corrupted payload', 'payload', { id: 'bad-payload' });
    await bob.sendCorrupted(bot, 'corrupted key', 'key', { id: 'bad-key' });
    // The sender learns that these failed: an error reply to each, with a reason.
    for (const id of ['bad-payload', 'bad-key']) {
      const e = await bob.waitForEvent((x) => x.event === 'message_error' && x.id === id, 10000, `error reply to ${id}`);
      assert.equal(e.condition, 'not-acceptable');
    }
    await bob.send(bot, 'replay me');
    await bob.replayLast(bot, { id: 'replayed' });
    await bob.send(bot, 'still fine');
    await waitUntil(() => hook.messages().some((m) => m.body === 'still fine'), 15000, 'the session works after the bad messages');
    const later = hook.messages().slice(before).map((m) => m.body);
    assert.deepEqual(later, ['replay me', 'still fine']);
    assert.ok(!bob.events.some((e) => e.event === 'message_error' && e.id === 'replayed'), 'a replay is dropped quietly');
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /gateway_decrypt_failures_total\{protocol="omemo",reason="(bad-mac|duplicate|malformed)"\} \d+/);
    assert.match(metrics, /gateway_decrypt_failures_total\{protocol="omemo",reason="duplicate"\} [1-9]/);
  });
});
