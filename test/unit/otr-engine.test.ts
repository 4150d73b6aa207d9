// The OTR engine against itself in memory (two gateways, each hosting one JID): AKE started by a
// query from either side, data messages both ways with key rotation, fragments in both formats, a
// garbage data message (an error and a fresh AKE, then the session works), a restart mid-session,
// the disconnect TLV, SMP declined, instance tags, whitespace tags stripped, and fingerprints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { Keystore } from '../../keystore/keystore.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { TrustStore } from '../../keystore/trust-store.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { parseXml, xml, type Element } from '../../component/xml.js';
import type { EnginePorts } from '../../bridges/engine.js';
import { createOtrEngine, type OtrEngine, type OtrEngineOptions } from '../../bridges/otr/engine.js';
import { decodeMessage, encodedText, encodeMessage, MSG_DATA, parseBody } from '../../bridges/otr/messages.js';
import { decryptData, encryptData, type SessionState, type Tlv } from '../../bridges/otr/session.js';
import { GatewayError } from '../../errors.js';

const A = 'alice@a.example';
const B = 'bob@b.example';

interface Side {
  jid: string;
  engine: OtrEngine;
  ports: EnginePorts;
  logs: string[];
  restart(o?: OtrEngineOptions): void;
}

function side(jid: string, o: OtrEngineOptions = {}): Side {
  const ks = Keystore.open(':memory:', 'passphrase-for-tests', { kdf: { N: 1024, r: 8, p: 1 } });
  const logs: string[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (logs.push(c.toString()), cb()) });
  const ports: EnginePorts = {
    store: createProtocolStore(ks, 'otr'),
    trust: new TrustStore(ks, 'btbv'),
    contacts: new ContactStore(ks),
    keystore: ks,
    pubsub: { publish: () => undefined, retract: () => undefined, localItems: () => [], fetch: () => Promise.reject(new Error('none')) },
    metrics: new Metrics({ processMetrics: false }),
    log: createLogger('debug', sink),
    now: () => Date.now(),
    resource: 'gw',
  };
  const s: Side = { jid, ports, logs, engine: createOtrEngine(ports, o), restart: (o2 = {}) => (s.engine = createOtrEngine(ports, { ...o, ...o2 })) };
  return s;
}

/** Delivers stanzas between the two sides until none is left; returns the bodies delivered. */
async function pump(sides: Side[], first: Element[]): Promise<Array<{ to: string; body: string }>> {
  const queue = [...first];
  const got: Array<{ to: string; body: string }> = [];
  for (let n = 0; queue.length && n < 100; n++) {
    const st = parseXml(queue.shift()!.toString());
    const to = String(st.attrs.to).split('/')[0]!;
    const target = sides.find((s) => s.jid === to)!;
    const r = await target.engine.decrypt(to, st);
    queue.push(...r.replies);
    if (r.ok && r.body !== null) got.push({ to, body: r.body });
  }
  return got;
}

const msg = (from: string, to: string, body: string) => xml('message', { from, to, type: 'chat' }, xml('body', {}, body));

async function send(from: Side, to: Side, body: string): Promise<Element[]> {
  const enc = await from.engine.encrypt(from.jid, to.jid, body);
  return [enc.children, ...(enc.more ?? []).map((m) => m.children)].map((children) => xml('message', { from: `${from.jid}/gw`, to: enc.to ?? to.jid, type: 'chat' }, ...children));
}

async function established(a: Side, b: Side): Promise<void> {
  // b knows a's full JID only from a's query.
  await pump([a, b], [msg(`${a.jid}/gw`, b.jid, '?OTRv23?')]);
  assert.ok(a.engine.hasSession(a.jid, `${b.jid}/gw`), 'a has a session');
  assert.ok(b.engine.hasSession(b.jid, `${a.jid}/gw`), 'b has a session');
}

test('AKE from a query, then 20 messages each way with key rotation, in both orders', async () => {
  const a = side(A);
  const b = side(B);
  await assert.rejects(a.engine.encrypt(A, B, 'too early'), (e: unknown) => e instanceof GatewayError && e.code === 'no_otr_session');
  await established(a, b);
  for (let i = 0; i < 20; i++) {
    const got = await pump([a, b], [...(await send(a, b, `a->b ${i} ✓`)), ...(await send(b, a, `b->a ${i}`)), ...(i % 3 ? await send(a, b, `a->b again ${i}`) : [])]);
    assert.deepEqual(got.map((g) => g.body), [`a->b ${i} ✓`, `b->a ${i}`, ...(i % 3 ? [`a->b again ${i}`] : [])]);
  }
  const fa = (await a.engine.identity(A)).otr!.fingerprint;
  assert.match(fa, /^[0-9A-F]{40}$/);
  const seen = b.ports.trust.list(A, 'otr');
  assert.deepEqual(seen.map((d) => d.fingerprint), [fa], 'b saw a\'s key under the trust store');
  assert.ok(!a.logs.join('').includes('a->b'), 'no plaintext in logs');
});

test('fragments in the v3 format both ways (small maximum size), and v2 fragments', async () => {
  const a = side(A, { maxMessageSize: 140 });
  const b = side(B, { maxMessageSize: 200 });
  await established(a, b);
  const long = 'x'.repeat(900) + ' end';
  const out = await send(a, b, long);
  assert.ok(out.length > 5);
  assert.match(out[0]!.getChildText('body')!, /^\?OTR\|[0-9a-f]{8}\|[0-9a-f]{8},00001,\d{5},/);
  assert.deepEqual((await pump([a, b], out)).map((g) => g.body), [long]);
  assert.deepEqual((await pump([a, b], await send(b, a, long))).map((g) => g.body), [long]);
  // Out of order: the buffer is dropped, nothing delivered, nothing breaks.
  const again = await send(a, b, 'dropped');
  assert.deepEqual(await pump([a, b], [again[1]!, again[0]!]), []);
  assert.deepEqual((await pump([a, b], await send(a, b, 'after'))).map((g) => g.body), ['after']);

  const c = side('carol@c.example', { maxMessageSize: 120 });
  const d = side('dave@d.example');
  await pump([c, d], [msg(`${c.jid}/gw`, d.jid, '?OTRv2?')]);
  const v2 = await send(d, c, 'v2 text');
  assert.equal(decodeMessage(parseBody(v2[0]!.getChildText('body')!).kind === 'encoded' ? (parseBody(v2[0]!.getChildText('body')!) as { bytes: Buffer }).bytes : Buffer.alloc(0)).h.version, 2);
  const v2frag = await send(c, d, 'y'.repeat(300));
  assert.match(v2frag[0]!.getChildText('body')!, /^\?OTR,1,\d+,/);
  assert.deepEqual((await pump([c, d], v2frag)).map((g) => g.body), ['y'.repeat(300)]);
});

test('a garbage data message: an error and a fresh AKE, then the session works; a restart keeps the session', async () => {
  const a = side(A);
  const b = side(B);
  await established(a, b);
  const good = await send(a, b, 'hello');
  const body = good[0]!.getChildText('body')!;
  const bytes = (parseBody(body) as { bytes: Buffer }).bytes;
  const m = decodeMessage(bytes);
  assert.equal(m.type, MSG_DATA);
  const tampered = Buffer.from(bytes);
  tampered[tampered.length - 25] ^= 0xff; // the last ciphertext byte (then MAC 20, old MAC keys 4)
  const r = await b.engine.decrypt(B, parseXml(msg(`${A}/gw`, B, encodedText(tampered)).toString()));
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.reason, 'bad-mac', b.logs.slice(-3).join(''));
  const texts = r.replies.map((x) => x.getChildText('body')!);
  assert.match(texts[0]!, /^\?OTR Error:/);
  assert.match(texts[1]!, /^\?OTR:AAMC/, 'a fresh D-H Commit');
  await pump([a, b], r.replies.slice(1));
  assert.deepEqual((await pump([a, b], await send(a, b, 'after the new AKE'))).map((g) => g.body), ['after the new AKE']);
  const junk = await b.engine.decrypt(B, parseXml(msg(`${A}/gw`, B, '?OTR:AAMD!!!.').toString()));
  assert.equal(!junk.ok && junk.reason, 'malformed');

  // Restart both gateways mid-session: the sessions come back from the keystore.
  a.restart();
  b.restart();
  assert.deepEqual((await pump([a, b], await send(a, b, 'after restart'))).map((g) => g.body), ['after restart']);
  assert.deepEqual((await pump([a, b], await send(b, a, 'and back'))).map((g) => g.body), ['and back']);
  // A replayed data message is dropped quietly (counter must increase).
  const once = await send(a, b, 'once');
  assert.deepEqual((await pump([a, b], once)).map((g) => g.body), ['once']);
  const replay = await b.engine.decrypt(B, parseXml(once[0]!.toString()));
  assert.equal(!replay.ok && replay.reason, 'duplicate');
});

test('AKE started by the other side, whitespace tags stripped and answered, SMP declined, disconnect TLV ends the session', async () => {
  const a = side(A);
  const b = side(B);
  const tagged = 'hi \t  \t\t\t\t \t \t \t    \t\t  \t   \t\t  \t\t';
  const r = await a.engine.decrypt(A, parseXml(msg(`${B}/phone`, A, tagged).toString()));
  assert.ok(r.ok && r.body === null, 'the tagged plaintext is not delivered');
  assert.match(r.replies[0]!.getChildText('body')!, /^\?OTR:AAMC/, 'a D-H Commit answers the tag');
  assert.equal(r.replies[0]!.attrs.to, `${B}/phone`, 'replies go to the full JID');
  assert.ok(!r.replies.some((x) => x.getChildText('body')!.includes('\t')), 'the tag is never sent back');
  // b is played by another engine whose messages come from bob@b.example/phone
  const rel = (els: Element[]) => els.map((e) => parseXml(e.toString().replace(`${B}/gw`, `${B}/phone`)));
  let queue = r.replies;
  for (let i = 0; i < 6 && queue.length; i++) {
    const next: Element[] = [];
    for (const st of queue) {
      const to = String(st.attrs.to).split('/')[0]!;
      const res = to === B ? await b.engine.decrypt(B, parseXml(st.toString())) : await a.engine.decrypt(A, parseXml(st.toString()));
      next.push(...(to === B ? rel(res.replies) : res.replies));
    }
    queue = next;
  }
  assert.ok(a.engine.hasSession(A, `${B}/phone`));
  // SMP from b (an SMP1 TLV, type 2): a answers with an abort TLV (type 6); then a disconnect TLV.
  const tlvFromB = (text: string, tlvs: Tlv[]) => {
    const ctx = b.ports.store.getJson<{ session: SessionState; theirTag: number }>(B, 'ctx', `${A}/gw`)!;
    const h = { version: 3 as const, senderTag: b.ports.store.getJson<number>(B, 'instance', 'tag')!, receiverTag: ctx.theirTag };
    const m = encryptData(ctx.session, h, Buffer.from(text), tlvs);
    b.ports.store.putJson(B, 'ctx', `${A}/gw`, ctx);
    return parseXml(msg(`${B}/phone`, A, encodedText(encodeMessage(m))).toString());
  };
  const smp = await a.engine.decrypt(A, tlvFromB('', [{ type: 2, value: Buffer.alloc(10) }]));
  assert.ok(smp.ok && smp.body === null, 'SMP is not a message');
  assert.equal(smp.replies.length, 1);
  const dataFromA = decodeMessage((parseBody(smp.replies[0]!.getChildText('body')!) as { bytes: Buffer }).bytes);
  assert.equal(dataFromA.type, MSG_DATA);
  const copyOfB = structuredClone(b.ports.store.getJson<{ session: SessionState }>(B, 'ctx', `${A}/gw`)!.session);
  const opened = decryptData(copyOfB, dataFromA as Parameters<typeof decryptData>[1]);
  assert.ok(opened.ok && opened.tlvs.some((t) => t.type === 6), 'the reply carries the SMP abort TLV');
  const abort = await b.engine.decrypt(B, parseXml(smp.replies[0]!.toString().replace(`${B}/phone`, `${B}/gw`)));
  assert.ok(abort.ok && abort.body === null, 'the abort is readable by b and not a message');
  const enc = await a.engine.encrypt(A, B, 'to bob');
  assert.equal(enc.to, `${B}/phone`);
  const bye = await a.engine.decrypt(A, tlvFromB('', [{ type: 1, value: Buffer.alloc(0) }]));
  assert.ok(bye.ok && bye.body === null);
  assert.equal(a.engine.hasSession(A, `${B}/phone`), false, 'the disconnect TLV ends the session');
  await assert.rejects(a.engine.encrypt(A, B, 'after bye'), (e: unknown) => e instanceof GatewayError && e.code === 'no_otr_session');
  // A new session, then the contact's resource goes offline: the session ends with it.
  await pump([a, b], [msg(`${A}/gw`, B, '?OTRv23?')]);
  assert.ok(b.engine.hasSession(B, `${A}/gw`));
  b.engine.onUnavailable!(B, `${A}/gw`);
  assert.equal(b.engine.hasSession(B, `${A}/gw`), false, 'unavailable presence ends the session');
  const q = await a.engine.startSession(A, B);
  assert.equal(q[0]!.attrs.to, `${B}/gw`, 'the query goes to the last known full JID (the one of the last AKE)');
  assert.match(q[0]!.getChildText('body')!, /^\?OTRv23\?/);
  assert.deepEqual(await a.engine.startSession(A, B), [], 'not repeated at once');
});

test('the DSA key is generated off the event loop, once per JID however many ask at once, and stored', async () => {
  const a = side(A);
  // While the key is made (~300 ms of parameter search), the event loop keeps turning: an
  // immediate queued after the request runs before the key is there (generateKeyPairSync ran it first).
  let turned = false;
  const pending = Promise.all([a.engine.identity(A), a.engine.identity(A), a.engine.ensureIdentity(A).then(() => a.engine.identity(A))]);
  setImmediate(() => (turned = true));
  let doneFirst = false;
  void pending.then(() => (doneFirst = !turned));
  const [f1, f2, f3] = await pending;
  assert.equal(doneFirst, false, 'the event loop turned while the key was generated');
  const fp = (f1 as { otr: { fingerprint: string } }).otr.fingerprint;
  assert.match(fp, /^[0-9A-F]{40}$/i);
  assert.deepEqual([f2, f3], [f1, f1], 'one key for concurrent requests');
  // Stored: a restarted engine loads the same key (no new generation).
  a.restart();
  assert.deepEqual(await a.engine.identity(A), f1);
});
