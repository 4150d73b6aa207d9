// OMEMO 2 session records: the binary form (session-record.ts) round-trips every field, and sessions
// stored in the JSON form the engine wrote before it (toStoredSession) carry over: after an upgrade
// they continue in both directions with no new key exchange, a skipped message key and an
// unconfirmed key exchange included, and are written back in the binary form.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import type { Keystore } from '../../keystore/keystore.js';
import { NS_OMEMO2 } from '../../bridges/omemo2/constants.js';
import { toStoredSession, type Session } from '../../bridges/omemo2/session.js';
import { decodeSession, encodeSession, isBinarySession } from '../../bridges/omemo2/session-record.js';
import { parseEncrypted } from '../../bridges/omemo2/wire.js';
import { generateX25519, random } from '../../bridges/ratchet/primitives.js';
import { Clock, FakeNetwork, reparse } from './helpers/omemo-net.js';
import { makeDual, type Dual } from './helpers/omemo2-net.js';

const msg = (from: string, to: string, children: Element[]) => reparse(xml('message', { from: `${from}/gw`, to, type: 'chat', id: 'x' }, ...children));
const kexOf = (stanza: Element, to: string) => parseEncrypted(stanza.getChild('encrypted', NS_OMEMO2)!)!.keys.get(to)![0]!.kex;

async function send(a: Dual, b: Dual, body: string): Promise<Element> {
  return msg(a.jid, b.jid, (await a.omemo2.encrypt(a.jid, b.jid, body)).children);
}

async function read(to: Dual, stanza: Element, body: string | null): Promise<Element[]> {
  const r = await to.omemo2.decrypt(to.jid, stanza);
  assert.ok(r.ok, `${to.jid} reads ${String(body)}: ${r.ok ? '' : r.reason}`);
  assert.equal(r.body, body);
  return r.replies.map(reparse);
}

const sessionRows = (ks: Keystore) =>
  ks.db.prepare<[], { owner: string; key: string }>("SELECT owner, key FROM kv WHERE protocol = 'omemo2' AND kind = 'session'").all();

function session(over: Partial<Session> = {}): Session {
  const skipped = new Map([[`${random(32).toString('base64')}:7`, random(32)], [`${random(32).toString('base64')}:9`, random(32)]]);
  return {
    ad: random(64),
    ratchet: { rk: random(32), dhs: generateX25519(), dhr: random(32), cks: random(32), ckr: null, ns: 300, nr: 2, pn: 128, skipped },
    theirIk: random(32),
    kex: { pkId: 77, spkId: 3, ek: random(32) },
    ek: random(32),
    initiator: true,
    previous: null,
    ...over,
  };
}

test('the binary record keeps every field, the replaced session too, and reads the JSON form', () => {
  const prev = session({ kex: null, initiator: false });
  prev.ratchet.dhr = null;
  prev.ratchet.cks = null;
  const s = session({ previous: prev });
  const bytes = encodeSession(s);
  assert.ok(isBinarySession(bytes));
  assert.ok(bytes.length < 1000, `two sessions and four skipped keys: record of ${bytes.length} bytes`);
  assert.deepEqual(toStoredSession(decodeSession(bytes)), toStoredSession(s));
  const json = Buffer.from(JSON.stringify(toStoredSession(s)));
  assert.deepEqual(toStoredSession(decodeSession(json)), toStoredSession(s));
  const steady = session({ kex: null });
  steady.ratchet.skipped.clear();
  assert.ok(encodeSession(steady).length < 350, 'a steady session is under 350 bytes');
  assert.throws(() => decodeSession(bytes.subarray(0, bytes.length - 1)), /truncated/);
  assert.throws(() => decodeSession(Buffer.concat([bytes, Buffer.of(0)])), /trailing/);
});

test('sessions stored as JSON before the upgrade continue both ways with no new key exchange, then are stored in the binary form', async () => {
  const net = new FakeNetwork();
  const clock = new Clock();
  let a = await makeDual(net, 'alice@gw.example', { clock });
  let b = await makeDual(net, 'bob@gw.example', { clock });
  let c = await makeDual(net, 'carol@gw.example', { clock });
  // a <-> b confirmed; one message of a's is held back (b keeps its key as skipped once the next arrives).
  const [completion] = await read(b, await send(a, b, 'first'), 'first');
  await read(a, completion!, null);
  const held = await send(a, b, 'held back');
  await read(b, await send(a, b, 'after the held one'), 'after the held one');
  await read(a, await send(b, a, 'reply'), 'reply');
  // c -> b unconfirmed: b's completion never reaches c, so c still wraps its messages in a key exchange.
  await read(b, await send(c, b, 'from carol'), 'from carol');

  // The rows as the engine wrote them before the binary form: JSON of toStoredSession.
  for (const d of [a, b, c]) {
    const store = createProtocolStore(d.ks, 'omemo2');
    const rows = sessionRows(d.ks);
    assert.ok(rows.length > 0);
    for (const { owner, key } of rows) {
      store.putJson(owner, 'session', key, toStoredSession(decodeSession(store.get(owner, 'session', key)!)));
      assert.equal(store.get(owner, 'session', key)![0], 0x7b, 'stored as JSON');
    }
  }
  // The upgrade: new engines on the same keystores.
  a = await makeDual(net, a.jid, { ks: a.ks, clock });
  b = await makeDual(net, b.jid, { ks: b.ks, clock });
  c = await makeDual(net, c.jid, { ks: c.ks, clock });

  await read(b, held, 'held back');
  for (let i = 0; i < 5; i++) {
    const m = await send(a, b, `a ${i}`);
    assert.equal(kexOf(m, b.jid), false, 'no new key exchange a -> b');
    await read(b, m, `a ${i}`);
    const back = await send(b, a, `b ${i}`);
    assert.equal(kexOf(back, a.jid), false, 'no new key exchange b -> a');
    await read(a, back, `b ${i}`);
  }
  const again = await send(c, b, 'carol again');
  assert.equal(kexOf(again, b.jid), true, 'still the unconfirmed key exchange');
  const replies = await read(b, again, 'carol again');
  assert.equal(replies.length, 0, 'the same session, not a new one: no second completion');
  const toCarol = await send(b, c, 'to carol');
  assert.equal(kexOf(toCarol, c.jid), false);
  await read(c, toCarol, 'to carol');
  const confirmed = await send(c, b, 'confirmed');
  assert.equal(kexOf(confirmed, b.jid), false, 'confirmed by the reply');
  await read(b, confirmed, 'confirmed');

  for (const d of [a, b, c]) {
    const store = createProtocolStore(d.ks, 'omemo2');
    for (const { owner, key } of sessionRows(d.ks)) assert.ok(isBinarySession(store.get(owner, 'session', key)!), `${owner} ${JSON.stringify(key)} rewritten`);
  }
});
