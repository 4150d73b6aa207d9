// The inbound stanza queue (component/inbound-queue.ts): bounded concurrency, turns of the event
// loop between slices (so the socket and timers are served during a flood), bounded length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import { InboundQueue } from '../../component/inbound-queue.js';

const busy = (ms: number) => {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    /* synchronous work, as SQLite and key generation are */
  }
};

test('a flood of synchronous handlers: at most 64 run at once, timers run in between, all are handled in order of arrival', async () => {
  let running = 0;
  let maxRunning = 0;
  const order: number[] = [];
  let timerRuns = 0;
  const timer = setInterval(() => timerRuns++, 1);
  const q = new InboundQueue({
    maxQueued: 10_000,
    onDrop: () => assert.fail('nothing is dropped below the bound'),
    handle: async (el) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      order.push(Number(el.attrs.id));
      busy(0.5);
      await Promise.resolve();
      running--;
    },
  });
  for (let i = 0; i < 2000; i++) q.push(xml('iq', { id: String(i) }));
  await q.drain();
  clearInterval(timer);
  assert.equal(order.length, 2000);
  assert.deepEqual(order, [...order].sort((a, b) => a - b));
  assert.ok(maxRunning <= 64, `at most 64 at once (${maxRunning})`);
  // ~1 s of synchronous work in slices of 16: a 1 ms timer gets many turns in between.
  assert.ok(timerRuns >= 20, `timer turns during the flood: ${timerRuns}`);
  assert.equal(q.size, 0);
});

test('past maxQueued waiting stanzas, new ones are dropped', async () => {
  const dropped: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const q = new InboundQueue({ maxQueued: 100, onDrop: (el) => dropped.push(String(el.attrs.id)), handle: () => gate });
  for (let i = 0; i < 300; i++) q.push(xml('iq', { id: String(i) }));
  assert.ok(dropped.length >= 100, `dropped ${dropped.length}`);
  assert.ok(q.size <= 100 + 64);
  release();
  await q.drain();
  assert.equal(q.size, 0);
});

test('while blocked no new handler starts, pings (urgent) still do; kick() or the recheck resumes, in order', async () => {
  const order: string[] = [];
  let blocked = false;
  const q = new InboundQueue({
    maxQueued: 10_000,
    onDrop: () => assert.fail('nothing is dropped below the bound'),
    urgent: (el) => el.attrs.type === 'ping',
    blocked: () => blocked,
    handle: async (el) => {
      order.push(String(el.attrs.id));
      await Promise.resolve();
    },
  });
  const turn = () => new Promise((r) => setImmediate(r));
  for (let i = 0; i < 40; i++) q.push(xml('iq', { id: `a${i}` }));
  blocked = true;
  // The first slice may have started before `blocked`; once it is seen, nothing more starts.
  for (let k = 0; k < 5; k++) await turn();
  const startedWhileBlocked = order.length;
  assert.ok(startedWhileBlocked <= 16, `started: ${startedWhileBlocked}`);
  assert.equal(q.blocked, true);
  for (let k = 0; k < 5; k++) await turn();
  assert.equal(order.length, startedWhileBlocked);
  // A ping is handled at once, blocked or not.
  q.push(xml('iq', { id: 'ping1', type: 'ping' }));
  for (let k = 0; k < 3; k++) await turn();
  assert.equal(order.at(-1), 'ping1');
  assert.equal(order.length, startedWhileBlocked + 1);
  // kick() while still blocked: one look, blocked again.
  q.kick();
  for (let k = 0; k < 3; k++) await turn();
  assert.equal(order.length, startedWhileBlocked + 1);
  // Unblocked and kicked: the rest, in order of arrival.
  blocked = false;
  q.kick();
  await q.drain();
  assert.deepEqual(order.filter((id) => id !== 'ping1'), Array.from({ length: 40 }, (_, i) => `a${i}`));
  assert.equal(q.blocked, false);
});

test('blocked without a kick: the queue looks again on its own', async () => {
  let blocked = true;
  let handled = 0;
  const q = new InboundQueue({ maxQueued: 100, onDrop: () => assert.fail('no drop'), blocked: () => blocked, handle: async () => void handled++ });
  q.push(xml('iq', { id: '1' }));
  await new Promise((r) => setImmediate(r));
  assert.equal(handled, 0);
  blocked = false;
  // No kick(): the recheck timer (unref'd: it keeps no process alive, so this test holds one open) finds it unblocked.
  const hold = setTimeout(() => undefined, 5000);
  await q.drain();
  clearTimeout(hold);
  assert.equal(handled, 1);
});
