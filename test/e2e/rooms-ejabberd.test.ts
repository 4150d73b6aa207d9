// Bots in group chats on ejabberd's mod_muc (Debian's 23.01), set up as the README says
// (default_room_options anonymous: false, members_only: true; the bot a member): a legacy OMEMO
// occupant (python-oldmemo) and an OMEMO 2 one (python-twomemo). The bot joins and sees the room as
// private, a message reaches both in their versions, an occupant's OMEMO 2 message reaches the
// webhook. (ejabberd accepts the bot's subscriptions to occupants' device lists but delivers PEP
// events only to subscribers it sees present, never to a component: see the README.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Ejabberd } from '../harness/ejabberd.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';

const TOKEN = 'alerts-bot-token-0004';
const T = 30000; // python-omemo and ejabberd on a loaded machine

describe('bots in OMEMO group chats on ejabberd mod_muc', () => {
  let server: Ejabberd;
  let hook: WebhookReceiver;
  let gw: TestGateway;
  let alice: PythonOmemoUser;
  let erin: PythonOmemoUser;
  let bot: string;
  let room: string;

  const api = async (path: string, body?: Record<string, unknown>) => {
    const r = await fetch(`${gw.url}${path}`, { method: body ? 'POST' : 'GET', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
    return { status: r.status, json: (await r.json()) as Record<string, unknown> };
  };
  const view = async () => ((await api('/v1/bots/alerts/rooms')).json.rooms as Array<{ jid: string; state: string; devices: number; members_only: boolean | null; non_anonymous: boolean | null }>).find((r) => r.jid === room)!;

  before(async () => {
    server = await Ejabberd.start();
    hook = await WebhookReceiver.start();
    bot = `alerts@${server.componentDomain}`;
    room = `ops@${server.mucDomain}`;
    [alice, erin] = await Promise.all([
      PythonOmemoUser.start(server, 'alice', { resource: 'py', staleSeconds: 0, backends: ['oldmemo'] }),
      PythonOmemoUser.start(server, 'erin', { resource: 'phone', staleSeconds: 0, backends: ['twomemo'] }),
    ]);
    await alice.mucJoin(room, 'alice');
    for (const jid of [bot, erin.jid]) await alice.mucAffiliation(room, jid, 'member');
    await erin.mucJoin(room, 'erin');
    gw = await TestGateway.start(server, { bots: [{ localpart: 'alerts', token: TOKEN, webhook: { url: hook.url, secret: hook.secret }, rooms: [room] }] });
  });

  after(async () => {
    await Promise.all([alice, erin].map((u) => u?.stop()));
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test('the bot joins a members-only non-anonymous room; its message reaches each occupant in its OMEMO version', async () => {
    await waitUntil(async () => (await view()).state === 'joined', T, 'the bot in the room');
    await waitUntil(async () => (await view()).members_only === true && (await view()).non_anonymous === true, T, 'room features read');
    await waitUntil(async () => gw.gateway.rooms.recipients('alerts', room).join() === [alice.jid, erin.jid].sort().join(), T, 'both occupants with real JIDs');
    await waitUntil(async () => (await view()).devices === 2, T, 'their device lists read');
    const r = await api('/v1/messages', { to: room, body: 'hello from ejabberd' });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    const [a, e] = await Promise.all([alice, erin].map((u) => u.waitForMessage((m) => m.type === 'groupchat' && m.body === 'hello from ejabberd', T, 'the bot message')));
    assert.equal(a!.namespace, 'oldmemo');
    assert.equal(e!.namespace, 'twomemo');
    assert.equal(e!.real_jid, bot);
  });

  test('an occupant\'s OMEMO 2 message reaches the webhook with room, nick and real JID', async () => {
    await erin.sendGroupchat(room, 'erin on ejabberd', { skip: [alice.jid] });
    await waitUntil(() => hook.accepted.some((d) => d.payload.body === 'erin on ejabberd'), T, 'erin at the webhook');
    const m = hook.accepted.find((d) => d.payload.body === 'erin on ejabberd')!.payload;
    assert.deepEqual([m.type, m.room, m.nick, m.from, m.encryption], ['groupchat', room, 'erin', erin.jid, 'omemo2']);
  });
});
