// Outbound protocol choice (DESIGN.md): explicit; admin preference; reply in kind; then
// bridge.outbound_preference among what the contact supports; plaintext only where allowed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { Keystore } from '../../keystore/keystore.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { EngineRegistry } from '../../bridges/registry.js';
import { OutboundSender } from '../../bridges/outbound.js';
import type { ProtocolEngine, ProtocolId, Reachability } from '../../bridges/engine.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { GatewayError } from '../../errors.js';
import { stubEngine } from './helpers/stub-engine.js';

/** A test double: reachability from a table; "encrypts" by tagging the body. */
function fakeEngine(id: ProtocolId, reach: Record<string, Reachability>): ProtocolEngine {
  return stubEngine(id, {
    encrypt: async (_l, peer) => {
      if ((reach[peer] ?? 'no') === 'no') throw new GatewayError('no_encryption_available');
      return { children: [xml('x', { xmlns: `urn:test:${id}` })] };
    },
    reachability: async (_l, peer) => reach[peer] ?? 'no',
  });
}

function setup(preference: ProtocolId[]) {
  const ks = Keystore.open(':memory:', 'passphrase-for-tests', { kdf: { N: 1024, r: 8, p: 1 } });
  const contacts = new ContactStore(ks);
  const sent: Element[] = [];
  const engines = new EngineRegistry([
    fakeEngine('omemo', { 'both@x': 'ready', 'omemo@x': 'needs-session' }),
    fakeEngine('pgp', { 'both@x': 'ready', 'pgp@x': 'ready' }),
  ]);
  const out = new OutboundSender({ engines, contacts, preference, send: async (el) => void sent.push(el), resource: 'gw', metrics: new Metrics({ processMetrics: false }), log: createLogger('silent') });
  return { out, contacts, sent, ks };
}

test('preference order among what the contact supports', async () => {
  const { out } = setup(['omemo', 'ox', 'pgp', 'otr']);
  assert.equal((await out.choose('a@gw', 'both@x')).encryption, 'omemo');
  assert.equal((await out.choose('a@gw', 'omemo@x')).encryption, 'omemo');
  assert.equal((await out.choose('a@gw', 'pgp@x')).encryption, 'pgp');
  const { out: pgpFirst } = setup(['pgp', 'omemo']);
  assert.equal((await pgpFirst.choose('a@gw', 'both@x')).encryption, 'pgp');
});

test('explicit protocol, then admin preference, then reply in kind', async () => {
  const { out, contacts } = setup(['omemo', 'pgp']);
  assert.equal((await out.choose('a@gw', 'both@x', 'pgp')).encryption, 'pgp');
  contacts.setLastProtocol('a@gw', 'both@x', 'pgp');
  assert.equal((await out.choose('a@gw', 'both@x')).encryption, 'pgp', 'reply in kind');
  assert.equal((await out.choose('b@gw', 'both@x')).encryption, 'omemo', 'in kind is per hosted JID');
  contacts.setPreferredProtocol('both@x', 'omemo');
  assert.equal((await out.choose('a@gw', 'both@x')).encryption, 'omemo', 'admin preference beats reply in kind');
  // A preference the contact cannot be reached with falls through to the next rule.
  contacts.setPreferredProtocol('pgp@x', 'omemo');
  assert.equal((await out.choose('a@gw', 'pgp@x')).encryption, 'pgp');
});

test('nothing fits: a clear error, never plaintext unless allowed', async () => {
  const { out, sent } = setup(['omemo', 'pgp']);
  await assert.rejects(out.choose('a@gw', 'nothing@x'), (e: unknown) => e instanceof GatewayError && e.code === 'no_encryption_available' && /nothing@x/.test(e.message));
  await assert.rejects(out.send({ from: 'a@gw', to: 'nothing@x', body: 'secret', id: 'm1' }), (e: unknown) => e instanceof GatewayError && e.code === 'no_encryption_available');
  await assert.rejects(out.choose('a@gw', 'both@x', 'none'), (e: unknown) => e instanceof GatewayError && e.code === 'plaintext_refused');
  assert.equal(sent.length, 0);
  assert.equal((await out.choose('a@gw', 'nothing@x', undefined, true)).encryption, 'none');
  await out.send({ from: 'a@gw', to: 'nothing@x', body: 'allowed plaintext', id: 'm2', allowPlaintext: true, requestReceipt: true });
  assert.equal(sent[0]!.getChildText('body'), 'allowed plaintext');
  assert.ok(sent[0]!.getChild('request', 'urn:xmpp:receipts'));
  await out.send({ from: 'a@gw', to: 'pgp@x', body: 'hidden', id: 'm3' });
  assert.equal(sent[1]!.attrs.from, 'a@gw/gw');
  assert.equal(sent[1]!.attrs.id, 'm3');
  assert.ok(sent[1]!.getChild('x', 'urn:test:pgp'));
  assert.equal(sent[1]!.getChildText('body'), null);
});
