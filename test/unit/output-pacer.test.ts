// Output pacing (component/output-pacer.ts): what is held and when, markers and their return, round
// robin between recipients, shedding by size and age, and a server that does not route markers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { Metrics } from '../../http/metrics.js';
import { BEHIND_WINDOWS, MARKER_PREFIX, OutputPacer, outputPriority } from '../../component/output-pacer.js';

const GW = 'gw.example.org';

function rig(limits: { output_window?: number; max_held_output?: number; held_output_max_age?: number } = {}) {
  const written: string[] = [];
  let now = 1_000_000;
  let progress = 0;
  const metrics = new Metrics({ processMetrics: false });
  const pacer = new OutputPacer({
    domain: GW,
    limits: { output_window: 4000, max_held_output: 100_000, held_output_max_age: 30_000, ...limits },
    metrics,
    write: (text) => written.push(text),
    now: () => now,
    markerTimeoutMs: 10_000,
    onProgress: () => progress++,
  });
  /** What the caller does: offer, and write it at once if told to. */
  const send = (el: Element) => {
    const text = el.toString();
    if (pacer.offer(text, el)) {
      written.push(text);
      pacer.wrote(text.length);
    }
  };
  const markers = () => written.filter((t) => t.includes(MARKER_PREFIX));
  /** The server read everything up to the last marker and routed it back. */
  const echoLastMarker = () => {
    const id = /id="([^"]+)"/.exec(markers().at(-1)!)![1]!;
    return pacer.onInbound(xml('iq', { type: 'get', from: GW, to: GW, id }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  };
  const limited = async (name: string) => Number(new RegExp(`gateway_limited_total\\{limit="${name}"\\} (\\d+)`).exec((await metrics.render()).body)?.[1] ?? 0);
  return { pacer, written, send, markers, echoLastMarker, limited, advance: (ms: number) => (now += ms), progress: () => progress };
}

const error = (to: string, id: string) => xml('iq', { type: 'error', from: GW, to, id }, xml('error', { type: 'cancel' }, xml('item-not-found', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' })));
const pong = (to: string, id: string) => xml('iq', { type: 'result', from: GW, to, id });
const message = (to: string, id: string) => xml('message', { from: `alerts@${GW}`, to, id }, xml('body', {}, 'x'.repeat(200)));

test('outputPriority: errors and disco results are low; messages, presence, requests, pubsub results and empty results (pongs) high', () => {
  assert.equal(outputPriority(error('a@x', '1')), 'low');
  assert.equal(outputPriority(xml('iq', { type: 'result', to: 'a@x' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' }))), 'low');
  assert.equal(outputPriority(xml('message', { type: 'error', to: 'a@x' })), 'low');
  assert.equal(outputPriority(xml('iq', { type: 'result', to: 'a@x' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' }))), 'low');
  assert.equal(outputPriority(xml('iq', { type: 'result', to: 'a@x' }, xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }, xml('items', { node: 'eu.siacs.conversations.axolotl.devicelist' })))), 'high');
  assert.equal(outputPriority(pong('a@x', '1')), 'high');
  assert.equal(outputPriority(message('a@x', '1')), 'high');
  assert.equal(outputPriority(xml('presence', { to: 'a@x', type: 'subscribed' })), 'high');
  assert.equal(outputPriority(xml('iq', { type: 'get', to: 'a@x' }, xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }))), 'high');
});

test('past the window low-priority output is held, high-priority is not; a marker coming back releases it round robin', async () => {
  const r = rig();
  // Fill the window with errors to mallory: written until 4000 bytes are unconfirmed, with a marker every 2000.
  let i = 0;
  while (r.pacer.heldCount === 0) r.send(error('mallory@evil.example/x', `m${i++}`));
  assert.ok(r.pacer.unconfirmed >= 4000);
  assert.ok(r.markers().length >= 1, 'a marker every half window');
  for (let k = 0; k < 5; k++) r.send(error('mallory@evil.example/x', `m${i++}`));
  r.send(error('alice@good.example/y', 'a1'));
  // High priority goes now, held output or not.
  const before = r.written.length;
  r.send(pong('monitor@mon.example/z', 'p1'));
  r.send(message('bob@good.example', 'b1'));
  assert.deepEqual(
    r.written.slice(before).filter((t) => !t.includes(MARKER_PREFIX)).map((t) => /id="([^"]+)"/.exec(t)![1]),
    ['p1', 'b1'],
  );
  assert.equal(r.pacer.heldCount, 7);
  assert.ok((await r.limited('output_window')) >= 7);
  // The server read everything up to the last marker: the window reopens; alice's error goes
  // out second (round robin), not behind all of mallory's.
  const mark = r.written.length;
  assert.equal(r.echoLastMarker(), true);
  const released = r.written.slice(mark).filter((t) => !t.includes(MARKER_PREFIX));
  assert.ok(released.length >= 2);
  assert.match(released[0]!, /mallory/);
  assert.match(released[1]!, /alice/);
  // Stanzas that are not our markers are not consumed.
  assert.equal(r.pacer.onInbound(xml('iq', { type: 'get', from: 'mallory@evil.example/x', to: GW, id: `${MARKER_PREFIX}0` }, xml('ping', { xmlns: 'urn:xmpp:ping' }))), false);
  assert.equal(r.pacer.onInbound(pong(GW, 'x')), false);
  // Markers keep coming back until all is written.
  for (let n = 0; r.pacer.heldCount > 0 && n < 50; n++) r.echoLastMarker();
  assert.equal(r.pacer.heldCount, 0);
  assert.equal(r.written.filter((t) => t.includes('id="a1"')).length, 1);
});

test('no marker while only high-priority output flows (a bot sending messages); the first low-priority stanza then waits for one', () => {
  const r = rig();
  for (let k = 0; k < 200; k++) r.send(message(`bob${k}@good.example`, `b${k}`));
  assert.equal(r.markers().length, 0);
  assert.ok(r.pacer.unconfirmed > 4000);
  // Unconfirmed is past the window: the error waits for a marker's round trip.
  r.send(error('alice@good.example/y', 'a1'));
  assert.equal(r.pacer.heldCount, 1);
  assert.equal(r.markers().length, 1);
  r.echoLastMarker();
  assert.equal(r.pacer.heldCount, 0);
  assert.ok(r.written.at(-1)!.includes('id="a1"') || r.written.some((t) => t.includes('id="a1"')));
});

test('held output past max_held_output is shed from the recipient with the most held; past its age when its turn comes', async () => {
  const r = rig({ output_window: 1000, max_held_output: 2000, held_output_max_age: 5000 });
  let i = 0;
  while (r.pacer.heldCount === 0) r.send(error('mallory@evil.example/x', `m${i++}`));
  r.send(error('alice@good.example/y', 'a1'));
  for (let k = 0; k < 40; k++) r.send(error('mallory@evil.example/x', `m${i++}`));
  assert.ok(r.pacer.heldBytes <= 2000);
  assert.ok((await r.limited('max_held_output')) > 0);
  // Alice's one error was not the one shed.
  r.advance(1000);
  r.echoLastMarker();
  assert.ok(r.written.some((t) => t.includes('id="a1"')), "alice's error survived the shedding");
  // Six seconds later the rest is too old: shed, not written.
  r.advance(6000);
  const mark = r.written.length;
  for (let n = 0; r.pacer.heldCount > 0 && n < 50; n++) r.echoLastMarker();
  assert.equal(r.written.slice(mark).filter((t) => t.includes('mallory')).length, 0);
  assert.ok((await r.limited('held_output_max_age')) > 0);
});

test('a marker not back in time counts as read; three lost in a row turn holding off until one comes back', () => {
  const r = rig();
  let i = 0;
  while (r.pacer.heldCount === 0) r.send(error('mallory@evil.example/x', `m${i++}`));
  const held = r.pacer.heldCount;
  r.advance(10_000);
  r.pacer.tick();
  assert.ok(r.pacer.heldCount < held || r.pacer.unconfirmed < 4000, 'a lost marker released the window');
  assert.equal(r.pacer.off, false);
  for (let k = 0; k < 5 && !r.pacer.off; k++) {
    while (r.pacer.heldCount === 0) r.send(error('mallory@evil.example/x', `m${i++}`));
    r.advance(10_000);
    r.pacer.tick();
  }
  assert.equal(r.pacer.off, true, 'off after three lost markers');
  // Off: nothing is held, markers are still written now and then.
  for (let k = 0; k < 20; k++) r.send(error('mallory@evil.example/x', `m${i++}`));
  assert.equal(r.pacer.heldCount, 0);
  // One comes back (late): holding is on again.
  assert.equal(r.echoLastMarker(), true);
  assert.equal(r.pacer.off, false);
});

test('close() drops what is held and holds nothing more', () => {
  const r = rig();
  let i = 0;
  while (r.pacer.heldCount === 0) r.send(error('mallory@evil.example/x', `m${i++}`));
  r.pacer.close();
  assert.equal(r.pacer.heldCount, 0);
  assert.equal(r.pacer.offer('x', error('a@b', '1')), true);
});

test('behind: past BEHIND_WINDOWS unconfirmed windows of high-priority output (answers never held), with markers written for it; progress when they come back', () => {
  const r = rig();
  const result = (i: number) => xml('iq', { type: 'result', from: `p${i}@${GW}`, to: 'mallory@x/r', id: `r${i}` }, xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }, xml('items', { node: 'eu.siacs.conversations.axolotl.devicelist' }, 'x'.repeat(300))));
  // Answers only, below the mark: not behind, and no marker (nothing low-priority, nobody waiting).
  let i = 0;
  while (r.pacer.unconfirmed < BEHIND_WINDOWS * 4000 - 1000) r.send(result(i++));
  assert.equal(r.pacer.behind, false);
  assert.equal(r.markers().length, 0);
  // Over the mark with no marker out: the bytes so far are not known to be unread. One marker is
  // written to learn, and behind is still false; from then on a marker every half window.
  while (r.pacer.unconfirmed < BEHIND_WINDOWS * 4000) r.send(result(i++));
  assert.equal(r.pacer.behind, false);
  assert.equal(r.markers().length, 1);
  assert.equal(r.pacer.behind, true);
  for (let k = 0; k < 20; k++) r.send(result(i++));
  assert.ok(r.markers().length >= 3, `markers while behind: ${r.markers().length}`);
  // Every answer was written: none is held or shed.
  assert.equal(r.pacer.heldCount, 0);
  assert.equal(r.written.filter((t) => t.includes('type="result"')).length, i);
  // The server read everything up to the last marker: progress, and no longer behind.
  const before = r.progress();
  assert.equal(r.echoLastMarker(), true);
  assert.equal(r.progress(), before + 1);
  assert.equal(r.pacer.behind, false);
});

test('behind: a marker that never comes back counts as read after its timeout (progress), and with pacing off nothing is behind', () => {
  const r = rig();
  const result = (i: number) => xml('iq', { type: 'result', from: `p${i}@${GW}`, to: 'mallory@x/r', id: `r${i}` }, xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }, 'x'.repeat(500)));
  for (let round = 0; round < 3; round++) {
    let i = 0;
    while (r.pacer.unconfirmed < BEHIND_WINDOWS * 4000) r.send(result(i++));
    void r.pacer.behind; // writes a marker if none is out
    assert.equal(r.pacer.behind, true, `round ${round}`);
    const before = r.progress();
    r.advance(10_001);
    r.pacer.tick();
    // Each timed-out marker counts everything before it as read; later ones time out on later ticks.
    while (r.pacer.behind && r.progress() < before + 50) {
      r.advance(10_001);
      r.pacer.tick();
    }
    assert.ok(r.progress() > before);
  }
  // Three lost markers in a row: this server does not route them, pacing is off, never behind.
  assert.equal(r.pacer.off, true);
  for (let i = 0; i < 200; i++) r.send(result(i));
  assert.equal(r.pacer.behind, false);
});
