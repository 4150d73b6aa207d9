// Issue 15 bug 2 and item 5: replayed legacy OMEMO messages, with the real engines on both sides.
// A user's PreKey message re-sent by another user of the domain with only fields outside the MAC
// changed (registrationId here) was delivered as from the second user; and replays after a restart
// must still be refused, without a session repair.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { FakeNetwork, makePeer, send, encryptedOf, reparse, openTestKeystore, type Peer } from './helpers/omemo-net.js';
import { TrustStore } from '../../keystore/trust-store.js';

const BOT = 'alerts@gw.example.org';
const ALICE = 'alice@example.org';
const MALLORY = 'mallory@example.org';

/** Rewrites a protobuf varint field (here a PreKeyWhisperMessage's registrationId, field 5). */
function withVarintField(msg: Buffer, field: number, value: number): Buffer {
  const out: number[] = [msg[0]!]; // version byte
  let pos = 1;
  const varint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const b = msg[pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) return v;
    }
  };
  const put = (v: number) => {
    do {
      let b = v % 128;
      v = Math.floor(v / 128);
      if (v > 0) b |= 0x80;
      out.push(b);
    } while (v > 0);
  };
  let replaced = false;
  while (pos < msg.length) {
    const tag = varint();
    const f = Math.floor(tag / 8);
    put(tag);
    if ((tag & 7) === 0) {
      const v = varint();
      put(f === field ? ((replaced = true), value) : v);
    } else {
      const len = varint();
      put(len);
      out.push(...msg.subarray(pos, pos + len));
      pos += len;
    }
  }
  assert.ok(replaced, `field ${field} present`);
  return Buffer.from(out);
}

/** The stanza `original` re-sent by `from`, each <key>'s PreKey message with another registrationId. */
function resentBy(original: Element, from: string, registrationId: number): Element {
  const enc = reparse(encryptedOf(original));
  for (const k of enc.getChild('header')!.getChildren('key')) {
    const data = withVarintField(Buffer.from(k.getText(), 'base64'), 5, registrationId);
    k.children = [data.toString('base64')];
  }
  return reparse(xml('message', { from: `${from}/phone`, to: BOT, type: 'chat', id: 'replay' }, enc));
}

async function rig(): Promise<{ net: FakeNetwork; alice: Peer; bot: Peer }> {
  const net = new FakeNetwork();
  const bot = await makePeer(net, BOT);
  const alice = await makePeer(net, ALICE);
  return { net, alice, bot };
}

test("bug 2: alice's PreKey message re-sent by mallory with another registrationId is a duplicate, not mallory's message", async () => {
  const { alice, bot } = await rig();
  const first = await send(alice, BOT, 'for the bot only');
  assert.ok(encryptedOf(first).getChild('header')!.getChild('key')!.attrs.prekey);
  const got = await bot.engine.decrypt(BOT, first);
  assert.equal(got.ok && got.body, 'for the bot only');
  for (const reg of [1, 4242, 0x7fffffff]) {
    const r = await bot.engine.decrypt(BOT, resentBy(first, MALLORY, reg));
    assert.equal(r.ok, false, `registrationId ${reg}: delivered as from mallory`);
    assert.equal(!r.ok && r.reason, 'duplicate');
    assert.deepEqual(r.replies, [], 'no repair or key transport for a replay');
  }
  // and under alice's own JID with the field changed
  const again = await bot.engine.decrypt(BOT, resentBy(first, ALICE, 7));
  assert.equal(!again.ok && again.reason, 'duplicate');
  // alice's next message still goes through
  const next = await bot.engine.decrypt(BOT, await send(alice, BOT, 'second'));
  assert.equal(next.ok && next.body, 'second');
});

test('item 5: after a restart, replays of PreKey and normal messages are refused as duplicates, with no repair', async () => {
  const net = new FakeNetwork();
  const ks = openTestKeystore();
  const bot = await makePeer(net, BOT, { ks, name: 'bot' });
  const alice = await makePeer(net, ALICE);
  const m1 = await send(alice, BOT, 'one');
  assert.equal((await bot.engine.decrypt(BOT, m1)).ok, true);
  // the bot answers, so alice's next message is a normal (non-PreKey) one
  assert.equal((await alice.engine.decrypt(ALICE, await send(bot, ALICE, 'ack'))).ok, true);
  const m2 = await send(alice, BOT, 'two');
  assert.equal(encryptedOf(m2).getChild('header')!.getChild('key')!.attrs.prekey, undefined);
  assert.equal((await bot.engine.decrypt(BOT, m2)).ok, true);
  // a restart: a new engine on the same keystore, with the prekey alice used already deleted
  bot.clock.advance(bot.engine.internals.opts.preKeyGraceMs + 1);
  await bot.engine.maintain?.();
  const restarted = await makePeer(net, BOT, { ks, name: 'bot', clock: bot.clock });
  for (const [name, m] of [['prekey', m1], ['normal', m2], ['prekey from mallory', resentBy(m1, MALLORY, 99)]] as const) {
    const r = await restarted.engine.decrypt(BOT, m);
    assert.equal(r.ok, false, name);
    assert.equal(!r.ok && r.reason, 'duplicate', name);
    assert.deepEqual(r.replies, [], `${name}: no session repair for a replay`);
  }
  const three = await restarted.engine.decrypt(BOT, await send(alice, BOT, 'three'));
  assert.equal(three.ok && three.body, 'three');
});

test('an identity key first seen under one JID is untrusted under a second one, whatever the policy', () => {
  for (const policy of ['btbv', 'tofu'] as const) {
    const trust = new TrustStore(openTestKeystore(), policy);
    assert.equal(trust.observe(MALLORY, 'omemo', '2002', 'BBBB'), 'trusted', policy);
    assert.equal(trust.observe(ALICE, 'omemo', '1001', 'AAAA'), 'trusted');
    assert.equal(trust.observe(MALLORY, 'omemo', '1001', 'AAAA'), 'untrusted', policy);
    // another protocol's key with the same fingerprint is another key
    assert.equal(trust.observe(MALLORY, 'pgp', 'k', 'AAAA'), 'trusted', policy);
  }
});

test('found by the fuzz test: a forged copy that triggers a session repair does not break the messages in flight or the repaired session', async () => {
  const { alice, bot } = await rig();
  const first = await bot.engine.decrypt(BOT, await send(alice, BOT, 'one'));
  for (const r of first.replies) await alice.engine.decrypt(ALICE, reparse(r));
  const normal = await send(alice, BOT, 'two');
  assert.equal(encryptedOf(normal).getChild('header')!.getChild('key')!.attrs.prekey, undefined);
  assert.equal((await bot.engine.decrypt(BOT, normal)).ok, true);
  for (const pos of [10, 20]) {
    // a copy with a bit flipped in the ratchet key: bad MAC, answered by a repair (a new session)
    const forged = reparse(normal);
    const k = encryptedOf(forged).getChild('header')!.getChild('key')!;
    const b = Buffer.from(k.getText(), 'base64');
    b[pos] = b[pos]! ^ 1;
    k.children = [b.toString('base64')];
    const f = await bot.engine.decrypt(BOT, forged);
    assert.equal(!f.ok && f.reason, 'bad-mac');
    assert.equal(f.replies.length, 1, 'a repair');
    // alice's message sent before she saw the repair, on the old session
    const inFlight = await send(alice, BOT, `in flight ${pos}`);
    for (const r of f.replies) assert.equal((await alice.engine.decrypt(ALICE, reparse(r))).ok, true);
    const a = await bot.engine.decrypt(BOT, inFlight);
    assert.equal(a.ok && a.body, `in flight ${pos}`);
    // and her next one, on the repaired session: the failed try on the old session left it intact
    const next = await bot.engine.decrypt(BOT, await send(alice, BOT, `after ${pos}`));
    assert.equal(next.ok && next.body, `after ${pos}`);
    bot.clock.advance(bot.engine.internals.opts.repairIntervalMs + 1);
  }
});
