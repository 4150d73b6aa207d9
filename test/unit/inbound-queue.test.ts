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
