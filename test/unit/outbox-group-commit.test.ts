// The outbox's group commit (OutboxStore.accept, markDeliveredSoon) and the outbox worker's one-line
// kick (KeyedWorker.kick(key)): what a turn accepts is committed in one transaction before any of its
// callers hears "accepted", and a crash right after that loses nothing and keeps the order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Keystore } from '../../keystore/keystore.js';
import { DELIVERED_DEFER_MS, OutboxStore, type NewMessage } from '../../keystore/outbox-store.js';
import { KeyedWorker, type QueuedItem } from '../../keyed-worker.js';
import { TEST_KDF } from '../harness/keystores.js';

const PASS = 'passphrase-for-group-commit';
const msg = (body: string, extra: Partial<NewMessage> = {}): NewMessage => ({ bot: 'bot', to: 'x@example.org', body, encryption: null, idempotencyKey: null, ttlMs: 60000, ...extra });

function tempKeystore(): { path: string; ks: Keystore; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'gw-gc-'));
  const path = join(dir, 'gw.db');
  const ks = Keystore.open(path, PASS, { kdf: TEST_KDF });
  return { path, ks, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('accept: a turn of messages is committed before any of them resolves; a crash right after loses nothing, order kept', async () => {
  const t = tempKeystore();
  try {
    const outbox = new OutboxStore(t.ks);
    // A second connection sees only what is committed (a crash of the first would leave exactly that).
    const other = Keystore.open(t.path, PASS, { kdf: TEST_KDF });
    const committed = () => other.db.prepare<[], { id: string }>("SELECT id FROM outbox WHERE status = 'queued' ORDER BY seq").all().map((r) => r.id);
    const seenAtResolve: string[][] = [];
    const pending = Array.from({ length: 20 }, (_, i) =>
      outbox.accept(msg(`m${i}`)).then((r) => {
        seenAtResolve.push(committed());
        return r;
      }),
    );
    assert.deepEqual(committed(), [], 'nothing is committed within the turn that accepted it');
    const results = await Promise.all(pending);
    const ids = results.map((r) => r.message.id);
    for (const seen of seenAtResolve) assert.deepEqual(seen, ids, 'every message of the batch committed when the first caller hears of it');
    // The crash: the first connection is dropped without a clean close; a fresh store finds every message, in order.
    other.close();
    const again = Keystore.open(t.path, PASS, { kdf: TEST_KDF });
    const o2 = new OutboxStore(again);
    assert.deepEqual(o2.queued(100).map((m) => m.id), ids);
    assert.equal(o2.body(ids[7]!), 'm7');
    assert.equal(o2.nextInLine('bot', 'x@example.org')?.id, ids[0]);
    // What accept() answered is the row as stored.
    assert.deepEqual(results[3]!.message, o2.get(ids[3]!));
    again.close();
  } finally {
    t.ks.close();
    t.done();
  }
});

test('accept: the same Idempotency-Key twice in one turn gives one message; a failing message fails alone', async () => {
  const t = tempKeystore();
  try {
    const outbox = new OutboxStore(t.ks);
    const existing = outbox.enqueue(msg('before')).message.id;
    const [a, b, c, dup, d] = await Promise.allSettled([
      outbox.accept(msg('once', { idempotencyKey: 'k1' })),
      outbox.accept(msg('once', { idempotencyKey: 'k1' })),
      outbox.accept(msg('other body', { idempotencyKey: 'k1' })),
      outbox.accept(msg('same id as a stored row', { id: existing })),
      outbox.accept(msg('after')),
    ]);
    assert.ok(a.status === 'fulfilled' && a.value.created);
    assert.ok(b.status === 'fulfilled' && !b.value.created && b.value.sameRequest && b.value.message.id === a.value.message.id);
    assert.ok(c.status === 'fulfilled' && !c.value.created && !c.value.sameRequest);
    assert.equal(dup.status, 'rejected');
    assert.ok(d.status === 'fulfilled' && d.value.created);
    assert.deepEqual(outbox.queued(10).map((m) => m.id), [existing, a.value.message.id, d.value.message.id]);
  } finally {
    t.ks.close();
    t.done();
  }
});

test('markSentSoon, markDeliveredSoon: committed with the turn, true only for a sent message to that recipient; close flushes', async () => {
  const t = tempKeystore();
  try {
    const outbox = new OutboxStore(t.ks);
    const id = outbox.enqueue(msg('m')).message.id;
    assert.equal(await outbox.markDeliveredSoon(id, 'x@example.org'), false, 'not sent yet');
    assert.deepEqual(await Promise.all([outbox.markSentSoon(id, 'omemo'), outbox.markSentSoon(id, 'omemo')]), [true, false], 'queued -> sent once');
    assert.equal(outbox.body(id), null, 'the body is wiped with it');
    const [wrong, right, twice] = await Promise.all([outbox.markDeliveredSoon(id, 'y@example.org'), outbox.markDeliveredSoon(id, 'x@example.org'), outbox.markDeliveredSoon(id, 'x@example.org')]);
    assert.deepEqual([wrong, right, twice], [false, true, false]);
    assert.equal(outbox.get(id)?.status, 'delivered');
    // Accepted just before the keystore closes: committed by the close, not dropped.
    const late = outbox.accept(msg('late'));
    t.ks.close();
    const { message } = await late;
    const again = Keystore.open(t.path, PASS, { kdf: TEST_KDF });
    assert.equal(new OutboxStore(again).get(message.id)?.status, 'queued');
    again.close();
  } finally {
    t.ks.close();
    t.done();
  }
});

test("a bot's receipt: only that bot's sent message to that sender; it waits for the next transaction, or the timer", async () => {
  const t = tempKeystore();
  try {
    const outbox = new OutboxStore(t.ks);
    const other = Keystore.open(t.path, PASS, { kdf: TEST_KDF });
    const status = (id: string) => other.db.prepare<[string], { status: string }>('SELECT status FROM outbox WHERE id = ?').get(id)?.status;
    const id = outbox.enqueue(msg('m')).message.id;
    const bridged = outbox.enqueue(msg('b', { bot: 'proxy@gw', origin: { local: 'proxy@gw', from: 'a@x', fromFull: 'a@x/r', stanzaId: null, encryption: 'omemo', receiptRequested: false } })).message.id;
    outbox.markSent(id, 'omemo');
    outbox.markSent(bridged, 'omemo');
    assert.deepEqual(
      await Promise.all([outbox.markDeliveredSoon(id, 'x@example.org', Date.now(), 'another-bot'), outbox.markDeliveredSoon(bridged, 'x@example.org', Date.now(), 'proxy@gw')]),
      [false, false],
      "another bot's receipt, and a bot receipt for a bridged message, mark nothing",
    );
    // Alone, a receipt is committed by the timer, not at once.
    const started = Date.now();
    let settled = false;
    const alone = outbox.markDeliveredSoon(id, 'x@example.org', Date.now(), 'bot').then((r) => ((settled = true), r));
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'no transaction of its own in this turn');
    assert.equal(status(id), 'sent');
    assert.equal(await alone, true);
    assert.ok(Date.now() - started >= DELIVERED_DEFER_MS - 2);
    assert.equal(status(id), 'delivered');
    // With a POST in the same turn: both in its transaction.
    const id2 = outbox.enqueue(msg('m2')).message.id;
    outbox.markSent(id2, 'omemo');
    const receipt = outbox.markDeliveredSoon(id2, 'x@example.org', Date.now(), 'bot');
    await outbox.accept(msg('next'));
    assert.equal(status(id2), 'delivered', 'committed with the accept');
    assert.equal(await receipt, true);
    other.close();
  } finally {
    t.ks.close();
    t.done();
  }
});

/** A worker over an in-memory queue, counting the full rescans and the reads of a line's head. */
function memoryWorker(items: Array<QueuedItem<string>>, done: string[], retryOnce = new Set<string>()) {
  let rescans = 0;
  let reads = 0;
  const worker = new KeyedWorker<string>({
    name: 'test',
    pending: () => {
      rescans++;
      return [...items];
    },
    nextInLine: (key) => {
      reads++;
      return items.find((q) => q.key === key);
    },
    process: async (item) => {
      await new Promise((r) => setImmediate(r));
      if (retryOnce.delete(item)) {
        items.find((q) => q.item === item)!.dueAt = Date.now() + 60000;
        return false;
      }
      done.push(item);
      items.splice(items.findIndex((q) => q.item === item), 1);
      return true;
    },
    concurrency: 4,
    idleMs: 60000,
    log: pino({ level: 'silent' }),
  });
  return { worker, rescans: () => rescans, reads: () => reads };
}

test('kick(key, item): a known line takes new items from memory, idle or busy; a retry, or an item added another way, makes it read again', async () => {
  const items: Array<QueuedItem<string>> = [];
  const done: string[] = [];
  const retry = new Set<string>();
  const { worker, reads } = memoryWorker(items, done, retry);
  worker.start();
  await new Promise((r) => setImmediate(r));
  const until = async (f: () => boolean) => {
    for (let i = 0; i < 1000 && !f(); i++) await new Promise((r) => setImmediate(r));
  };
  const add = (item: string, withItem = true) => {
    const q = { key: 'a', dueAt: 0, item };
    items.push(q);
    worker.kick('a', withItem ? q : undefined);
  };
  // Not known empty yet: the head is read, and the line seen empty after it.
  add('a0');
  await until(() => done.length === 1);
  const r0 = reads();
  assert.ok(r0 >= 2, 'read the head, then found the line empty');
  // Known empty now: each new item starts its line with no read at all.
  for (let i = 1; i <= 3; i++) {
    add(`a${i}`);
    await until(() => done.length === i + 1);
  }
  assert.equal(reads(), r0, 'no read for items given to an empty line');
  // Two in one turn: the second comes while the line is busy and is taken next from memory.
  add('a4');
  add('a5');
  await until(() => done.length === 6);
  assert.deepEqual(done, ['a0', 'a1', 'a2', 'a3', 'a4', 'a5']);
  assert.equal(reads(), r0, 'an item added to a busy known line is not read back either');
  // One added without its item while the line is busy (another writer): the line is read again.
  add('a4b');
  add('a5b', false);
  await until(() => done.length === 8);
  assert.deepEqual(done.slice(6), ['a4b', 'a5b']);
  assert.ok(reads() > r0, 'read again after an item came without kick(key, item)');
  // Empty again; an item that is retried stays at the head: a newer one waits behind it.
  await until(() => false);
  retry.add('a6');
  add('a6');
  await until(() => !retry.has('a6'));
  await new Promise((r) => setImmediate(r));
  add('a7');
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.ok(!done.includes('a7') && !done.includes('a6'), 'the new item waits behind the retry');
  // Another writer adds to a line known empty and calls kick(): no line is known empty any more, so
  // an item given with kick(key, item) right after waits behind that one.
  const addB = (item: string) => {
    const q = { key: 'b', dueAt: 0, item };
    items.push(q);
    return q;
  };
  worker.kick('b', addB('b0'));
  await until(() => done.includes('b0'));
  await until(() => false);
  addB('b1');
  worker.kick();
  worker.kick('b', addB('b2'));
  await until(() => done.includes('b2') && done.includes('b1'));
  assert.deepEqual(done.filter((x) => x.startsWith('b')), ['b0', 'b1', 'b2']);
  items.splice(0, items.length);
  await worker.stop();
});

test('kick(key): a new item starts its line without a rescan of everything, and waits behind a retry at its head', async () => {
  const items: Array<QueuedItem<string>> = [];
  const done: string[] = [];
  const { worker, rescans } = memoryWorker(items, done);
  worker.start();
  await new Promise((r) => setImmediate(r));
  const before = rescans();
  for (let i = 0; i < 5; i++) {
    items.push({ key: 'a', dueAt: 0, item: `a${i}` });
    worker.kick('a');
    items.push({ key: 'b', dueAt: 0, item: `b${i}` });
    worker.kick('b');
  }
  const until = async (f: () => boolean) => {
    for (let i = 0; i < 1000 && !f(); i++) await new Promise((r) => setImmediate(r));
  };
  await until(() => done.length === 10);
  assert.deepEqual(done.filter((x) => x.startsWith('a')), ['a0', 'a1', 'a2', 'a3', 'a4']);
  assert.deepEqual(done.filter((x) => x.startsWith('b')), ['b0', 'b1', 'b2', 'b3', 'b4']);
  assert.equal(rescans(), before, 'no full rescan for items added to lines');
  // A retry waits at the head of line c (not due for a minute): a newer item of c must not overtake it.
  items.push({ key: 'c', dueAt: Date.now() + 60000, item: 'c-retry' });
  items.push({ key: 'c', dueAt: 0, item: 'c-new' });
  worker.kick('c');
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.ok(!done.includes('c-new') && !done.includes('c-retry'));
  items.splice(0, items.length);
  await worker.stop();
});

test('markSentLater: no transaction of its own; rides on the next accept or the timer; a crash before leaves it queued (sent again); reads of the queue commit it first', async () => {
  const t = tempKeystore();
  try {
    const outbox = new OutboxStore(t.ks);
    const other = Keystore.open(t.path, PASS, { kdf: TEST_KDF });
    const status = (id: string) => other.db.prepare<[string], { status: string }>('SELECT status FROM outbox WHERE id = ?').get(id)?.status;
    const [a, b, c] = ['a', 'b', 'c'].map((body) => outbox.enqueue(msg(body)).message.id) as [string, string, string];
    // The crash window: marked (the stanza written) but not committed yet. What another connection
    // sees is what a crash would leave: the message queued, sent again (under the same id) after a restart.
    const markA = outbox.markSentLater(a, 'omemo');
    await Promise.resolve();
    assert.equal(status(a), 'queued', 'not committed: a crash now sends it again');
    // The next POST's transaction carries it, in order with later marks.
    const markB = outbox.markSentLater(b, 'omemo');
    const accepted = await outbox.accept(msg('d'));
    assert.deepEqual([status(a), status(b)], ['sent', 'sent'], 'committed with the accept');
    assert.deepEqual(await Promise.all([markA, markB]), [true, true]);
    // Alone: committed by the timer.
    const started = Date.now();
    const markC = outbox.markSentLater(c, 'omemo');
    assert.equal(status(c), 'queued');
    assert.equal(await markC, true);
    assert.ok(Date.now() - started >= DELIVERED_DEFER_MS - 2, 'no transaction of its own: the timer committed it');
    assert.equal(status(c), 'sent');
    // A read of the queue while a mark waits commits it first: a sent message is never read back as queued.
    const d = accepted.message.id;
    void outbox.markSentLater(d, 'omemo');
    assert.equal(outbox.nextInLine('bot', 'x@example.org'), undefined);
    assert.equal(status(d), 'sent', 'committed by the read');
    const e = outbox.enqueue(msg('e')).message.id;
    void outbox.markSentLater(e, 'omemo');
    assert.deepEqual(outbox.queued(10), []);
    assert.equal(outbox.get(e)?.status, 'sent');
    other.close();
  } finally {
    t.ks.close();
    t.done();
  }
});
