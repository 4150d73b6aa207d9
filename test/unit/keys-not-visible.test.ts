// A contact's node that exists but is readable to approved contacts only (access model presence,
// roster, ...): PubsubPort.fetch rejects with keys_not_visible for the hosted JID that asked. The
// device cache is per contact, so such an answer is never cached for everyone: another hosted JID
// may be approved. The outbound choice tells the sender this, not "no encryption".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { Keystore } from '../../keystore/keystore.js';
import { TrustStore } from '../../keystore/trust-store.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { DeviceLists } from '../../bridges/omemo/device-cache.js';
import { DEFAULT_OPTIONS, NODE_DEVICELIST, NS_OMEMO } from '../../bridges/omemo/constants.js';
import { EngineRegistry } from '../../bridges/registry.js';
import { OutboundSender } from '../../bridges/outbound.js';
import { OutboxSender } from '../../bridges/outbox-sender.js';
import { OutboxStore } from '../../keystore/outbox-store.js';
import { waitUntil } from '../harness/gateway.js';
import type { ProtocolId, PubsubPort } from '../../bridges/engine.js';
import { stubEngine } from './helpers/stub-engine.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { GatewayError, KeysNotVisibleError } from '../../errors.js';
import { RemoteError } from '../../component/connection.js';

const ks = () => Keystore.open(':memory:', 'passphrase-for-tests', { kdf: { N: 1024, r: 8, p: 1 } });
const hidden = () => new KeysNotVisibleError(true, 'carol@x lets only approved contacts read it');
/** Prosody's plain forbidden: no node, or a closed one. */
const unsure = () => new KeysNotVisibleError(false, 'carol@x does not let us read it');

/** carol@x's legacy device list (device 7) and bundle, readable by approved@gw only. */
function pubsub(): PubsubPort & { reads: string[]; uncertain: boolean } {
  const reads: string[] = [];
  return {
    reads,
    uncertain: false,
    publish: () => undefined,
    retract: () => undefined,
    localItems: () => [],
    async fetch(from, _to, node): Promise<Element[] | null> {
      reads.push(`${from} ${node === NODE_DEVICELIST ? 'list' : 'bundle'}`);
      if (from !== 'approved@gw') throw this.uncertain ? unsure() : hidden();
      if (node !== NODE_DEVICELIST) return null;
      return [xml('item', { id: 'current' }, xml('list', { xmlns: NS_OMEMO }, xml('device', { id: '7' })))];
    },
  };
}

test('an unreadable device list is said as such to the JID that asked, and not cached for the others', async () => {
  const p = pubsub();
  const lists = new DeviceLists(p, new TrustStore(ks(), 'btbv'), createLogger('silent'), () => 1000, DEFAULT_OPTIONS);
  await assert.rejects(lists.get('stranger@gw', 'carol@x'), (e: unknown) => e instanceof GatewayError && e.code === 'keys_not_visible');
  await assert.rejects(lists.get('stranger@gw', 'carol@x'), (e: unknown) => e instanceof GatewayError && e.code === 'keys_not_visible');
  assert.deepEqual(p.reads, ['stranger@gw list', 'stranger@gw list'], 'asked again: not answered from a cache');
  assert.deepEqual(await lists.get('approved@gw', 'carol@x'), [7]);
  // Once read by an approved JID the list is known, and serves every hosted JID from the cache.
  assert.deepEqual(await lists.get('stranger@gw', 'carol@x'), [7]);
  assert.equal(p.reads.length, 3);
  // A forced re-read that is refused says so even with a cached list.
  await assert.rejects(lists.get('stranger@gw', 'carol@x', true), (e: unknown) => e instanceof GatewayError && e.code === 'keys_not_visible');
});

test('a refusal that may mean "none" (plain forbidden) is kept as no list: told again to the JID that asked, none to others', async () => {
  const p = pubsub();
  p.uncertain = true;
  const lists = new DeviceLists(p, new TrustStore(ks(), 'btbv'), createLogger('silent'), () => 1000, DEFAULT_OPTIONS);
  await assert.rejects(lists.get('stranger@gw', 'carol@x'), (e: unknown) => e instanceof KeysNotVisibleError && !e.certain);
  assert.equal(lists.cached('carol@x'), null, 'cached as no list (a room counts her as without devices)');
  await assert.rejects(lists.get('stranger@gw', 'carol@x'), (e: unknown) => e instanceof KeysNotVisibleError, 'the same JID is told again, from the cache');
  assert.equal(await lists.get('other@gw', 'carol@x'), null, 'another JID sees no list, as before');
  assert.equal(p.reads.length, 1);
  // A pushed list (+notify after the approval) replaces it.
  lists.set('carol@x', [7]);
  assert.deepEqual(await lists.get('stranger@gw', 'carol@x'), [7]);
});

test('an unreadable bundle is not remembered as a failure for the other hosted JIDs; a listed device\'s is closed for certain', async () => {
  const p = pubsub();
  p.uncertain = true;
  const lists = new DeviceLists(p, new TrustStore(ks(), 'btbv'), createLogger('silent'), () => 1000, DEFAULT_OPTIONS);
  await assert.rejects(lists.bundle('stranger@gw', 'carol@x', 7), (e: unknown) => e instanceof KeysNotVisibleError && e.certain && e.code === 'keys_not_visible');
  assert.equal(await lists.bundle('approved@gw', 'carol@x', 7), null, 'read again for the approved JID (its answer: no bundle)');
  assert.deepEqual(p.reads, ['stranger@gw bundle', 'approved@gw bundle']);
});

test('the sender learns keys_not_visible, not the "nothing fits" of a later protocol', async () => {
  const engine = (id: ProtocolId, error: () => GatewayError) =>
    stubEngine(id, {
      encrypt: async () => {
        throw error();
      },
      reachability: async () => {
        throw error();
      },
    });
  const engines = new EngineRegistry([engine('omemo2', hidden), engine('pgp', () => new GatewayError('no_encryption_available', 'no key registered'))]);
  const make = (preference: ProtocolId[]) =>
    new OutboundSender({ engines, contacts: new ContactStore(ks()), preference, send: async () => undefined, resource: 'gw', metrics: new Metrics({ processMetrics: false }), log: createLogger('silent') });
  for (const order of [['omemo2', 'pgp'], ['pgp', 'omemo2']] as ProtocolId[][]) {
    await assert.rejects(make(order).choose('stranger@gw', 'carol@x'), (e: unknown) => e instanceof GatewayError && e.code === 'keys_not_visible', order.join(','));
  }
  // A plain forbidden (no keys, or closed ones): "nothing fits", saying the server would not tell,
  // as a KeysNotVisibleError so that the outbox asks for approval.
  const unsureEngines = new EngineRegistry([engine('omemo', unsure), engine('pgp', () => new GatewayError('no_encryption_available', 'no key registered'))]);
  const out = new OutboundSender({ engines: unsureEngines, contacts: new ContactStore(ks()), preference: ['omemo', 'pgp'], send: async () => undefined, resource: 'gw', metrics: new Metrics({ processMetrics: false }), log: createLogger('silent') });
  await assert.rejects(out.choose('stranger@gw', 'carol@x'), (e: unknown) => e instanceof KeysNotVisibleError && !e.certain && e.code === 'no_encryption_available' && /no encryption this gateway can use.*does not let us read it/.test(e.message));
});

test('an error answer\'s condition is its stanzas-namespace child, wherever the application condition is', () => {
  const ejabberdStyle = xml('iq', { type: 'error' }, xml('error', { type: 'auth' },
    xml('presence-subscription-required', { xmlns: 'http://jabber.org/protocol/pubsub#errors' }),
    xml('not-authorized', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' })));
  assert.equal(new RemoteError(ejabberdStyle).remoteCondition, 'not-authorized');
  const prosodyStyle = xml('iq', { type: 'error' }, xml('error', { type: 'cancel' },
    xml('item-not-found', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }),
    xml('text', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }, 'Node not found')));
  assert.equal(new RemoteError(prosodyStyle).remoteCondition, 'item-not-found');
  assert.equal(new RemoteError(xml('iq', { type: 'error' }, xml('error', {}))).remoteCondition, 'undefined-condition');
});

/** A bot's outbox towards carol@x, whose keys alerts@gw may read once `state.approved` is set. */
function botOutbox(state: { approved: boolean; asked: string[] }, approvalWaitMs?: number) {
  const store = ks();
  const sent: Element[] = [];
  const engines = new EngineRegistry([
    stubEngine('omemo', {
      encrypt: async (_l, _peer, body) => {
        if (!state.approved) throw hidden();
        return { children: [xml('body', {}, `enc:${body}`)] };
      },
      reachability: async () => {
        if (!state.approved) throw hidden();
        return 'ready';
      },
    }),
  ]);
  const log = createLogger('silent');
  const metrics = new Metrics({ processMetrics: false });
  const outbound = new OutboundSender({ engines, contacts: new ContactStore(store), preference: ['omemo'], send: async (el) => void sent.push(el), resource: 'gw', metrics, log });
  const outbox = new OutboxStore(store);
  const sender = new OutboxSender({
    store: outbox,
    outbound,
    bots: [{ localpart: 'alerts', token: 't', webhook: null, rateLimit: { perSecond: 10, burst: 10 }, allowPlaintext: false }],
    botJid: (l) => `${l}@gw`,
    isOnline: () => true,
    allowPlaintext: false,
    metrics,
    log,
    onStatus: () => undefined,
    askToFollow: async (from, to) => {
      state.asked.push(`${from} -> ${to}`);
      return state.asked.length === 1 ? 'asked' : 'pending';
    },
    ...(approvalWaitMs !== undefined && { approvalWaitMs }),
  });
  sender.start();
  const { message } = outbox.enqueue({ bot: 'alerts', to: 'carol@x', body: 'for approved eyes', encryption: null, idempotencyKey: null, ttlMs: 86400_000 });
  sender.kick();
  return { outbox, sender, sent, id: message.id, close: async () => { await sender.stop(); store.close(); } };
}

test('a bot message waits for the approval it asked for, then goes out encrypted', async (t) => {
  const state = { approved: false, asked: [] as string[] };
  const g = botOutbox(state);
  t.after(g.close);
  await waitUntil(() => g.outbox.get(g.id)?.error?.code === 'keys_not_visible', 5000, 'keys_not_visible on the queued message');
  assert.equal(g.outbox.get(g.id)?.status, 'queued');
  assert.match(g.outbox.get(g.id)!.error!.message, /alerts@gw has sent carol@x a request for approval .*; the message waits for the approval/);
  assert.deepEqual(state.asked, ['alerts@gw -> carol@x']);
  state.approved = true;
  await waitUntil(() => g.outbox.get(g.id)?.status === 'sent', 8000, 'sent after the approval');
  assert.deepEqual(g.sent.map((s) => s.getChildText('body')), ['enc:for approved eyes']);
});

test('the approval wakes a waiting message at once, not at its next retry', async (t) => {
  const state = { approved: false, asked: [] as string[] };
  const g = botOutbox(state);
  t.after(g.close);
  // Three tries: the next is 4 s away.
  await waitUntil(() => (g.outbox.get(g.id)?.attempts ?? 0) >= 3, 8000, 'three tries');
  state.approved = true;
  g.sender.approved('news@gw', 'carol@x');
  g.sender.approved('alerts@gw', 'someone-else@x');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(g.outbox.get(g.id)?.status, 'queued', 'another line\'s approval does not wake it');
  const at = Date.now();
  g.sender.approved('alerts@gw', 'carol@x');
  await waitUntil(() => g.outbox.get(g.id)?.status === 'sent', 3000, 'sent on the approval');
  assert.ok(Date.now() - at < 1500, `sent ${Date.now() - at} ms after the approval`);
});

test('a bot message not approved within the wait fails with keys_not_visible', async (t) => {
  const state = { approved: false, asked: [] as string[] };
  const g = botOutbox(state, 0);
  t.after(g.close);
  await waitUntil(() => g.outbox.get(g.id)?.status === 'failed', 5000, 'failed');
  assert.equal(g.outbox.get(g.id)?.error?.code, 'keys_not_visible');
  assert.match(g.outbox.get(g.id)!.error!.message, /not approved within 0 minutes/);
  assert.equal(g.sent.length, 0, 'nothing sent, in plaintext or otherwise');
});
