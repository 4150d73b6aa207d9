// OMEMO 2 (urn:xmpp:omemo:2) against an independent implementation: Debian's python-omemo with
// python-twomemo on slixmpp (test/interop/omemo_user.py --backends twomemo), on a real Prosody.
// A bot and an OMEMO 2 user both ways (key exchange first, 20 messages each, a gateway restart, 20
// more without a new key exchange); refusals (corrupted payload and key, replay, SCE <to> naming
// someone else); a device speaking both versions gets every message once; an OMEMO 2 user and a
// legacy (python-oldmemo) user through proxies, both ways.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';

const BOT_TOKEN = 'alerts-bot-token-0002';

async function post(gw: TestGateway, body: Record<string, unknown>): Promise<string> {
  const r = await fetch(`${gw.url}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${BOT_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(r.status, 202, await r.clone().text());
  return ((await r.json()) as { id: string }).id;
}

describe('OMEMO 2: python-twomemo users, a bot and proxies through Prosody and the gateway', () => {
  let server: Prosody;
  let hook: WebhookReceiver;
  let gw: TestGateway;
  let dave: PythonOmemoUser;
  let bot: string;
  const botOpts = () => ({ bots: [{ localpart: 'alerts', token: BOT_TOKEN, webhook: { url: hook.url, secret: hook.secret } }] });
  const fromDave = () => hook.messages().filter((m) => m.from === 'dave@example.org');

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    gw = await TestGateway.start(server, botOpts());
    bot = `alerts@${gw.domain}`;
    dave = await PythonOmemoUser.start(server, 'dave', { resource: 'kaidan', backends: ['twomemo'] });
  });

  after(async () => {
    await dave?.stop();
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test('the bot publishes one device in both lists with one identity; /v1/identities shows omemo2', async () => {
    const devices = await dave.refresh(bot);
    assert.equal(devices.length, 1, 'python-twomemo reads the OMEMO 2 device list and bundle');
    const ident = (await (await fetch(`${gw.url}/v1/identities/${encodeURIComponent(bot)}`, { headers: { authorization: `Bearer ${BOT_TOKEN}` } })).json()) as {
      omemo: Array<{ device_id: number; fingerprint: string }>;
      omemo2: Array<{ device_id: number; fingerprint: string }>;
    };
    assert.deepEqual(ident.omemo2.map((d) => d.device_id), [devices[0]!.device_id]);
    assert.deepEqual(ident.omemo.map((d) => d.device_id), [devices[0]!.device_id], 'the same device id for legacy OMEMO');
    assert.equal((devices[0] as unknown as { fingerprint_ed25519: string }).fingerprint_ed25519, ident.omemo2[0]!.fingerprint);
    assert.equal(devices[0]!.fingerprint, ident.omemo[0]!.fingerprint, 'one identity key: its Curve25519 form is the legacy fingerprint');
  });

  test('key exchange first, then 20 messages each way', async () => {
    await dave.subscribe(bot);
    const first = await dave.send(bot, 'hello bot over OMEMO 2 ✓', { receipt: true });
    assert.deepEqual(first.namespaces, ['twomemo']);
    assert.equal(first.prekey_rids?.length, 1, 'the first message is a key exchange');
    await waitUntil(() => fromDave().length === 1, 15000, 'first message at the webhook');
    const m0 = fromDave()[0]!;
    assert.equal(m0.body, 'hello bot over OMEMO 2 ✓');
    assert.equal(m0.encryption, 'omemo2');
    assert.equal((m0.sender as { device_id: number }).device_id, dave.deviceId);
    assert.equal((m0.sender as { trust: string }).trust, 'trusted');
    await dave.waitForEvent((e) => e.event === 'receipt' && e.id === first.id, 10000, 'receipt from the bot');
    // The gateway completes the key exchange with an empty message; python then stops sending kex.
    await dave.waitForMessage((m) => m.from === bot && m.body === null, 10000, 'empty message completing the key exchange');
    for (let i = 0; i < 20; i++) {
      const s = await dave.send(bot, `to bot #${i}\nline two`);
      assert.deepEqual(s.prekey_rids ?? [], [], `message ${i}: no key exchange once confirmed`);
    }
    for (let i = 0; i < 20; i++) await post(gw, { to: 'dave@example.org', body: `to dave #${i} — ünïcode` });
    await waitUntil(() => fromDave().length === 21, 20000, '20 more at the webhook');
    assert.deepEqual(fromDave().slice(1).map((m) => m.body), Array.from({ length: 20 }, (_, i) => `to bot #${i}\nline two`));
    for (let i = 0; i < 20; i++) await dave.waitForMessage((m) => m.body === `to dave #${i} — ünïcode`, 15000, `bot message #${i}`);
    const got = dave.messages.filter((m) => m.from === bot && m.body?.startsWith('to dave #'));
    assert.deepEqual(got.map((m) => m.body), Array.from({ length: 20 }, (_, i) => `to dave #${i} — ünïcode`));
    assert.ok(got.every((m) => m.namespace === 'twomemo' && m.encrypted && !m.kex));
  });

  test('the `fingerprints` command lists the OMEMO 2 device with the key the user sees', async () => {
    await dave.sendPlain(gw.domain, 'fingerprints');
    const reply = await dave.waitForMessage((m) => m.from === gw.domain && /OMEMO 2 device/.test(m.body ?? ''), 10000, 'fingerprints reply');
    const [dev] = await dave.devices(bot);
    const grouped = (dev as unknown as { fingerprint_ed25519: string }).fingerprint_ed25519.replace(/(.{8})(?!$)/g, '$1 ');
    assert.ok(reply.body!.includes(`OMEMO 2 device ${dev!.device_id}: ${grouped}`), reply.body!);
    assert.ok(reply.body!.includes(`OMEMO device ${dev!.device_id}: `), 'legacy OMEMO listed too, same device id');
  });

  test('a gateway restart keeps the sessions: 20 more each way, no new key exchange', async () => {
    await gw.stop();
    gw = await TestGateway.start(server, { ...botOpts(), dir: gw.dir });
    const before = fromDave().length;
    for (let i = 0; i < 20; i++) {
      const s = await dave.send(bot, `after restart #${i}`);
      assert.deepEqual(s.prekey_rids ?? [], []);
    }
    for (let i = 0; i < 20; i++) await post(gw, { to: 'dave@example.org', body: `restarted #${i}` });
    await waitUntil(() => fromDave().length === before + 20, 20000, '20 after the restart');
    assert.deepEqual(fromDave().slice(before).map((m) => m.body), Array.from({ length: 20 }, (_, i) => `after restart #${i}`));
    for (let i = 0; i < 20; i++) {
      const m = await dave.waitForMessage((x) => x.body === `restarted #${i}`, 15000, `restarted #${i}`);
      assert.equal(m.kex, false, 'no key exchange from the restarted gateway');
    }
  });

  test('corrupted, replayed and wrongly addressed messages are refused, none delivered', async () => {
    const before = fromDave().length;
    await dave.sendCorrupted(bot, 'corrupted payload', 'payload', { id: 'bad2-payload' });
    await dave.sendCorrupted(bot, 'corrupted key', 'key', { id: 'bad2-key' });
    await dave.send(bot, 'for someone else', { id: 'bad2-to', sceTo: 'mallory@example.org' });
    for (const id of ['bad2-payload', 'bad2-key', 'bad2-to']) {
      const e = await dave.waitForEvent((x) => x.event === 'message_error' && x.id === id, 10000, `error reply to ${id}`);
      assert.equal(e.condition, 'not-acceptable');
    }
    await dave.send(bot, 'replay me 2');
    await dave.replayLast(bot, { id: 'replayed2' });
    await dave.send(bot, 'still fine 2');
    await waitUntil(() => fromDave().some((m) => m.body === 'still fine 2'), 15000, 'the session works after the bad messages');
    assert.deepEqual(fromDave().slice(before).map((m) => m.body), ['replay me 2', 'still fine 2']);
    assert.ok(!dave.events.some((e) => e.event === 'message_error' && e.id === 'replayed2'), 'a replay is dropped quietly');
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /gateway_decrypt_failures_total\{protocol="omemo2",reason="bad-mac"\} [1-9]/);
    assert.match(metrics, /gateway_decrypt_failures_total\{protocol="omemo2",reason="duplicate"\} [1-9]/);
    assert.match(metrics, /gateway_decrypt_failures_total\{protocol="omemo2",reason="malformed"\} [1-9]/);
  });

  test('a device with both backends gets every message exactly once, in OMEMO 2, and sends once', async () => {
    const erin = await PythonOmemoUser.start(server, 'erin', { resource: 'both', backends: ['oldmemo', 'twomemo'], label: 'erin desktop' });
    try {
      // Before erin ever writes: the admin's refreshed view reads both device lists and bundles.
      const path = `${gw.url}/v1/contacts/${encodeURIComponent('erin@example.org')}/devices`;
      const admin = { headers: { authorization: 'Bearer admin-token-for-tests-0001' } };
      const before = (await (await fetch(path, admin)).json()) as { devices: unknown[] };
      assert.deepEqual(before.devices, [], 'nothing is known of erin yet');
      const r = await fetch(`${path}?refresh=true`, admin);
      assert.equal(r.status, 200, await r.clone().text());
      const view = (await r.json()) as { devices: Array<{ protocol: string; device_id: number; fingerprint: string; trust: string }>; refreshed: Array<{ protocol: string; ok: boolean }>; read_as: string };
      assert.equal(view.read_as, bot, 'read as the first bot by default');
      assert.ok(view.refreshed.some((x) => x.protocol === 'omemo' && x.ok) && view.refreshed.some((x) => x.protocol === 'omemo2' && x.ok), JSON.stringify(view.refreshed));
      // Device labels: erin's (python-twomemo publishes it unsigned) shows as unverified; erin reads
      // the bot's label from its OMEMO 2 list (the list is valid to twomemo's strict schema).
      assert.deepEqual(view.devices.filter((d) => 'label' in d).map((d) => [d.protocol, (d as { label?: string }).label, (d as { label_verified?: boolean }).label_verified]), [['omemo2', 'erin desktop', false]]);
      const botDevices = await erin.refresh(bot);
      assert.deepEqual(botDevices.map((d) => d.label), ['bot (E2EE gateway)'], JSON.stringify(botDevices));
      const seen = view.devices.map((d) => [d.protocol, d.device_id, d.fingerprint]).sort();
      assert.deepEqual(seen, [['omemo', erin.deviceId, erin.fingerprint], ['omemo2', erin.deviceId, erin.fingerprintEd25519]].sort(), 'one device in both lists, each with its fingerprint');
      assert.equal((await fetch(`${path}?refresh=maybe`, admin)).status, 400);
      assert.equal((await fetch(`${path}?refresh=true&as=${encodeURIComponent(gw.domain)}`, admin)).status, 400);
      await erin.subscribe(bot);
      for (let i = 0; i < 10; i++) await post(gw, { to: 'erin@example.org', body: `to erin #${i}` });
      for (let i = 0; i < 10; i++) await erin.waitForMessage((m) => m.body === `to erin #${i}`, 15000, `to erin #${i}`);
      const s = await erin.send(bot, 'from erin');
      assert.deepEqual(s.namespaces, ['twomemo'], 'python-omemo sends one OMEMO 2 stanza to a device in both lists');
      await waitUntil(() => hook.messages().some((m) => m.body === 'from erin'), 15000, 'erin at the webhook');
      // Let anything late arrive, then count.
      await post(gw, { to: 'erin@example.org', body: 'last for erin' });
      await erin.waitForMessage((m) => m.body === 'last for erin', 15000, 'last for erin');
      const bodies = erin.messages.filter((m) => m.from === bot && m.body !== null).map((m) => m.body);
      assert.deepEqual(bodies, [...Array.from({ length: 10 }, (_, i) => `to erin #${i}`), 'last for erin'], 'each exactly once');
      assert.ok(erin.messages.filter((m) => m.from === bot).every((m) => m.namespace === 'twomemo'));
      assert.equal(hook.messages().filter((m) => m.body === 'from erin').length, 1);
    } finally {
      await erin.stop();
    }
  });

  test('OMEMO 2 <-> legacy OMEMO through proxies, both ways', async () => {
    const alice = await PythonOmemoUser.start(server, 'alice', { resource: 'conversations' });
    try {
      const proxyOfAlice = `alice\\40example.org@${gw.domain}`;
      const proxyOfDave = `dave\\40example.org@${gw.domain}`;
      for (let i = 0; i < 5; i++) await dave.send(proxyOfAlice, `dave -> alice #${i} ✓`);
      for (let i = 0; i < 5; i++) {
        const m = await alice.waitForMessage((x) => x.body === `dave -> alice #${i} ✓`, 20000, `bridged #${i}`);
        assert.equal(m.from, proxyOfDave);
        assert.equal(m.namespace, 'oldmemo');
      }
      for (let i = 0; i < 5; i++) await alice.send(proxyOfDave, `alice -> dave #${i}\nzwei`);
      for (let i = 0; i < 5; i++) {
        const m = await dave.waitForMessage((x) => x.body === `alice -> dave #${i}\nzwei`, 20000, `bridged back #${i}`);
        assert.equal(m.from, proxyOfAlice);
        assert.equal(m.namespace, 'twomemo');
      }
    } finally {
      await alice.stop();
    }
  });
});
