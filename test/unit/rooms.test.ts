// The room service without a server (XEP-0045 / XEP-0410): stanzas in through the router claim,
// stanzas out recorded. Joins ask for no history; a self-ping answered with an error means the
// bot is no longer joined and it joins again; a ping answered service-unavailable means it still is;
// delayed messages, reflections and hidden senders are dropped; error presences set last_error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { validateConfig } from '../../config.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { Addressing } from '../../component/addressing.js';
import { parseJid, bareOf } from '../../component/jid.js';
import { RemoteError } from '../../component/connection.js';
import { RoomService, type RoomMessage } from '../../bridges/rooms/room-service.js';
import { NS_MUC, NS_MUC_USER } from '../../bridges/rooms/muc.js';
import type { StanzaContext } from '../../component/router.js';
import type { GroupEngine, GroupOptions } from '../../bridges/engine.js';
import { NS_PUBSUB } from '../../bridges/rooms/device-subscriptions.js';

const ROOM = 'ops@conference.example.org';
const BOT_FULL = 'alerts@gw.example.org/gw';

/** An engine that records what the room service asks of it; devices per peer from `lists`. */
function fakeEngine(id: 'omemo2' | 'omemo', node: string, lists: Record<string, number[]>) {
  const watched: string[] = [];
  const groups: Array<{ peers: readonly string[]; only: Record<string, readonly number[]>; room?: string }> = [];
  const engine = {
    id,
    features: [],
    deviceListNode: node,
    recognizes: () => false,
    watchPeer: async (_l: string, peer: string) => void watched.push(peer),
    listedDevices: async (_l: string, peer: string) => lists[peer] ?? null,
    cachedDevices: (peer: string) => lists[peer] ?? null,
    encryptGroup: async (_l: string, peers: readonly string[], _body: string, o: GroupOptions = {}) => {
      groups.push({ peers, only: Object.fromEntries(o.only ?? []), room: o.room });
      return { children: [xml('encrypted', { xmlns: id })], undelivered: [] };
    },
  } as unknown as GroupEngine;
  return { engine, watched, groups };
}

function setup(opts: { pingAnswer?: () => Element | Error; engines?: GroupEngine[] } = {}) {
  const config = validateConfig({
    component: { domain: 'gw.example.org', secret: 'component-secret' },
    http: { admin_token: 'admin-token-0123456789' },
    keystore: { path: ':memory:', passphrase: 'passphrase-for-tests' },
    bots: [{ localpart: 'alerts', token: 'alerts-token-0123456789', rooms: [ROOM] }],
  });
  const sent: Element[] = [];
  const delivered: RoomMessage[] = [];
  const addressing = new Addressing('gw.example.org', ['alerts'], ['example.org']);
  const rooms = new RoomService({
    bots: config.bots,
    botJid: (l) => `${l}@gw.example.org`,
    resource: 'gw',
    send: async (el) => void sent.push(el),
    request: async (iq) => {
      sent.push(iq);
      const q = iq.getChild('query');
      if (q?.attrs.xmlns === 'http://jabber.org/protocol/disco#info') {
        return xml('iq', { type: 'result' }, xml('query', { xmlns: q.attrs.xmlns }, xml('feature', { var: 'muc_nonanonymous' }), xml('feature', { var: 'muc_membersonly' })));
      }
      const a = opts.pingAnswer?.() ?? xml('iq', { type: 'result' });
      if (a instanceof Error) throw a;
      return a;
    },
    engines: opts.engines ?? [],
    deliver: (_l, m) => void delivered.push(m),
    plaintextAllowed: () => true,
    metrics: new Metrics({ processMetrics: false }),
    log: createLogger('silent'),
    selfPingMs: 30,
  });
  const feed = async (el: Element) => {
    const from = parseJid(String(el.attrs.from));
    const to = parseJid(String(el.attrs.to ?? BOT_FULL));
    const ctx: StanzaContext = { stanza: el, from, fromBare: bareOf(from), to, address: addressing.classify(to) };
    const h = rooms.claim(ctx);
    assert.ok(h, 'the room service claims stanzas from its rooms');
    await h(ctx);
  };
  const presence = (nick: string, attrs: Record<string, string>, codes: number[] = [], type?: string) =>
    xml('presence', { from: `${ROOM}/${nick}`, to: BOT_FULL, ...(type ? { type } : {}) }, xml('x', { xmlns: NS_MUC_USER }, xml('item', { affiliation: 'member', role: 'participant', ...attrs }), ...codes.map((c) => xml('status', { code: String(c) }))));
  const joins = () => sent.filter((e) => e.name === 'presence' && e.getChild('x', NS_MUC));
  return { rooms, sent, delivered, feed, presence, joins };
}

const settle = (ms = 10) => new Promise((r) => setTimeout(r, ms));

test('a join asks for no history; the room is joined on our own presence with status 110 and 100', async () => {
  const t = setup();
  t.rooms.onOnline();
  try {
    const [join] = t.joins();
    assert.equal(join!.attrs.to, `${ROOM}/alerts`);
    assert.equal(join!.getChild('x', NS_MUC)!.getChild('history')!.attrs.maxstanzas, '0');
    await t.feed(t.presence('bob', { jid: 'bob@example.org/phone' }));
    await t.feed(t.presence('alerts', { jid: BOT_FULL }, [100, 110]));
    await settle();
    const v = t.rooms.views('alerts')[0]!;
    assert.equal(v.state, 'joined');
    assert.equal(v.members_only, true);
    assert.deepEqual(t.rooms.recipients('alerts', ROOM), ['bob@example.org']);
  } finally {
    t.rooms.onOffline();
  }
});

test('history (delayed), reflections and subjects never reach the bot; live plaintext does where allowed', async () => {
  const t = setup();
  t.rooms.onOnline();
  try {
    await t.feed(t.presence('bob', { jid: 'bob@example.org/phone' }));
    await t.feed(t.presence('alerts', { jid: BOT_FULL }, [100, 110]));
    const msg = (nick: string, body: string, extra: Element[] = []) => xml('message', { from: `${ROOM}/${nick}`, to: BOT_FULL, type: 'groupchat', id: body }, xml('body', {}, body), ...extra);
    await t.feed(msg('bob', 'old', [xml('delay', { xmlns: 'urn:xmpp:delay', stamp: '2020-01-01T00:00:00Z' })]));
    await t.feed(msg('alerts', 'mine'));
    await t.feed(msg('bob', 'live'));
    assert.deepEqual(t.delivered.map((m) => [m.body, m.nick, m.from, m.encryption]), [['live', 'bob', 'bob@example.org', 'none']]);
  } finally {
    t.rooms.onOffline();
  }
});

test('XEP-0410: a self-ping answered not-acceptable makes the bot join again; service-unavailable means still joined', async () => {
  let answer: () => Element | Error = () => new RemoteError(xml('iq', { type: 'error' }, xml('error', { type: 'cancel' }, xml('service-unavailable', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }))));
  const t = setup({ pingAnswer: () => answer() });
  t.rooms.onOnline();
  try {
    await t.feed(t.presence('alerts', { jid: BOT_FULL }, [100, 110]));
    const pings = () => t.sent.filter((e) => e.name === 'iq' && e.getChild('ping', 'urn:xmpp:ping')).length;
    const until = Date.now() + 5000;
    while (pings() < 2 && Date.now() < until) await settle(20);
    assert.ok(pings() >= 2, 'self-pings go out while joined');
    assert.equal(t.rooms.views('alerts')[0]!.state, 'joined', 'service-unavailable: the ping reached our occupant');
    assert.equal(t.joins().length, 1);
    assert.ok(t.sent.some((e) => e.name === 'iq' && e.attrs.to === `${ROOM}/alerts` && e.getChild('ping', 'urn:xmpp:ping')));
    answer = () => new RemoteError(xml('iq', { type: 'error' }, xml('error', { type: 'cancel' }, xml('not-acceptable', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }))));
    // The first rejoin is after about a second (backoff starts at 1 s).
    const deadline = Date.now() + 5000;
    while (t.joins().length < 2 && Date.now() < deadline) await settle(50);
    assert.equal(t.joins().length, 2, 'joined again');
    assert.equal(t.rooms.views('alerts')[0]!.last_error?.code, 'not_in_room');
  } finally {
    t.rooms.onOffline();
  }
});

test('refusals and removals set last_error with a code an owner can act on', async () => {
  const t = setup();
  t.rooms.onOnline();
  try {
    await t.feed(xml('presence', { from: `${ROOM}/alerts`, to: BOT_FULL, type: 'error' }, xml('error', { type: 'auth' }, xml('registration-required', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }))));
    let v = t.rooms.views('alerts')[0]!;
    assert.equal(v.state, 'error');
    assert.equal(v.last_error?.code, 'registration_required');
    await assert.rejects(t.rooms.send({ localpart: 'alerts', room: ROOM, body: 'x', id: 'm1', allowPlaintext: false }), (e: { code?: string }) => e.code === 'room_unavailable');
    t.rooms.onOffline();
    t.rooms.onOnline();
    await t.feed(t.presence('alerts', { jid: BOT_FULL }, [100, 110]));
    await t.feed(t.presence('alerts', { jid: BOT_FULL }, [110, 301], 'unavailable'));
    v = t.rooms.views('alerts')[0]!;
    assert.equal(v.last_error?.code, 'banned');
    // Not in the room: a message waits (retried), it does not fail.
    t.rooms.onOffline();
    await assert.rejects(t.rooms.send({ localpart: 'alerts', room: ROOM, body: 'x', id: 'm2', allowPlaintext: false }), (e: { code?: string }) => e.code === 'room_not_joined');
  } finally {
    t.rooms.onOffline();
  }
});

test('occupants\' device lists are read on join and followed (pubsub subscribe) until they leave; one stanza per version', async () => {
  const v2 = fakeEngine('omemo2', 'urn:xmpp:omemo:2:devices', { 'bob@example.org': [7], 'carol@example.org': [8] });
  const v1 = fakeEngine('omemo', 'eu.siacs.conversations.axolotl.devicelist', { 'bob@example.org': [7], 'dan@example.org': [9] });
  const t = setup({ engines: [v2.engine, v1.engine] });
  t.rooms.onOnline();
  try {
    for (const n of ['bob', 'carol', 'dan']) await t.feed(t.presence(n, { jid: `${n}@example.org/x` }));
    await t.feed(t.presence('alerts', { jid: BOT_FULL }, [100, 110]));
    await settle();
    assert.deepEqual(v2.watched.sort(), ['bob@example.org', 'carol@example.org', 'dan@example.org']);
    assert.deepEqual(v1.watched.sort(), v2.watched);
    const subs = (kind: string) =>
      t.sent
        .filter((e) => e.name === 'iq' && e.attrs.type === 'set' && e.getChild('pubsub', NS_PUBSUB)?.getChild(kind))
        .map((e) => {
          const c = e.getChild('pubsub', NS_PUBSUB)!.getChild(kind)!;
          return `${e.attrs.from} ${e.attrs.to} ${c.attrs.node} ${c.attrs.jid}`;
        })
        .sort();
    assert.deepEqual(subs('subscribe'), ['bob', 'carol', 'dan'].flatMap((n) => [`alerts@gw.example.org ${n}@example.org eu.siacs.conversations.axolotl.devicelist alerts@gw.example.org`, `alerts@gw.example.org ${n}@example.org urn:xmpp:omemo:2:devices alerts@gw.example.org`]));
    assert.ok(t.rooms.follows('alerts@gw.example.org', 'bob@example.org'));
    // bob's device 7 is in both lists: counted once.
    assert.equal(t.rooms.views('alerts')[0]!.devices, 3);

    const res = await t.rooms.send({ localpart: 'alerts', room: ROOM, body: 'hi', id: 'm1', allowPlaintext: false });
    assert.equal(res.encryption, 'omemo2');
    assert.deepEqual(v2.groups, [{ peers: ['bob@example.org', 'carol@example.org'], only: {}, room: ROOM }]);
    assert.deepEqual(v1.groups, [{ peers: ['dan@example.org'], only: {}, room: ROOM }], 'legacy: only what OMEMO 2 did not reach (bob\'s device 7 is keyed once)');
    const out = t.sent.filter((e) => e.name === 'message' && e.attrs.type === 'groupchat');
    assert.deepEqual(out.map((e) => [e.attrs.id, e.getChildElements()[0]!.attrs.xmlns]), [['m1', 'omemo2'], ['m1-2', 'omemo']]);
    // The reflection of the second stanza is the bot's own too.
    await t.feed(xml('message', { from: `${ROOM}/alerts-renamed`, to: BOT_FULL, type: 'groupchat', id: 'm1-2' }, xml('body', {}, 'x')));
    assert.equal(t.delivered.length, 0);

    await t.feed(t.presence('bob', { jid: 'bob@example.org/x' }, [], 'unavailable'));
    await settle();
    assert.deepEqual(subs('unsubscribe'), ['eu.siacs.conversations.axolotl.devicelist', 'urn:xmpp:omemo:2:devices'].map((node) => `alerts@gw.example.org bob@example.org ${node} alerts@gw.example.org`));
    assert.equal(t.rooms.follows('alerts@gw.example.org', 'bob@example.org'), false);
    assert.ok(t.rooms.follows('alerts@gw.example.org', 'carol@example.org'));
    // Banned from the room: nobody of it is followed any more.
    await t.feed(t.presence('alerts', { jid: BOT_FULL }, [110, 301], 'unavailable'));
    await settle();
    assert.equal(t.rooms.follows('alerts@gw.example.org', 'carol@example.org'), false);
    assert.equal(t.rooms.follows('alerts@gw.example.org', 'dan@example.org'), false);
  } finally {
    t.rooms.onOffline();
  }
});
