// The OMEMO 2 engine between hosted JIDs on an in-memory network (test/unit/helpers/omemo-net.ts):
// key exchange and its completion, sessions across a restart, replay/tamper/misaddressing refused,
// heartbeats, prekey replacement, and the device union with legacy OMEMO (a device in both lists gets
// OMEMO 2 only; a legacy-only device gets a legacy stanza of its own).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { TrustStore } from '../../keystore/trust-store.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { createOmemoEngine } from '../../bridges/omemo/engine.js';
import { NODE_BUNDLES, NODE_DEVICES, NS_OMEMO2 } from '../../bridges/omemo2/constants.js';
import { parseBundle, parseEncrypted } from '../../bridges/omemo2/wire.js';
import { ed25519Verify } from '../../bridges/ratchet/primitives.js';
import { Clock, FakeNetwork, openTestKeystore, reparse } from './helpers/omemo-net.js';
import { makeDual, type Dual } from './helpers/omemo2-net.js';

const msg = (from: string, to: string, children: Element[]) => reparse(xml('message', { from: `${from}/gw`, to, type: 'chat', id: 'x' }, ...children));
const keysOf = (stanza: Element) => parseEncrypted(stanza.getChild('encrypted', NS_OMEMO2)!)!;

async function send(a: Dual, b: Dual, body: string) {
  const enc = await a.omemo2.encrypt(a.jid, b.jid, body);
  return { stanza: msg(a.jid, b.jid, enc.children), enc };
}

async function deliver(to: Dual, stanza: Element) {
  const r = await to.omemo2.decrypt(to.jid, stanza);
  return r;
}

test('one device id and one identity for both versions; the bundle is a valid OMEMO 2 bundle', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alice@gw.example');
  assert.equal((await a.legacy.devices(a.jid))[0]!.device_id, a.deviceId);
  const items = net.items(a.jid, NODE_BUNDLES)!;
  assert.equal(items.length, 1);
  assert.equal(items[0]!.attrs.id, String(a.deviceId), 'item id = device id');
  const b = parseBundle(items, a.deviceId)!;
  assert.equal(b.preKeys.length, 100);
  assert.ok(ed25519Verify(b.ik, b.spk.pub, b.spk.sig), 'signed prekey signature verifies as Ed25519');
  assert.equal(net.items(a.jid, NODE_DEVICES)![0]!.getChild('devices', NS_OMEMO2)!.getChild('device')!.attrs.id, String(a.deviceId));
  const pub = net.publishes.find((p) => p.node === NODE_BUNDLES)!;
  assert.equal(pub.opts?.maxItems, 'max');
  assert.deepEqual(a.omemo2.features, [`${NODE_DEVICES}+notify`]);
});

test('key exchange, completion, 20 messages each way, restart, 20 more without a key exchange', async () => {
  const net = new FakeNetwork();
  const clock = new Clock();
  const a = await makeDual(net, 'alice@gw.example', { clock });
  let b = await makeDual(net, 'bob@gw.example', { clock });
  const first = await send(a, b, 'hello 0');
  assert.equal(keysOf(first.stanza).keys.get(b.jid)![0]!.kex, true, 'first message is a key exchange');
  const r0 = await deliver(b, first.stanza);
  assert.ok(r0.ok && r0.body === 'hello 0');
  assert.equal(r0.replies.length, 1, 'an empty message completes the key exchange');
  const before = b.omemo2.internals.keyring.preKeyIds(b.jid);
  assert.equal(before.used.length, 1, 'the used prekey is kept for the grace period');
  assert.equal(before.unused.length, 100, 'and replaced in the bundle');
  const completion = await deliver(a, reparse(r0.replies[0]!));
  assert.ok(completion.ok && completion.body === null);
  for (let i = 1; i < 20; i++) {
    const m = await send(a, b, `hello ${i}`);
    assert.equal(keysOf(m.stanza).keys.get(b.jid)![0]!.kex, false, 'no key exchange once confirmed');
    const r = await deliver(b, m.stanza);
    assert.ok(r.ok && r.body === `hello ${i}`);
  }
  for (let i = 0; i < 20; i++) {
    const m = await send(b, a, `reply ${i}`);
    const r = await deliver(a, m.stanza);
    assert.ok(r.ok && r.body === `reply ${i}`, `reply ${i}`);
  }
  // Restart b: a new engine on the same keystore.
  b = await makeDual(net, b.jid, { ks: b.ks, clock });
  for (let i = 0; i < 20; i++) {
    const m = await send(a, b, `after ${i}`);
    assert.equal(keysOf(m.stanza).keys.get(b.jid)![0]!.kex, false);
    const r = await deliver(b, m.stanza);
    assert.ok(r.ok && r.body === `after ${i}`);
    const back = await send(b, a, `back ${i}`);
    assert.equal(keysOf(back.stanza).keys.get(a.jid)![0]!.kex, false);
    const r2 = await deliver(a, back.stanza);
    assert.ok(r2.ok && r2.body === `back ${i}`);
  }
});

test('replayed, corrupted and wrongly addressed messages are refused', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alice@gw.example');
  const b = await makeDual(net, 'bob@gw.example');
  const c = await makeDual(net, 'carol@gw.example');
  const m = await send(a, b, 'once');
  assert.ok((await deliver(b, m.stanza)).ok);
  const replay = await deliver(b, m.stanza);
  assert.ok(!replay.ok && replay.reason === 'duplicate');

  // A payload bit flipped: the payload MAC fails.
  const m2 = await send(a, b, 'tampered');
  const genuine = reparse(m2.stanza);
  const enc = m2.stanza.getChild('encrypted', NS_OMEMO2)!;
  const p = enc.getChild('payload')!;
  const bytes = Buffer.from(p.getText(), 'base64');
  bytes[0]! ^= 1;
  p.children = [bytes.toString('base64')];
  const t = await deliver(b, m2.stanza);
  assert.ok(!t.ok && t.reason === 'bad-mac');
  // Refused at the payload, it changed nothing: the genuine message is still read, once.
  const g = await deliver(b, genuine);
  assert.ok(g.ok && g.body === 'tampered', `the genuine message after a tampered copy: ${JSON.stringify(g.ok ? g.body : g.reason)}`);
  const again = await deliver(b, genuine);
  assert.ok(!again.ok && again.reason === 'duplicate');

  // A key ciphertext bit flipped: the ratchet MAC fails, nothing changes, and the next message works.
  const m3 = await send(a, b, 'key tampered');
  const k = m3.stanza.getChild('encrypted', NS_OMEMO2)!.getChild('header')!.getChild('keys')!.getChild('key')!;
  const kb = Buffer.from(k.getText(), 'base64');
  kb[kb.length - 20]! ^= 1;
  k.children = [kb.toString('base64')];
  const t3 = await deliver(b, m3.stanza);
  assert.ok(!t3.ok && (t3.reason === 'bad-mac' || t3.reason === 'malformed'), String(!t3.ok && t3.reason));
  const ok = await deliver(b, (await send(a, b, 'still fine')).stanza);
  assert.ok(ok.ok && ok.body === 'still fine');

  // Keys listed under another JID are not ours, even with our device id.
  const m4 = await send(a, b, 'to bob');
  const keys = m4.stanza.getChild('encrypted', NS_OMEMO2)!.getChild('header')!.getChild('keys')!;
  keys.attrs.jid = 'mallory@example.org';
  const t4 = await deliver(b, m4.stanza);
  assert.ok(!t4.ok && t4.reason === 'malformed', 'misaddressed: refused');

  // A message for carol shown to bob: refused.
  const m5 = await send(a, c, 'for carol');
  m5.stanza.attrs.to = b.jid;
  const t5 = await deliver(b, m5.stanza);
  assert.ok(!t5.ok && t5.reason === 'malformed');
});

test('the SCE envelope: from must be the sender, to the recipient; time not in the future', async () => {
  const { openEnvelope, buildEnvelope } = await import('../../bridges/omemo2/sce.js');
  const now = Date.now();
  const env = buildEnvelope({ body: 'hi <b>&', from: 'a@x', to: 'b@y', now });
  assert.deepEqual(openEnvelope(env, { from: 'a@x', to: 'b@y', now, maxSkewMs: 1000 }), { ok: true, body: 'hi <b>&' });
  assert.deepEqual(openEnvelope(env, { from: 'a@x', to: 'c@y', now, maxSkewMs: 1000 }), { ok: false, reason: 'wrong-recipient' });
  assert.deepEqual(openEnvelope(env, { from: 'm@x', to: 'b@y', now, maxSkewMs: 1000 }), { ok: false, reason: 'wrong-sender' });
  assert.deepEqual(openEnvelope(env, { from: 'a@x', to: 'b@y', now: now - 60_000, maxSkewMs: 1000 }), { ok: false, reason: 'bad-time' });
  assert.deepEqual(openEnvelope(Buffer.from('<envelope xmlns="urn:xmpp:sce:1"/>'), { from: 'a@x', to: 'b@y', now, maxSkewMs: 1 }), { ok: false, reason: 'malformed' });
  assert.deepEqual(openEnvelope(Buffer.from('<nope'), { from: 'a@x', to: 'b@y', now, maxSkewMs: 1 }), { ok: false, reason: 'malformed' });
});

test('the SCE envelope is written as ltx writes the element: text and attribute values escaped', async () => {
  const { buildEnvelope } = await import('../../bridges/omemo2/sce.js');
  const { parseXml } = await import('../../component/xml.js');
  const env = buildEnvelope({ body: `<b>&amp; "q" 'a' ]]> \u00e9`, from: `a"'<&>@x`, to: 'b@y/r', now: 0 }).toString('utf8');
  const el = parseXml(env);
  assert.equal(el.toString(), env, 'the same text as the parsed element serialized');
  assert.equal(el.getChild('content')!.getChild('body')!.getText(), `<b>&amp; "q" 'a' ]]> \u00e9`);
  assert.equal(el.getChild('from')!.attrs.jid, `a"'<&>@x`);
  assert.equal(el.getChild('time')!.attrs.stamp, '1970-01-01T00:00:00.000Z');
  assert.match(el.getChild('rpad')!.getText(), /^[A-Za-z0-9_-]{1,200}$/);
});

test('the SCE envelope in our own form is read without the XML parser, with the same answers as the parser', async () => {
  const { openEnvelope, openEnvelopeTree, buildEnvelope } = await import('../../bridges/omemo2/sce.js');
  const { randomBytes, randomInt } = await import('node:crypto');
  const now = Date.parse('2026-01-01T00:00:00Z');
  const expect = { from: 'a@x', to: 'b@y', now, maxSkewMs: 1000 };
  const chars = ['a', ' ', '<', '>', '&', '"', "'", '\n', '\r', '\t', ']]>', '&amp;', '&#65;', '\u00e9', '\u{1f600}', ';', '\u0000'];
  const forms: string[] = [];
  for (let i = 0; i < 400; i++) {
    const body = Array.from({ length: randomInt(0, 12) }, () => chars[randomInt(chars.length)]).join('');
    const jid = (d: string) => (randomInt(4) === 0 ? `${d}"'&<>\t` : randomInt(3) === 0 ? `${d}/res` : d);
    const at = randomInt(3) === 0 ? now + 5000 : now;
    forms.push(buildEnvelope({ body, from: jid('a@x'), to: jid(randomInt(5) === 0 ? 'c@y' : 'b@y'), now: at }).toString('utf8'));
  }
  // Hand-made variants of the form: entities the fast path does not take, a bad stamp, long padding,
  // other order, a body without its namespace.
  const base = buildEnvelope({ body: 'x', from: 'a@x', to: 'b@y', now }).toString('utf8');
  forms.push(
    base.replace('>x<', '>&#65;&amp;<'),
    base.replace('>x<', '>&bogus;<'),
    base.replace('>x<', '>a & b<'),
    base.replace(/stamp="[^"]*"/, 'stamp="not a time"'),
    base.replace(/<rpad>[^<]*<\/rpad>/, `<rpad>${'A'.repeat(1100)}</rpad>`),
    base.replace(/<to jid="b@y"\/><from jid="a@x"\/>/, '<from jid="a@x"/><to jid="b@y"/>'),
    base.replace(' xmlns="jabber:client"', ''),
    base.replace('jid="a@x"', 'jid="A@X/Res"'),
    base.replace('jid="b@y"', 'jid=""'),
    base.replace('</envelope>', '</envelope> '),
    base.replace('<content>', '<content><!-- c -->'),
    randomBytes(40).toString('latin1'),
  );
  let fast = 0;
  for (const text of forms) {
    const bytes = Buffer.from(text, 'utf8');
    assert.deepEqual(openEnvelope(bytes, expect), openEnvelopeTree(text, expect), text);
    if (/^<envelope xmlns="urn:xmpp:sce:1"><content><body xmlns="jabber:client">[^<\r]*<\/body>/.test(text)) fast++;
  }
  assert.ok(fast > 100, 'most generated envelopes are of the form the fast path reads');
});

test('heartbeat after 53 messages on one chain, once', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alice@gw.example');
  const b = await makeDual(net, 'bob@gw.example');
  const r0 = await deliver(b, (await send(a, b, 'start')).stanza);
  assert.ok(r0.ok);
  await deliver(a, reparse(r0.replies[0]!)); // completion: a's next chain starts
  let beats = 0;
  for (let i = 0; i < 60; i++) {
    const r = await deliver(b, (await send(a, b, `m${i}`)).stanza);
    assert.ok(r.ok);
    beats += r.replies.length;
    if (i === 52) assert.equal(beats, 0, 'none before the threshold');
  }
  assert.equal(beats, 1);
});

test('device union with legacy OMEMO: both lists -> OMEMO 2 only; legacy-only device -> its own legacy stanza', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alice@gw.example');
  const b = await makeDual(net, 'bob@gw.example');
  // bob has a second device that speaks only legacy OMEMO.
  const old = createOmemoEngine({
    store: createProtocolStore(openTestKeystore(), 'omemo'),
    trust: new TrustStore(openTestKeystore(), 'btbv'),
    contacts: new ContactStore(b.ks),
    keystore: b.ks,
    pubsub: net.port('bob-old-device'),
    metrics: new Metrics({ processMetrics: false }),
    log: createLogger('silent'),
    now: Date.now,
    resource: 'x',
  });
  await old.ensureIdentity(b.jid);
  const oldId = (await old.devices(b.jid))[0]!.device_id;
  const enc = await a.omemo2.encrypt(a.jid, b.jid, 'to all');
  const s2 = msg(a.jid, b.jid, enc.children);
  assert.deepEqual(keysOf(s2).keys.get(b.jid)!.map((k) => k.rid), [b.deviceId], 'OMEMO 2 stanza: the device in both lists');
  assert.equal(enc.more?.length, 1, 'one legacy stanza');
  const legacyStanza = msg(a.jid, b.jid, enc.more![0]!.children);
  const rids = legacyStanza.getChild('encrypted', 'eu.siacs.conversations.axolotl')!.getChild('header')!.getChildren('key').map((k) => Number(k.attrs.rid));
  assert.deepEqual(rids, [oldId], 'legacy stanza: only the legacy-only device');
  const r1 = await deliver(b, s2);
  assert.ok(r1.ok && r1.body === 'to all');
  const r2 = await old.decrypt(b.jid, legacyStanza);
  assert.ok(r2.ok && r2.body === 'to all');
  const r3 = await b.legacy.decrypt(b.jid, legacyStanza);
  assert.ok(!r3.ok && r3.reason === 'not-for-this-device', 'the dual device does not get it twice');
});

test('SCE envelopes with namespace prefixes (as Python ElementTree writes them) are read', async () => {
  const { openEnvelope } = await import('../../bridges/omemo2/sce.js');
  const env = Buffer.from(
    '<ns0:envelope xmlns:ns0="urn:xmpp:sce:1" xmlns:ns1="jabber:client"><ns0:content><ns1:body>Grüße</ns1:body></ns0:content>' +
      '<ns0:rpad>abc</ns0:rpad><ns0:from jid="a@x/r"/><ns0:to jid="b@y"/><ns0:time stamp="2020-01-01T00:00:00Z"/></ns0:envelope>',
  );
  assert.deepEqual(openEnvelope(env, { from: 'a@x', to: 'b@y', now: Date.now(), maxSkewMs: 1000 }), { ok: true, body: 'Grüße' });
  assert.deepEqual(openEnvelope(env, { from: 'a@x', to: 'z@y', now: Date.now(), maxSkewMs: 1000 }), { ok: false, reason: 'wrong-recipient' });
  const other = Buffer.from('<envelope xmlns="urn:xmpp:other"><content/></envelope>');
  assert.deepEqual(openEnvelope(other, { from: 'a@x', to: 'b@y', now: Date.now(), maxSkewMs: 1000 }), { ok: false, reason: 'malformed' });
});

test('a repair keeps the replaced session: messages in flight on it still decrypt, then the new one takes over', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alice@gw.example');
  const b = await makeDual(net, 'bob@gw.example');
  const r0 = await deliver(b, (await send(a, b, 'start')).stanza);
  assert.ok(r0.ok);
  await deliver(a, reparse(r0.replies[0]!));
  // Garbage on the session makes b repair it (a new session, an empty key exchange to a).
  const bad = await send(a, b, 'garbage');
  const k = bad.stanza.getChild('encrypted', NS_OMEMO2)!.getChild('header')!.getChild('keys')!.getChild('key')!;
  const kb = Buffer.from(k.getText(), 'base64');
  kb[kb.length - 20]! ^= 1;
  k.children = [kb.toString('base64')];
  const rb = await deliver(b, bad.stanza);
  assert.ok(!rb.ok && rb.replies.length === 1, 'a repair goes out');
  // a has not seen the repair yet: its next message is on the old session.
  const inflight = await deliver(b, (await send(a, b, 'in flight')).stanza);
  assert.ok(inflight.ok && inflight.body === 'in flight');
  // a takes the repair; from then on both are on the new session.
  const rep = await deliver(a, reparse(rb.replies[0]!));
  assert.ok(rep.ok && rep.body === null);
  for (const body of ['after repair 1', 'after repair 2']) {
    const r = await deliver(b, (await send(a, b, body)).stanza);
    assert.ok(r.ok && r.body === body, body);
    const back = await deliver(a, (await send(b, a, `re: ${body}`)).stanza);
    assert.ok(back.ok && back.body === `re: ${body}`);
  }
});

test('a device list read creates only the identity; the prekeys come with the first bundle read', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alice@gw.example');
  const proxy = 'bob\\40example.org@gw.example';
  await a.omemo2.prepareNode!(proxy, NODE_DEVICES);
  assert.equal(a.omemo2.internals.keyring.hasBundle(proxy), false);
  assert.ok(net.items(proxy, NODE_DEVICES), 'the device list is published');
  assert.equal(net.items(proxy, NODE_BUNDLES), null, 'no bundle yet');
  await a.omemo2.prepareNode!(proxy, NODE_BUNDLES);
  assert.equal(a.omemo2.internals.keyring.hasBundle(proxy), true);
  assert.equal(parseBundle(net.items(proxy, NODE_BUNDLES)!)!.preKeys.length, 100);
});

test('replays are refused after a restart too, quietly (no repair), whoever re-sends them', async () => {
  const net = new FakeNetwork();
  const clock = new Clock();
  const a = await makeDual(net, 'alice@gw.example', { clock });
  let b = await makeDual(net, 'bob@gw.example', { clock });
  const kex = await send(a, b, 'first');
  const r0 = await deliver(b, reparse(kex.stanza));
  assert.ok(r0.ok && r0.body === 'first');
  assert.ok((await deliver(a, reparse(r0.replies[0]!))).ok, 'completion');
  const plain = await send(a, b, 'second');
  assert.ok((await deliver(b, reparse(plain.stanza))).ok);
  assert.ok(b.omemo2.internals.replay.cached >= 2);

  // Restart b: a new engine on the same keystore, nothing in memory.
  b = await makeDual(net, b.jid, { ks: b.ks, clock });
  for (const [name, stanza] of [['key exchange', kex.stanza], ['message', plain.stanza]] as const) {
    const r = await deliver(b, reparse(stanza));
    assert.ok(!r.ok && r.reason === 'duplicate', `${name} replayed after the restart: ${JSON.stringify(r.ok ? r.body : r.reason)}`);
    assert.equal(r.replies.length, 0, `${name}: no repair or completion for a replay`);
  }
  // The same key exchange re-sent by another user of the domain is the same message: a duplicate.
  const forged = reparse(kex.stanza);
  forged.attrs.from = 'mallory@gw.example/x';
  const f = await deliver(b, forged);
  assert.ok(!f.ok && f.reason === 'duplicate', `re-sent by another JID: ${JSON.stringify(f.ok ? f.body : f.reason)}`);
  // And the session goes on.
  const next = await deliver(b, reparse((await send(a, b, 'third')).stanza));
  assert.ok(next.ok && next.body === 'third');
});

test('the replay digest is SHA-256 over omemo2 NUL jid NUL message, as stored rows were written', async () => {
  const { replayDigest } = await import('../../bridges/omemo2/context.js');
  const { createHash, randomBytes } = await import('node:crypto');
  for (const local of ['bob@gw.example', 'j\u00fcrgen\\40example.org@gw.example']) {
    const m = randomBytes(77);
    const streamed = createHash('sha256').update('omemo2\0').update(local).update('\0').update(m).digest();
    assert.deepEqual(replayDigest(local, m), streamed);
  }
});
