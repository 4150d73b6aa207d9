// Bots in group chats whose occupants speak different OMEMO versions (issue 14): Prosody's mod_muc,
// a members-only non-anonymous room with a legacy-only occupant (python-oldmemo), an OMEMO 2-only one
// (python-twomemo) and one speaking both. A bot message reaches every device once, in the newest
// version it lists (one groupchat stanza per version, the OMEMO 2 envelope addressed to the room);
// OMEMO 2 groupchat messages from occupants reach the webhook; the bot follows occupants' device
// lists while they are in the room (a new device gets a key for the next message without waiting for
// the cache to expire) and stops when they leave.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { PythonOmemoUser, type ReceivedMessage } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';

const TOKEN = 'alerts-bot-token-0003';
const T = 30000; // python-omemo on a loaded machine

describe('bots in group chats with OMEMO 2 and legacy OMEMO occupants on Prosody MUC', () => {
  let server: Prosody;
  let hook: WebhookReceiver;
  let gw: TestGateway;
  /** Legacy OMEMO only. */
  let alice: PythonOmemoUser;
  /** OMEMO 2 only. */
  let erin: PythonOmemoUser;
  /** Both versions, one device in both device lists. */
  let frank: PythonOmemoUser;
  let tablet: PythonOmemoUser | undefined;
  let bot: string;
  let room: string;

  const post = async (body: Record<string, unknown>) => {
    let r: Response;
    for (let i = 0; ; i++) {
      r = await fetch(`${gw.url}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      // A loaded machine may make the gateway shed load (503 overloaded, Retry-After): a bot retries.
      if (r.status !== 503 || i >= 10) break;
      await new Promise((res) => setTimeout(res, 1000 * Number(r.headers.get('retry-after') ?? 1)));
    }
    assert.equal(r.status, 202, await r.clone().text());
    return ((await r.json()) as { id: string }).id;
  };
  const status = async (id: string) =>
    (await (await fetch(`${gw.url}/v1/messages/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { status: string; encryption: string; undelivered_to?: string[] };
  const view = async (): Promise<{ state: string; devices: number }> =>
    ((await (await fetch(`${gw.url}/v1/bots/alerts/rooms`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { rooms: Array<{ jid: string; state: string; devices: number }> }).rooms.find((r) => r.jid === room)!;
  const groupchats = () => hook.accepted.map((d) => d.payload).filter((p) => p.type === 'groupchat');
  const bodiesAt = (u: PythonOmemoUser, body: string) => u.messages.filter((m) => m.type === 'groupchat' && m.body === body);

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    bot = `alerts@${server.componentDomain}`;
    room = `mixed@${server.mucDomain}`;
    [alice, erin, frank] = await Promise.all([
      PythonOmemoUser.start(server, 'alice', { resource: 'py', staleSeconds: 0, backends: ['oldmemo'] }),
      PythonOmemoUser.start(server, 'erin', { resource: 'phone', staleSeconds: 0, backends: ['twomemo'] }),
      PythonOmemoUser.start(server, 'frank', { resource: 'py', staleSeconds: 0, backends: ['oldmemo', 'twomemo'] }),
    ]);
    await alice.mucJoin(room, 'alice');
    for (const jid of [bot, erin.jid, frank.jid]) await alice.mucAffiliation(room, jid, 'member');
    await erin.mucJoin(room, 'erin');
    await frank.mucJoin(room, 'frank');
    gw = await TestGateway.start(server, { bots: [{ localpart: 'alerts', token: TOKEN, webhook: { url: hook.url, secret: hook.secret }, rooms: [room] }] });
  });

  after(async () => {
    await Promise.all([alice, erin, frank, tablet].map((u) => u?.stop()));
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test('a bot message reaches every device once, in the newest OMEMO version it lists', async () => {
    await waitUntil(async () => (await view()).state === 'joined', T, 'the bot in the room');
    await waitUntil(() => gw.gateway.rooms.recipients('alerts', room).length === 3, T, 'three occupants');
    await waitUntil(async () => (await view()).devices === 3, T, 'their device lists read (a device in both lists counts once)');
    const body = 'deploy finished — ünïcode';
    const id = await post({ to: room, body });
    const [a, e, f] = await Promise.all([alice, erin, frank].map((u) => u.waitForMessage((m) => m.type === 'groupchat' && m.body === body, T, 'the bot message')));
    assert.equal(a!.namespace, 'oldmemo');
    assert.equal(e!.namespace, 'twomemo');
    assert.equal(f!.namespace, 'twomemo', 'a device in both lists gets OMEMO 2');
    for (const m of [a!, e!, f!]) {
      assert.equal(m.real_jid, bot);
      assert.equal(m.nick, 'alerts');
    }
    // The OMEMO 2 stanza has keys for erin and frank, the legacy one for alice only.
    assert.deepEqual(e!.rids, [erin.deviceId, frank.deviceId].sort((x, y) => x - y));
    assert.deepEqual(a!.rids, [alice.deviceId]);
    // frank sees the legacy stanza too, without a key for him: he reads the message once.
    await frank.waitForEvent((ev) => ev.event === 'decrypt_error' && ev.namespace === 'oldmemo' && ev.from === room, T, 'the legacy stanza at frank');
    assert.equal(bodiesAt(frank, body).length, 1);
    await waitUntil(async () => (await status(id)).status === 'sent', T, 'sent');
    const s = await status(id);
    assert.equal(s.encryption, 'omemo2');
    assert.deepEqual(s.undelivered_to, []);

    // A bot may ask for one version: legacy only reaches alice and frank, erin is undelivered.
    const legacyOnly = await post({ to: room, body: 'legacy only', encryption: 'omemo' });
    await frank.waitForMessage((m: ReceivedMessage) => m.body === 'legacy only' && m.namespace === 'oldmemo', T, 'legacy at frank');
    await alice.waitForMessage((m) => m.body === 'legacy only', T, 'legacy at alice');
    await waitUntil(async () => (await status(legacyOnly)).status === 'sent', T, 'sent');
    assert.deepEqual((await status(legacyOnly)).undelivered_to, [erin.jid]);
  });

  test('OMEMO 2 groupchat messages from occupants reach the webhook with room, nick and real JID, once', async () => {
    // python-omemo gives up on a recipient without a device list of its versions: erin skips alice.
    await erin.sendGroupchat(room, 'erin says hi over OMEMO 2', { skip: [alice.jid] });
    // frank (both versions) to alice (legacy) and the bot (OMEMO 2): one stanza each. (He skips erin:
    // python-omemo, asked for a legacy list erin's server refuses, finds no eligible device of hers.)
    const sent = await frank.sendGroupchat(room, 'frank in both versions', { skip: [erin.jid] });
    assert.deepEqual([...(sent.namespaces ?? [])].sort(), ['oldmemo', 'twomemo'], 'frank sends one stanza per version');
    await waitUntil(() => groupchats().some((p) => p.body === 'erin says hi over OMEMO 2') && groupchats().some((p) => p.body === 'frank in both versions'), T, 'both at the webhook');
    const m = groupchats().find((p) => p.body === 'erin says hi over OMEMO 2')!;
    assert.equal(m.room, room);
    assert.equal(m.nick, 'erin');
    assert.equal(m.from, erin.jid);
    assert.equal(m.to, bot);
    assert.equal(m.encryption, 'omemo2');
    assert.equal((m.sender as { device_id: number }).device_id, erin.deviceId);
    // alice reads frank's legacy stanza; the bot reads his OMEMO 2 one and nothing else of it.
    await alice.waitForMessage((x) => x.body === 'frank in both versions', T, 'frank at alice');
    const fr = groupchats().filter((p) => p.body === 'frank in both versions');
    assert.equal(fr.length, 1);
    assert.equal(fr[0]!.encryption, 'omemo2');
    assert.equal(fr[0]!.from, frank.jid);
  });

  test('a device an occupant adds while in the room gets a key for the next message; a leaver is no longer followed', async () => {
    assert.ok(gw.gateway.rooms.follows(bot, erin.jid), 'the bot follows erin\'s device lists');
    const before = (await view()).devices;
    // erin's second device publishes a device list with both; the bot hears it by its subscription
    // (the cached list would otherwise be trusted for 10 minutes).
    tablet = await PythonOmemoUser.start(server, 'erin', { resource: 'tablet', staleSeconds: 0, backends: ['twomemo'] });
    await waitUntil(async () => (await view()).devices === before + 1, T, 'the new device seen by +notify');
    await post({ to: room, body: 'for both of erin\'s devices' });
    const got = await erin.waitForMessage((m) => m.body === 'for both of erin\'s devices', T, 'erin reads it');
    assert.ok(got.rids!.includes(tablet.deviceId), `a key for the new device: ${JSON.stringify(got.rids)}`);

    await erin.mucLeave(room);
    await waitUntil(() => !gw.gateway.rooms.recipients('alerts', room).includes(erin.jid), T, 'erin gone');
    assert.equal(gw.gateway.rooms.follows(bot, erin.jid), false);
    assert.ok(gw.gateway.rooms.follows(bot, frank.jid));
  });
});
