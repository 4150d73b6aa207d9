// A line with a backlog (bot -> one user) is sent as a batch (OutboxSender.#line, issue 16): the
// messages are encrypted in order, all written before any is marked sent, and marked in one
// transaction; a message that cannot be encrypted stops the batch before it (the rest wait behind
// its retry), one that cannot be written fails alone; every message leaves once, in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { Keystore } from '../../keystore/keystore.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { OutboxStore } from '../../keystore/outbox-store.js';
import { EngineRegistry } from '../../bridges/registry.js';
import { OutboundSender } from '../../bridges/outbound.js';
import { OutboxSender } from '../../bridges/outbox-sender.js';
import type { ProtocolEngine } from '../../bridges/engine.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { GatewayError } from '../../errors.js';
import { waitUntil } from '../harness/gateway.js';

const TO = 'bob@b.example';

/** An engine that "encrypts" as enc:<body>; a body listed in `failOnce` throws remote_timeout the first time. */
function engine(failOnce: Set<string>, encrypted: string[]): ProtocolEngine {
  return {
    id: 'omemo',
    features: [],
    recognizes: () => false,
    ensureIdentity: async () => undefined,
    identity: async () => ({}),
    decrypt: async () => ({ ok: false, reason: 'internal', replies: [] }),
    encrypt: async (_l, _peer, body) => {
      if (failOnce.delete(body)) throw new GatewayError('remote_timeout', 'device list fetch timed out');
      encrypted.push(body);
      return { children: [xml('body', {}, `enc:${body}`)] };
    },
    reachability: async () => 'ready',
  };
}

function setup(opts: { failEncryptOnce?: string[]; unwritable?: string[]; ttlMs?: (i: number) => number } = {}) {
  const ks = Keystore.open(':memory:', 'passphrase-for-tests', { kdf: { N: 1024, r: 8, p: 1 } });
  const outbox = new OutboxStore(ks);
  const contacts = new ContactStore(ks);
  contacts.setPreferredProtocol(TO, 'omemo');
  const failOnce = new Set(opts.failEncryptOnce ?? []);
  const unwritable = new Set(opts.unwritable ?? []);
  const encrypted: string[] = [];
  const sent: Array<{ body: string; firstStatus: string | undefined }> = [];
  let ids: string[] = [];
  const send = async (el: Element) => {
    const body = String(el.getChildText('body')).replace(/^enc:/, '');
    if (unwritable.has(body)) throw new GatewayError('stanza_unserializable');
    // What the keystore said of the line's first message when this one was written.
    sent.push({ body, firstStatus: outbox.get(ids[0]!)?.status });
  };
  const log = createLogger('silent');
  const metrics = new Metrics({ processMetrics: false });
  const outbound = new OutboundSender({ engines: new EngineRegistry([engine(failOnce, encrypted)]), contacts, preference: ['omemo'], send, resource: 'gw', metrics, log });
  let online = false;
  const statuses: string[] = [];
  const sender = new OutboxSender({
    store: outbox,
    outbound,
    bots: [{ localpart: 'alerts', token: 't', webhook: null, rateLimit: { perSecond: 10, burst: 10 }, allowPlaintext: false }],
    botJid: (l) => `${l}@gw.example`,
    isOnline: () => online,
    allowPlaintext: false,
    metrics,
    log,
    onStatus: (c) => statuses.push(`${c.status}:${c.message.id}`),
  });
  // A backlog: queued while the server is away.
  ids = Array.from({ length: 6 }, (_, i) => outbox.enqueue({ bot: 'alerts', to: TO, body: `m${i}`, encryption: null, idempotencyKey: null, ttlMs: opts.ttlMs?.(i) ?? 60000 }).message.id);
  sender.start();
  const goOnline = () => {
    online = true;
    sender.kick();
  };
  return { ks, outbox, sender, sent, encrypted, statuses, ids, goOnline };
}

test('a backlog of one line is encrypted in order, written whole before any is marked sent, each sent once', async () => {
  const s = setup();
  try {
    s.goOnline();
    await waitUntil(() => s.ids.every((id) => s.outbox.get(id)?.status === 'sent'), 5000, 'the backlog sent');
    assert.deepEqual(s.sent.map((x) => x.body), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
    assert.deepEqual(s.encrypted, ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
    assert.ok(s.sent.every((x) => x.firstStatus === 'queued'), 'every stanza of the batch was written before the first message was marked sent');
    assert.equal(s.statuses.length, 6);
    assert.equal(s.outbox.body(s.ids[3]!), null, 'bodies wiped with the mark');
  } finally {
    await s.sender.stop();
    s.ks.close();
  }
});

test('a message that cannot be encrypted now stops the batch before it: the rest wait behind its retry, order kept', async () => {
  const s = setup({ failEncryptOnce: ['m2'] });
  try {
    s.goOnline();
    await waitUntil(() => s.outbox.get(s.ids[1]!)?.status === 'sent', 5000, 'the first two sent');
    const m2 = s.outbox.get(s.ids[2]!)!;
    assert.equal(m2.status, 'queued');
    assert.equal(m2.error?.code, 'remote_timeout', 'm2 waits for its retry');
    assert.deepEqual(s.sent.map((x) => x.body), ['m0', 'm1'], 'nothing behind m2 overtook it');
    // The retry (1 s later) sends m2 and then the rest, once each.
    await waitUntil(() => s.ids.every((id) => s.outbox.get(id)?.status === 'sent'), 10000, 'the rest sent after the retry');
    assert.deepEqual(s.sent.map((x) => x.body), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
  } finally {
    await s.sender.stop();
    s.ks.close();
  }
});

test('a message of the batch that cannot be written fails alone; the others are marked sent, none written twice', async () => {
  const s = setup({ unwritable: ['m3'] });
  try {
    s.goOnline();
    await waitUntil(() => s.ids.every((id) => ['sent', 'failed'].includes(s.outbox.get(id)?.status ?? '')), 5000, 'the backlog settled');
    assert.deepEqual(s.ids.map((id) => s.outbox.get(id)?.status), ['sent', 'sent', 'sent', 'failed', 'sent', 'sent']);
    assert.equal(s.outbox.get(s.ids[3]!)?.error?.code, 'stanza_unserializable');
    // Give a wrongly unmarked message the chance to go out again.
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(s.sent.map((x) => x.body), ['m0', 'm1', 'm2', 'm4', 'm5']);
  } finally {
    await s.sender.stop();
    s.ks.close();
  }
});

test('an expired message in a backlog ends the batch before it: it fails, the ones after it are sent in order', async () => {
  const s = setup({ ttlMs: (i) => (i === 3 ? 1 : 60000) });
  try {
    await new Promise((r) => setTimeout(r, 10));
    s.goOnline();
    await waitUntil(() => s.ids.every((id) => ['sent', 'failed'].includes(s.outbox.get(id)?.status ?? '')), 5000, 'the backlog settled');
    assert.deepEqual(s.ids.map((id) => s.outbox.get(id)?.status), ['sent', 'sent', 'sent', 'failed', 'sent', 'sent']);
    assert.equal(s.outbox.get(s.ids[3]!)?.error?.code, 'expired');
    assert.deepEqual(s.sent.map((x) => x.body), ['m0', 'm1', 'm2', 'm4', 'm5']);
  } finally {
    await s.sender.stop();
    s.ks.close();
  }
});
