// Bridged messages go through the durable outbox: committed once decrypted, sent from there by the
// outbox sender; a message to a contact that needs a handshake (OTR) waits for it, survives a
// restart, arrives exactly once, and fails with no_otr_session (told to its sender) after the
// timeout; receipts are bridged back to the original sender, after a restart too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { Keystore } from '../../keystore/keystore.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { OutboxStore } from '../../keystore/outbox-store.js';
import { EngineRegistry } from '../../bridges/registry.js';
import { OutboundSender } from '../../bridges/outbound.js';
import { OutboxSender } from '../../bridges/outbox-sender.js';
import { ProxyBridge } from '../../bridges/proxy-bridge.js';
import type { InboundMessage } from '../../bridges/core.js';
import type { HandshakeEngine } from '../../bridges/engine.js';
import { Addressing } from '../../component/addressing.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { GatewayError } from '../../errors.js';
import { waitUntil } from '../harness/gateway.js';

const KDF = { kdf: { N: 1024, r: 8, p: 1 } };

/** An engine that needs a session: encrypt throws no_otr_session until `established` is set. */
function handshakeEngine(state: { established: boolean; starts: number }): HandshakeEngine {
  return {
    id: 'otr',
    features: [],
    recognizes: () => false,
    ensureIdentity: async () => undefined,
    identity: async () => ({}),
    decrypt: async () => ({ ok: false, reason: 'internal', replies: [] }),
    encrypt: async (_l, _peer, body) => {
      if (!state.established) throw new GatewayError('no_otr_session', 'waiting');
      return { children: [xml('body', {}, `enc:${body}`)], to: 'bob@b.example/res' };
    },
    reachability: async () => (state.established ? 'ready' : 'needs-session'),
    startSession: async (local, peer) => {
      state.starts++;
      return [xml('message', { from: `${local}/gw`, to: peer }, xml('body', {}, '?OTRv23?'))];
    },
  };
}

function gateway(path: string, state: { established: boolean; starts: number }, otrSessionTimeoutMs = 120_000) {
  const ks = Keystore.open(path, 'passphrase-for-tests', KDF);
  const sent: Element[] = [];
  const send = async (el: Element) => void sent.push(el);
  const log = createLogger('silent');
  const metrics = new Metrics({ processMetrics: false });
  const contacts = new ContactStore(ks);
  contacts.setPreferredProtocol('bob@b.example', 'otr');
  const outbound = new OutboundSender({ engines: new EngineRegistry([handshakeEngine(state)]), contacts, preference: ['otr'], send, resource: 'gw', metrics, log });
  const outbox = new OutboxStore(ks);
  const addressing = new Addressing('gw.example', [], ['a.example', 'b.example']);
  let sender: OutboxSender | null = null;
  const statuses: Array<{ id: string; status: string; code: string | undefined }> = [];
  const proxies = new ProxyBridge({ addressing, outbound, outbox, ttlMs: 86400_000, queued: () => sender?.kick(), send, resource: 'gw', log });
  sender = new OutboxSender({
    store: outbox,
    outbound,
    bots: [{ localpart: 'alerts', token: 't', webhook: null, rateLimit: { perSecond: 10, burst: 10 }, allowPlaintext: false }],
    botJid: (l) => `${l}@gw.example`,
    isOnline: () => true,
    allowPlaintext: false,
    metrics,
    log,
    otrSessionTimeoutMs,
    onStatus: (c) => {
      statuses.push({ id: c.message.id, status: c.status, code: c.message.error?.code });
      if (c.message.kind === 'bridge' && c.status === 'failed') void proxies.failed(c.message, new GatewayError('no_otr_session', c.message.error?.message));
    },
  });
  sender.start();
  return { ks, sent, outbox, proxies, sender, addressing, statuses };
}

const inbound = (body: string, id: string): InboundMessage => ({
  local: 'bob\\40b.example@gw.example',
  from: 'alice@a.example',
  fromFull: 'alice@a.example/phone',
  body,
  encryption: 'omemo',
  sender: { jid: 'alice@a.example', trust: 'trusted' },
  stanzaId: id,
  receiptRequested: true,
  receivedAt: new Date(),
});

const bodies = (sent: Element[]) => sent.filter((s) => s.attrs.type === 'chat').map((s) => s.getChildText('body'));

test('a bridged message waits for the handshake, survives a restart, arrives once; its receipt reaches the sender after a restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bridge-outbox-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'ks.db');
  const state = { established: false, starts: 0 };
  let g = gateway(path, state);
  await g.proxies.forward('bob@b.example', inbound('hello', 'a-1'));
  await waitUntil(() => state.starts >= 1, 5000, 'the handshake is started');
  const query = g.sent.find((s) => s.getChildText('body') === '?OTRv23?');
  assert.equal(query?.attrs.from, 'alice\\40a.example@gw.example/gw', 'the query comes from the sender\'s proxy');
  assert.deepEqual(bodies(g.sent), []);
  await g.sender.stop();
  g.ks.close();

  // Restart: the queued message is still there and goes out once the session exists.
  g = gateway(path, state);
  state.established = true;
  g.sender.kick();
  await waitUntil(() => bodies(g.sent).length === 1, 5000, 'the bridged message is sent');
  const out = g.sent.find((s) => s.attrs.type === 'chat')!;
  assert.equal(out.attrs.to, 'bob@b.example/res');
  assert.equal(out.getChildText('body'), 'enc:hello');
  assert.ok(out.getChild('request', 'urn:xmpp:receipts'), 'the receipt request travels on');
  const id = String(out.attrs.id);
  await g.sender.stop();
  g.ks.close();

  // Another restart, then bob acknowledges: alice gets the ack from bob's proxy with her own id.
  g = gateway(path, state);
  assert.equal(await g.proxies.receipt('alice\\40a.example@gw.example', 'mallory@b.example', id), true);
  assert.equal(g.sent.length, 0, 'only the recipient may acknowledge');
  assert.equal(await g.proxies.receipt('alice\\40a.example@gw.example', 'bob@b.example', id), true);
  const ack = g.sent.find((s) => s.getChild('received', 'urn:xmpp:receipts'));
  assert.equal(ack?.attrs.to, 'alice@a.example/phone');
  assert.equal(ack?.attrs.from, 'bob\\40b.example@gw.example/gw');
  assert.equal(ack?.getChild('received', 'urn:xmpp:receipts')?.attrs.id, 'a-1');
  assert.equal(g.outbox.get(id)?.status, 'delivered');
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(bodies(g.sent), [], 'sent exactly once');
  await g.sender.stop();
  g.ks.close();
});

test('without a session in time, a bridged message fails with no_otr_session and its sender is told', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bridge-outbox-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const state = { established: false, starts: 0 };
  const g = gateway(join(dir, 'ks.db'), state, 1500);
  t.after(async () => {
    await g.sender.stop();
    g.ks.close();
  });
  await g.proxies.forward('bob@b.example', inbound('hello', 'a-2'));
  await waitUntil(() => g.sent.some((s) => s.attrs.type === 'error'), 10_000, 'the sender is told');
  const error = g.sent.find((s) => s.attrs.type === 'error')!;
  assert.equal(error.attrs.to, 'alice@a.example/phone');
  assert.equal(error.attrs.id, 'a-2');
  assert.ok(error.getChild('error')?.getChild('recipient-unavailable', 'urn:ietf:params:xml:ns:xmpp-stanzas'));
  const rows = g.ks.db.prepare("SELECT status, error_code FROM outbox WHERE kind = 'bridge'").all() as Array<{ status: string; error_code: string }>;
  assert.deepEqual(rows, [{ status: 'failed', error_code: 'no_otr_session' }]);
  assert.ok(state.starts >= 1, 'the handshake was started');
});

test('a bot message to an OTR contact without a session in time: status failed, code no_otr_session', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bridge-outbox-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const state = { established: false, starts: 0 };
  const g = gateway(join(dir, 'ks.db'), state, 1500);
  t.after(async () => {
    await g.sender.stop();
    g.ks.close();
  });
  const { message } = g.outbox.enqueue({ bot: 'alerts', to: 'bob@b.example', body: 'from the bot', encryption: null, idempotencyKey: null, ttlMs: 86400_000 });
  g.sender.kick();
  await waitUntil(() => g.outbox.get(message.id)?.status === 'failed', 10_000, 'the bot message fails');
  assert.equal(g.outbox.get(message.id)?.error?.code, 'no_otr_session');
  assert.deepEqual(g.statuses.filter((x) => x.id === message.id).map((x) => [x.status, x.code]), [['failed', 'no_otr_session']]);
  assert.ok(g.sent.some((s) => s.getChildText('body') === '?OTRv23?'), 'the gateway asked for a session');
  assert.ok(!g.sent.some((s) => s.attrs.type === 'error'), 'a bot message is not answered with a stanza error');
});
