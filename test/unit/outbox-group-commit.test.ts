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
import { OutboxStore, type NewMessage } from '../../keystore/outbox-store.js';
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

/** A worker over an in-memory queue, counting the full rescans. */
function memoryWorker(items: Array<QueuedItem<string>>, done: string[]) {
  let rescans = 0;
  const worker = new KeyedWorker<string>({
    name: 'test',
    pending: () => {
      rescans++;
      return [...items];
    },
    nextInLine: (key) => items.find((q) => q.key === key),
    process: async (item) => {
      await new Promise((r) => setImmediate(r));
      done.push(item);
      items.splice(items.findIndex((q) => q.item === item), 1);
    },
    concurrency: 4,
    idleMs: 60000,
    log: pino({ level: 'silent' }),
  });
  return { worker, rescans: () => rescans };
}

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
