// Bots in end-to-end encrypted group chats (issue 14): Prosody's mod_muc with members-only,
// non-anonymous rooms, python-omemo users (python-oldmemo on slixmpp) as occupants, the gateway's
// bots joining from config. Bot -> room read by every occupant; occupant -> webhook with room, nick
// and real JID; occupants leaving and joining change who gets a key; an occupant without OMEMO is
// listed in undelivered_to; kick, server restart and rejoin; a semi-anonymous room ends
// room_not_private; refusals a bot owner can act on (registration-required, room missing) are
// visible in GET /v1/bots/{localpart}/rooms; reflections, history and plaintext never reach the webhook.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { XmppUser, xml } from '../harness/xmpp-user.js';

const TOKEN = 'alerts-bot-token-0001';
const LOUD_TOKEN = 'loud-bot-token-00001';
const ADMIN = 'admin-token-for-tests-0001';
/** Generous: python-omemo on a loaded 2-core machine. */
const T = 30000;

interface RoomView {
  jid: string;
  state: string;
  occupants: number;
  devices: number;
  occupants_without_devices: number;
  joined_at: string | null;
  last_error: { code: string; message: string } | null;
}

describe('bots in OMEMO group chats on Prosody MUC with python-omemo occupants', () => {
  let server: Prosody;
  let hook: WebhookReceiver;
  let loudHook: WebhookReceiver;
  let gw: TestGateway;
  let alice: PythonOmemoUser;
  let bob: PythonOmemoUser;
  let carol: PythonOmemoUser;
  let bot: string;
  let loud: string;
  let ops: string;
  let semi: string;
  let closed: string;

  const post = async (body: Record<string, unknown>, token = TOKEN) =>
    fetch(`${gw.url}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const queue = async (to: string, body: string): Promise<string> => {
    let r = await post({ to, body });
    // A loaded machine may make the gateway shed load (503 overloaded, Retry-After): a bot retries.
    for (let i = 0; r.status === 503 && i < 10; i++) {
      await new Promise((res) => setTimeout(res, 1000 * Number(r.headers.get('retry-after') ?? 1)));
      r = await post({ to, body });
    }
    assert.equal(r.status, 202, await r.clone().text());
    return ((await r.json()) as { id: string }).id;
  };
  const status = async (id: string) =>
    (await (await fetch(`${gw.url}/v1/messages/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { status: string; encryption: string; undelivered_to?: string[]; error?: { code: string } };
  const rooms = async (localpart = 'alerts', token = TOKEN): Promise<RoomView[]> =>
    ((await (await fetch(`${gw.url}/v1/bots/${localpart}/rooms`, { headers: { authorization: `Bearer ${token}` } })).json()) as { rooms: RoomView[] }).rooms;
  const room = async (jid: string, localpart = 'alerts', token = TOKEN) => (await rooms(localpart, token)).find((r) => r.jid === jid)!;
  const groupchats = (h: WebhookReceiver) => h.accepted.map((d) => d.payload).filter((p) => p.type === 'groupchat');

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    loudHook = await WebhookReceiver.start();
    bot = `alerts@${server.componentDomain}`;
    loud = `loud@${server.componentDomain}`;
    ops = `ops@${server.mucDomain}`;
    semi = `semi@${server.mucDomain}`;
    closed = `closed@${server.mucDomain}`;
    [alice, bob, carol] = await Promise.all(['alice', 'bob', 'carol'].map((n) => PythonOmemoUser.start(server, n, { resource: 'py', staleSeconds: 0 })));

    // alice creates the rooms (the harness's MUC makes new rooms members-only and non-anonymous).
    await alice.mucJoin(ops, 'alice');
    for (const jid of [bot, loud, bob.jid, carol.jid, `dave@${server.domain}`]) await alice.mucAffiliation(ops, jid, 'member');
    await bob.mucJoin(ops, 'bob');
    await alice.waitForEvent((e) => e.event === 'muc_presence' && e.nick === 'bob' && e.available === true, T, 'alice sees bob join');
    // History the bots must never see: plaintext (the loud bot takes plaintext) and OMEMO for bob.
    await alice.command({ cmd: 'send_plain', to: ops, body: 'old plaintext from history', type: 'groupchat' });
    await alice.sendGroupchat(ops, 'old secret from history');
    await bob.waitForMessage((m) => m.body === 'old secret from history', T, 'history message at bob');

    await alice.mucJoin(semi, 'alice');
    await alice.mucConfig(semi, { 'muc#roomconfig_whois': 'moderators' });
    await alice.mucAffiliation(semi, bot, 'member');
    await alice.mucJoin(closed, 'alice'); // members-only; the bot is no member

    gw = await TestGateway.start(server, {
      bots: [
        { localpart: 'alerts', token: TOKEN, webhook: { url: hook.url, secret: hook.secret }, rooms: [ops, semi, closed, `missing@${server.mucDomain}`] },
        { localpart: 'loud', token: LOUD_TOKEN, webhook: { url: loudHook.url, secret: loudHook.secret }, allow_plaintext: true, rooms: [{ jid: ops, nick: 'loudbot' }] },
      ],
    });
  });

  after(async () => {
    await Promise.all([alice, bob, carol].map((u) => u?.stop()));
    await gw?.destroy();
    await hook?.stop();
    await loudHook?.stop();
    await server?.destroy();
  });

  test('the bots join at connect without history; refusals are visible with a reason an owner can act on', async () => {
    await waitUntil(async () => (await room(ops)).state === 'joined' && (await room(ops, 'loud', LOUD_TOKEN)).state === 'joined', T, 'both bots in ops');
    await waitUntil(async () => gw.gateway.rooms.recipients('alerts', ops).length === 3, T, 'alerts sees alice, bob and the loud bot');
    assert.deepEqual(gw.gateway.rooms.recipients('alerts', ops), [alice.jid, bob.jid, loud].sort());
    await waitUntil(async () => (await room(semi)).state === 'not_private', T, 'semi-anonymous room found not private');
    assert.equal((await room(semi)).last_error?.code, 'room_not_private');
    await waitUntil(async () => (await room(closed)).last_error?.code === 'registration_required', T, 'members-only room refuses the bot');
    assert.equal((await room(closed)).state, 'error');
    await waitUntil(async () => (await room(`missing@${server.mucDomain}`)).last_error?.code === 'room_missing', T, 'a room that does not exist');
    // The admin sees them too; another bot does not.
    const admin = await fetch(`${gw.url}/v1/bots/alerts/rooms`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(admin.status, 200);
    assert.equal((await fetch(`${gw.url}/v1/bots/alerts/rooms`, { headers: { authorization: `Bearer ${LOUD_TOKEN}` } })).status, 404);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /gateway_room_errors_total\{reason="registration_required"\} [1-9]/);
    assert.match(metrics, /gateway_rooms\{state="not_private"\} 1/);
  });

  test('a POST to the room is one groupchat message every occupant reads', async () => {
    const id = await queue(ops, 'disk 91% full on db1 — ünïcode');
    const [a, b] = await Promise.all([alice, bob].map((u) => u.waitForMessage((m) => m.body === 'disk 91% full on db1 — ünïcode', T, 'the bot message')));
    for (const m of [a!, b!]) {
      assert.equal(m.type, 'groupchat');
      assert.equal(m.nick, 'alerts');
      assert.equal(m.real_jid, bot);
      assert.equal(m.encrypted, true);
    }
    // One header: keys for alice's and bob's devices (and the loud bot's), one stanza for all.
    assert.ok(a!.rids!.includes(alice.deviceId) && a!.rids!.includes(bob.deviceId), JSON.stringify(a!.rids));
    await waitUntil(async () => (await status(id)).status === 'sent', T, 'sent');
    const s = await status(id);
    // alice and bob speak legacy OMEMO only and read the legacy stanza; the loud bot (a gateway JID,
    // both versions) gets the OMEMO 2 one: the status names the newest version sent.
    for (const m of [a!, b!]) assert.equal(m.namespace, 'oldmemo');
    assert.equal(s.encryption, 'omemo2');
    assert.deepEqual(s.undelivered_to, []);
    // The loud bot is an occupant too and reads it (OMEMO 2) from the alerts bot's real JID.
    await waitUntil(() => groupchats(loudHook).some((p) => p.body === 'disk 91% full on db1 — ünïcode'), T, 'the other bot reads it');
    const atLoud = groupchats(loudHook).filter((p) => p.body === 'disk 91% full on db1 — ünïcode');
    assert.deepEqual(atLoud.map((p) => [p.encryption, p.from]), [['omemo2', bot]], 'once, in OMEMO 2');
    const v = await room(ops);
    assert.equal(v.occupants, 3);
    assert.ok(v.devices >= 3, JSON.stringify(v));
  });

  test('an occupant\'s message reaches the webhook with room, nick and real JID; reflections, history and plaintext never do', async () => {
    await bob.sendGroupchat(ops, 'ack from bob');
    await waitUntil(() => groupchats(hook).some((p) => p.body === 'ack from bob'), T, 'bob at the webhook');
    const m = groupchats(hook).find((p) => p.body === 'ack from bob')!;
    assert.equal(m.room, ops);
    assert.equal(m.nick, 'bob');
    assert.equal(m.from, bob.jid);
    assert.equal(m.to, bot);
    assert.equal(m.encryption, 'omemo');
    assert.equal((m.sender as { device_id: number }).device_id, bob.deviceId);
    assert.equal((m.sender as { trust: string }).trust, 'trusted');
    assert.match(String(m.received_at), /^\d{4}-\d\d-\d\dT/);

    // Plaintext in the room: the loud bot (plaintext allowed) gets it, the alerts bot never does.
    await alice.command({ cmd: 'send_plain', to: ops, body: 'plain words', type: 'groupchat' });
    await waitUntil(() => groupchats(loudHook).some((p) => p.body === 'plain words'), T, 'plaintext at the loud bot');
    const plain = groupchats(loudHook).find((p) => p.body === 'plain words')!;
    assert.equal(plain.encryption, 'none');
    assert.equal(plain.from, alice.jid);
    // A later encrypted message shows the alerts bot had its chance at the plaintext.
    await alice.sendGroupchat(ops, 'after the plaintext');
    await waitUntil(() => groupchats(hook).some((p) => p.body === 'after the plaintext'), T, 'alice at the webhook');
    const bodies = groupchats(hook).map((p) => p.body);
    assert.ok(!bodies.includes('plain words'), 'plaintext never reaches a bot that does not allow it');
    assert.ok(!bodies.includes('disk 91% full on db1 — ünïcode'), 'the bot\'s own reflected message never reaches it');
    for (const h of [hook, loudHook]) {
      const all = groupchats(h).map((p) => p.body);
      assert.ok(!all.includes('old plaintext from history') && !all.includes('old secret from history'), `history reached a webhook: ${JSON.stringify(all)}`);
    }
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /gateway_room_messages_total\{direction="in",result="reflection"\} [1-9]/);
    assert.match(metrics, /gateway_room_messages_total\{direction="in",result="plaintext_refused"\} [1-9]/);
  });

  test('an occupant leaves and another joins: the leaver gets no key for the next message, the newcomer reads it', async () => {
    await bob.mucLeave(ops);
    await carol.mucJoin(ops, 'carol');
    await waitUntil(() => gw.gateway.rooms.recipients('alerts', ops).join() === [alice.jid, carol.jid, loud].sort().join(), T, 'bob out, carol in');
    await queue(ops, 'for the new crowd');
    const got = await carol.waitForMessage((m) => m.body === 'for the new crowd', T, 'carol reads it');
    assert.ok(got.rids!.includes(carol.deviceId), 'a key for the newcomer');
    assert.ok(!got.rids!.includes(bob.deviceId), 'no key for the leaver');
    await alice.waitForMessage((m) => m.body === 'for the new crowd', T, 'alice reads it');
  });

  test('an occupant without OMEMO is listed in undelivered_to; the others still get the message', async () => {
    const dave = await XmppUser.connect(server, 'dave');
    try {
      await dave.send(xml('presence', { to: `${ops}/dave` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
      await waitUntil(() => gw.gateway.rooms.recipients('alerts', ops).includes(dave.bare), T, 'dave in the room');
      // His device list is read when he joins (not when the message goes out): none.
      await waitUntil(async () => (await room(ops)).occupants_without_devices === 1, T, 'dave has no OMEMO device');
      const id = await queue(ops, 'dave cannot read this');
      await alice.waitForMessage((m) => m.body === 'dave cannot read this', T, 'alice reads it');
      await waitUntil(async () => (await status(id)).status === 'sent', T, 'sent');
      assert.deepEqual((await status(id)).undelivered_to, [dave.bare]);
    } finally {
      await dave.stop();
    }
  });

  test('kicked, the bot joins again and keeps working', async () => {
    const before = (await room(ops)).joined_at;
    await alice.mucKick(ops, 'alerts');
    await waitUntil(async () => {
      const r = await room(ops);
      return r.state === 'joined' && r.joined_at !== before && r.last_error?.code === 'kicked';
    }, T, 'rejoined after the kick');
    await waitUntil(() => gw.gateway.rooms.recipients('alerts', ops).includes(alice.jid), T, 'occupants known again');
    await queue(ops, 'back after the kick');
    await alice.waitForMessage((m) => m.body === 'back after the kick', T, 'message after the kick');
  });

  test('a semi-anonymous room is refused with 409 room_not_private', async () => {
    const r = await post({ to: semi, body: 'must not go out' });
    assert.equal(r.status, 409);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'room_not_private');
  });

  test('after a server restart the bot is back in the room', async () => {
    await server.restart();
    await gw.waitOnline(T);
    await waitUntil(async () => (await room(ops)).state === 'joined', T, 'rejoined after the restart');
    await alice.waitForEvent((e) => e.event === 'reconnected', T, 'alice reconnected');
    await alice.mucJoin(ops, 'alice');
    await waitUntil(() => gw.gateway.rooms.recipients('alerts', ops).includes(alice.jid), T, 'alice back in the room');
    await queue(ops, 'after the restart');
    await alice.waitForMessage((m) => m.body === 'after the restart', T, 'message after the restart');
  });
});
