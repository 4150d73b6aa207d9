// Room messages to occupants of both OMEMO versions (bridges/rooms/group-encrypt.ts) with the real
// engines on the in-memory network: a device in both lists gets OMEMO 2 only, a legacy-only device
// or occupant gets the legacy stanza, nobody is keyed twice; the OMEMO 2 envelope names the room and
// is read as a groupchat message only (decryptFrom with the occupant's real JID); an occupant whose
// OMEMO 2 device cannot be reached still gets legacy OMEMO; one without any device is undelivered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { TrustStore } from '../../keystore/trust-store.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { createOmemoEngine, type OmemoEngine } from '../../bridges/omemo/engine.js';
import { NS_OMEMO } from '../../bridges/omemo/constants.js';
import { NODE_BUNDLES, NS_OMEMO2 } from '../../bridges/omemo2/constants.js';
import { parseEncrypted } from '../../bridges/omemo2/wire.js';
import { encryptForRoom } from '../../bridges/rooms/group-encrypt.js';
import { GatewayError } from '../../errors.js';
import { FakeNetwork, openTestKeystore, reparse } from './helpers/omemo-net.js';
import { makeDual } from './helpers/omemo2-net.js';

const ROOM = 'ops@conference.gw.example';
const log = createLogger('silent');

/** A groupchat message from the room as an occupant receives it. */
const fromRoom = (nick: string, to: string, children: Element[]) => reparse(xml('message', { from: `${ROOM}/${nick}`, to, type: 'groupchat', id: 'g1' }, ...children));
const legacyRids = (s: Element) => s.getChild('encrypted', NS_OMEMO)!.getChild('header')!.getChildren('key').map((k) => Number(k.attrs.rid)).sort((a, b) => a - b);
const omemo2Keys = (s: Element) => parseEncrypted(s.getChild('encrypted', NS_OMEMO2)!)!.keys;

function legacyOnly(net: FakeNetwork, name: string): OmemoEngine {
  const ks = openTestKeystore();
  return createOmemoEngine({
    store: createProtocolStore(ks, 'omemo'),
    trust: new TrustStore(ks, 'btbv'),
    contacts: new ContactStore(ks),
    keystore: ks,
    pubsub: net.port(name),
    metrics: new Metrics({ processMetrics: false }),
    log,
    now: Date.now,
    resource: 'x',
  });
}

async function room() {
  const net = new FakeNetwork();
  const bot = await makeDual(net, 'alerts@gw.example');
  const frank = await makeDual(net, 'frank@gw.example'); // both versions, one device in both lists
  const alice = legacyOnly(net, 'alice@gw.example');
  await alice.ensureIdentity('alice@gw.example');
  const engines = [bot.omemo2, bot.legacy];
  const send = (peers: string[], body: string) => encryptForRoom(engines, bot.jid, ROOM, peers, body, log);
  return { net, bot, frank, alice, aliceId: (await alice.devices('alice@gw.example'))[0]!.device_id, send };
}

test('each device gets the newest version it lists, in one stanza per version, never twice', async () => {
  const t = await room();
  const enc = await t.send(['frank@gw.example', 'alice@gw.example', t.bot.jid], 'deploy finished');
  assert.deepEqual(enc.stanzas.map((s) => s.encryption), ['omemo2', 'omemo'], 'newest first');
  assert.deepEqual(enc.undelivered, []);
  const s2 = fromRoom('alerts', 'frank@gw.example', enc.stanzas[0]!.children);
  const s1 = fromRoom('alerts', 'alice@gw.example', enc.stanzas[1]!.children);
  assert.deepEqual([...omemo2Keys(s2).keys()], ['frank@gw.example'], 'OMEMO 2 keys for frank only (not the bot itself)');
  assert.deepEqual(legacyRids(s1), [t.aliceId], 'legacy keys for alice only: frank\'s device is in both lists');

  const r = await t.frank.omemo2.decryptFrom(t.frank.jid, s2, t.bot.jid);
  assert.ok(r.ok && r.body === 'deploy finished', r.ok ? String(r.body) : r.reason);
  assert.equal(r.ok && r.sender.jid, t.bot.jid);
  const twice = await t.frank.legacy.decryptFrom(t.frank.jid, s1, t.bot.jid);
  assert.ok(!twice.ok && twice.reason === 'not-for-this-device', 'frank is not keyed in the legacy stanza');
  const a = await t.alice.decryptFrom('alice@gw.example', s1, t.bot.jid);
  assert.ok(a.ok && a.body === 'deploy finished');
});

test('the OMEMO 2 envelope is addressed to the room: read as a groupchat message only', async () => {
  const t = await room();
  const enc = await t.send(['frank@gw.example'], 'for the room');
  assert.deepEqual(enc.stanzas.map((s) => s.encryption), ['omemo2'], 'no legacy stanza when nobody needs it');
  // The payload taken for a one-to-one message from the bot: the envelope's <to> is the room.
  const direct = reparse(xml('message', { from: `${t.bot.jid}/gw`, to: t.frank.jid, type: 'chat' }, ...enc.stanzas[0]!.children));
  const r = await t.frank.omemo2.decrypt(t.frank.jid, direct);
  assert.ok(!r.ok && r.reason === 'malformed', r.ok ? String(r.body) : r.reason);
  // Passed off as someone else's in the room: the envelope's <from> is the bot.
  const next = await t.send(['frank@gw.example'], 'second');
  const other = await t.frank.omemo2.decryptFrom(t.frank.jid, fromRoom('mallory', t.frank.jid, next.stanzas[0]!.children), 'mallory@gw.example');
  assert.ok(!other.ok && other.reason === 'malformed', other.ok ? String(other.body) : other.reason);
  const third = await t.send(['frank@gw.example'], 'third');
  const ok = await t.frank.omemo2.decryptFrom(t.frank.jid, fromRoom('alerts', t.frank.jid, third.stanzas[0]!.children), t.bot.jid);
  assert.ok(ok.ok && ok.body === 'third', ok.ok ? String(ok.body) : ok.reason);
});

test('an occupant whose OMEMO 2 device cannot be reached gets legacy OMEMO; one without devices is undelivered', async () => {
  const t = await room();
  // frank's OMEMO 2 bundle disappears from his server: the device is still in his legacy list.
  t.net.intercept = (f) => (f.to === t.frank.jid && f.node === NODE_BUNDLES ? null : undefined);
  const enc = await t.send(['frank@gw.example', 'nobody@gw.example'], 'still reaches frank');
  assert.deepEqual(enc.stanzas.map((s) => s.encryption), ['omemo']);
  assert.deepEqual(enc.undelivered, ['nobody@gw.example']);
  const r = await t.frank.legacy.decryptFrom(t.frank.jid, fromRoom('alerts', t.frank.jid, enc.stanzas[0]!.children), t.bot.jid);
  assert.ok(r.ok && r.body === 'still reaches frank');
  await assert.rejects(t.send(['nobody@gw.example'], 'x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_encryption_available');
  await assert.rejects(t.send([], 'x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_encryption_available');
});
