// The stores on both backends: SQLite (keystore.path) and PostgreSQL (keystore.url, through the
// working copy and its write-through). What one backend keeps across a reopen, the other keeps too;
// nothing secret is readable at rest; on PostgreSQL not even the JIDs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { ELSEWHERE_SQL, TrustStore } from '../../keystore/trust-store.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { OutboxStore } from '../../keystore/outbox-store.js';
import { WebhookStore } from '../../keystore/webhook-store.js';
import { ReplayStore } from '../../keystore/replay-store.js';
import { SubscriptionStore } from '../../keystore/subscription-store.js';
import { PubsubStore } from '../../keystore/pubsub-store.js';
import type { Keystore } from '../../keystore/keystore.js';
import { FencedError, PgBackend, WriteThrough } from '../../keystore/pg/backend.js';
import { Lease } from '../../keystore/pg/lease.js';
import { GatewayError } from '../../errors.js';
import { Postgres } from '../harness/postgres.js';
import request from 'supertest';
import { pino } from 'pino';
import { validateConfig } from '../../config.js';
import { Metrics } from '../../http/metrics.js';
import { standbyApp } from '../../ha/standby-app.js';
import { HandoffImporter } from '../../ha/handoff.js';
import { pgKeystore, sqliteKeystore, TEST_KDF, type TestKeystore } from '../harness/keystores.js';

const PASS = 'passphrase-for-backend-tests';
const SECRET = 'PRIVATE-KEY-MATERIAL-CANARY';
const BODY = 'outbox-body-canary-7f3a';
const CONTACT = 'canary-contact@example.org';

let pgServer: Postgres;
before(async () => {
  pgServer = await Postgres.start();
});
after(async () => {
  await pgServer?.stop();
});

/** Writes through every store, the way the engines and the API do. */
function fill(ks: Keystore): { msgId: string; evtId: string } {
  const kv = createProtocolStore(ks, 'omemo');
  kv.put('bot@gw', 'identity', 'current', SECRET);
  kv.putJson('bot@gw', 'session', `${CONTACT}.1`, { chain: 1 });
  kv.putJson('bot@gw', 'session', `${CONTACT}.2`, { chain: 2 });
  kv.put('bot@gw', 'prekey', '1', 'pk1');
  kv.put('bot@gw', 'prekey', '2', 'pk2');
  kv.transaction(() => {
    kv.delete('bot@gw', 'prekey', '1');
    kv.putJson('bot@gw', 'session', `${CONTACT}.1`, { chain: 3 });
  });
  kv.deleteKind('bot@gw', 'nothing-here');
  const trust = new TrustStore(ks, 'btbv');
  trust.observe(CONTACT, 'omemo', '1', 'fp1');
  trust.observe(CONTACT, 'omemo', '2', 'fp2');
  trust.set(CONTACT, 'omemo', 'fp2', 'verified');
  const contacts = new ContactStore(ks);
  contacts.setPreferredProtocol(CONTACT, 'omemo');
  contacts.setLastProtocol('bot@gw', CONTACT, 'omemo');
  new ReplayStore(ks).add('pgp', Buffer.from('00ff10', 'hex'), 1000);
  new ReplayStore(ks).add('pgp', Buffer.from('00ff11', 'hex'), 2000);
  new SubscriptionStore(ks).update('bot@gw', CONTACT, { from: true, to: true });
  new PubsubStore(ks).publish('bot@gw', 'urn:xmpp:omemo:2:bundles', { accessModel: 'open', maxItems: 10 } as never, '1', '<bundle/>');
  const outbox = new OutboxStore(ks);
  const a = outbox.enqueue({ bot: 'bot', to: CONTACT, body: BODY, encryption: null, idempotencyKey: 'k1', ttlMs: 60000 });
  assert.ok(a.created);
  const b = outbox.enqueue({ bot: 'bot', to: CONTACT, body: `${BODY}-2`, encryption: null, idempotencyKey: null, ttlMs: 60000 });
  assert.ok(b.created && outbox.markSent(b.message.id, 'omemo'));
  const hooks = new WebhookStore(ks);
  const evtId = hooks.enqueue('bot', CONTACT, { id: WebhookStore.newId(), type: 'message', body: `${BODY}-webhook` });
  hooks.enqueue('bot', CONTACT, { id: 'evt_second', type: 'message', body: 'second' });
  hooks.markDelivered('evt_second');
  return { msgId: a.message.id, evtId };
}

function check(ks: Keystore, ids: { msgId: string; evtId: string }): void {
  const kv = createProtocolStore(ks, 'omemo');
  assert.equal(kv.get('bot@gw', 'identity', 'current')?.toString(), SECRET);
  assert.deepEqual(kv.getJson('bot@gw', 'session', `${CONTACT}.1`), { chain: 3 });
  assert.deepEqual(kv.list('bot@gw', 'prekey').map((x) => [x.key, x.value.toString()]), [['2', 'pk2']]);
  const trust = new TrustStore(ks, 'btbv');
  assert.deepEqual(trust.list(CONTACT, 'omemo').map((d) => [d.deviceId, d.trust]), [['1', 'trusted'], ['2', 'verified']]);
  assert.equal(new ContactStore(ks).lastProtocol('bot@gw', CONTACT), 'omemo');
  assert.ok(new ReplayStore(ks).has('pgp', Buffer.from('00ff10', 'hex')));
  assert.equal(new ReplayStore(ks).count('pgp'), 2);
  assert.equal(new SubscriptionStore(ks).get('bot@gw', CONTACT).from, true);
  assert.equal(new PubsubStore(ks).items('bot@gw', 'urn:xmpp:omemo:2:bundles').length, 1);
  const outbox = new OutboxStore(ks);
  assert.equal(outbox.body(ids.msgId), BODY);
  assert.equal(outbox.queued(10).length, 1);
  // The idempotency key still answers with the same message; seq goes on after a reopen.
  const again = outbox.enqueue({ bot: 'bot', to: CONTACT, body: BODY, encryption: null, idempotencyKey: 'k1', ttlMs: 60000 });
  assert.ok(!again.created && again.message.id === ids.msgId && again.sameRequest);
  const hooks = new WebhookStore(ks);
  assert.match(hooks.payload(ids.evtId) ?? '', /webhook/);
  assert.deepEqual(hooks.heads('bot', 10).map((h) => h.id), [ids.evtId]);
  assert.equal(hooks.get('evt_second')?.status, 'delivered');
}

for (const kind of ['sqlite', 'postgresql'] as const) {
  describe(`stores on ${kind}`, () => {
    const open = async (): Promise<TestKeystore> => (kind === 'sqlite' ? sqliteKeystore(PASS) : pgKeystore(await pgServer.createDatabase(), PASS));

    test('every store keeps its state across a reopen; nothing secret is readable at rest', async () => {
      const t = await open();
      try {
        const ids = fill(t.ks);
        check(t.ks, ids);
        await t.commit();
        check(await t.reopen(), ids);
        // Changes after a reopen are kept too (the write-through goes on with the new copy).
        new OutboxStore(t.ks).markFailed(ids.msgId, 'expired', 'x');
        createProtocolStore(t.ks, 'omemo').delete('bot@gw', 'session', `${CONTACT}.2`);
        const ks = await t.reopen();
        assert.equal(new OutboxStore(ks).get(ids.msgId)?.status, 'failed');
        assert.equal(createProtocolStore(ks, 'omemo').get('bot@gw', 'session', `${CONTACT}.2`), undefined);
        const raw = await t.raw();
        for (const canary of [SECRET, BODY, 'chain']) assert.ok(!raw.includes(Buffer.from(canary)), `${canary} readable at rest`);
        // SQLite keeps JIDs in the clear (indexed columns); PostgreSQL seals whole rows and keys.
        if (kind === 'postgresql') assert.ok(!raw.includes(Buffer.from('canary-contact')), 'a JID readable in PostgreSQL');
      } finally {
        await t.close();
      }
    });

    test('the same-identity-key check (a key under a second JID) reads the devices_by_fingerprint index, not the whole table', async () => {
      const t = await open();
      try {
        const plan = (ks: Keystore) =>
          ks.db
            .prepare<[string, string, string], { detail: string }>(`EXPLAIN QUERY PLAN ${ELSEWHERE_SQL}`)
            .all('omemo', 'fp1', CONTACT)
            .map((r) => r.detail)
            .join('; ');
        assert.match(plan(t.ks), /USING (COVERING )?INDEX devices_by_fingerprint/);
        const trust = new TrustStore(t.ks, 'btbv');
        trust.observe(CONTACT, 'omemo', '1', 'fp1');
        assert.equal(trust.observe('second@example.org', 'omemo', '7', 'fp1'), 'untrusted', 'the key under a second JID');
        await t.commit();
        assert.match(plan(await t.reopen()), /USING (COVERING )?INDEX devices_by_fingerprint/);
      } finally {
        await t.close();
      }
    });

    test('outbox and webhook queues: order per line, sent bodies wiped, delivered webhooks leave the line', async () => {
      const t = await open();
      try {
        const outbox = new OutboxStore(t.ks);
        const ids = [1, 2, 3].map((i) => outbox.enqueue({ bot: 'bot', to: 'x@example.org', body: `m${i}`, encryption: null, idempotencyKey: null, ttlMs: 60000 }).message.id);
        assert.ok(outbox.markSent(ids[0]!, 'omemo'));
        await t.commit();
        const ks = await t.reopen();
        const o2 = new OutboxStore(ks);
        assert.equal(o2.nextInLine('bot', 'x@example.org')?.id, ids[1]);
        assert.equal(o2.body(ids[0]!), null);
        const id4 = o2.enqueue({ bot: 'bot', to: 'x@example.org', body: 'm4', encryption: null, idempotencyKey: null, ttlMs: 60000 }).message.id;
        assert.deepEqual(o2.queued(10).map((m) => m.id), [ids[1], ids[2], id4]);
      } finally {
        await t.close();
      }
    });
  });
}

describe('PostgreSQL: passphrase, fencing, standby-accepted messages', () => {
  test('a wrong passphrase is refused; a second instance with the right one opens the same keystore', async () => {
    const url = await pgServer.createDatabase();
    const a = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    await assert.rejects(PgBackend.open(url, 'not the passphrase', { kdf: TEST_KDF }), (e: unknown) => e instanceof GatewayError && e.code === 'keystore_passphrase_wrong');
    const b = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    assert.equal(a.rowId('kv', '["x"]'), b.rowId('kv', '["x"]'));
    await a.close();
    await b.close();
  });

  test('after a takeover the former holder can write nothing: its batch is refused and nothing of it lands', async () => {
    const url = await pgServer.createDatabase();
    const old = await pgKeystore(url, PASS);
    createProtocolStore(old.ks, 'omemo').put('bot@gw', 'session', 'a', 'before');
    await old.commit();
    // The lease expires in the database (as when the holder is paused), a standby takes it.
    await old.backend.pool.query("UPDATE gw_lease SET expires_at = now() - interval '1 second'");
    const other = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    const lease = new Lease(other.pool, 'standby', 30_000);
    assert.ok(await lease.tryAcquire());
    assert.equal(lease.epoch, String(Number(old.lease.epoch) + 1));
    createProtocolStore(old.ks, 'omemo').put('bot@gw', 'session', 'a', 'after-takeover');
    let fenced: FencedError | null = null;
    old.wt.onFenced((e) => (fenced = e));
    await assert.rejects(old.commit(), FencedError);
    assert.ok(fenced);
    await assert.rejects(old.commit(), FencedError, 'once fenced, always refused');
    assert.equal(await old.lease.renew(), false, 'the former holder cannot renew');
    const wc = await other.loadWorkingCopy();
    const wt = new WriteThrough(other, wc.db, { holder: lease.holder, epoch: lease.epoch! }, { shipEverything: false });
    assert.equal(createProtocolStore(wt.keystore, 'omemo').get('bot@gw', 'session', 'a')?.toString(), 'before');
    wt.keystore.close();
    old.ks.close();
    await old.backend.close();
    await other.close();
  });

  test('a standby accepts into gw_accepted (idempotency replayed), the active moves it into its outbox under the same id', async () => {
    const url = await pgServer.createDatabase();
    const active = await pgKeystore(url, PASS);
    const standby = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    const m = { id: OutboxStore.newId(), bot: 'bot', to: CONTACT, body: BODY, encryption: null, idempotencyKey: 'same', ttlMs: 60000, createdAt: Date.now() };
    assert.deepEqual((await standby.accept(m)).created, true);
    const replay = await standby.accept({ ...m, id: OutboxStore.newId() });
    assert.ok(!replay.created && replay.id === m.id && replay.sameRequest);
    const conflict = await standby.accept({ ...m, id: OutboxStore.newId(), body: 'other' });
    assert.ok(!conflict.created && !conflict.sameRequest);
    assert.ok(!(await active.raw()).includes(Buffer.from(BODY)), 'an accepted body is sealed');
    const [got] = await active.backend.acceptedBatch(10);
    assert.equal(got?.id, m.id);
    const outbox = new OutboxStore(active.ks);
    outbox.enqueue(got!, got!.createdAt);
    active.wt.dropAccepted(got!.id);
    await active.commit();
    assert.equal((await active.backend.acceptedBatch(10)).length, 0);
    const row = await standby.committedRow('outbox', JSON.stringify([m.id]));
    assert.equal(row?.status, 'queued');
    assert.equal(outbox.body(m.id), BODY);
    await standby.close();
    await active.close();
  });

  test('barriers of one event-loop turn share one batch; a barrier while a batch is in flight takes the next one at once; it commits after the one in flight', async () => {
    const url = await pgServer.createDatabase();
    const t = await pgKeystore(url, PASS);
    const reader = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    const kv = createProtocolStore(t.ks, 'omemo');
    await t.commit();
    let batches = 0;
    t.wt.onShipped(() => batches++);
    const committed = async (key: string) => (await reader.committedRow('kv', JSON.stringify(['omemo', 'bot@gw', 'session', key]))) !== undefined;
    kv.put('bot@gw', 'session', 'a', '1');
    const first = t.wt.barrier();
    kv.put('bot@gw', 'session', 'b', '1'); // later in the same turn: rides on the same batch
    const second = t.wt.barrier();
    await Promise.all([first, second]);
    assert.equal(batches, 1);
    assert.ok((await committed('a')) && (await committed('b')));
    kv.put('bot@gw', 'session', 'c', '1');
    const inFlight = t.wt.barrier();
    await new Promise((r) => setImmediate(r)); // the batch with c is taken
    kv.put('bot@gw', 'session', 'd', '1');
    const after1 = t.wt.barrier();
    kv.put('bot@gw', 'session', 'e', '1');
    const after2 = t.wt.barrier();
    assert.equal(after1, after2, 'one batch after the one in flight, for both');
    await Promise.all([inFlight, after1, after2]);
    assert.equal(batches, 3);
    for (const k of ['c', 'd', 'e']) assert.ok(await committed(k), k);
    // Nothing changed: nothing to ship, nothing to wait for.
    await t.wt.barrier();
    assert.equal(batches, 3);
    await reader.close();
    await t.close();
  });

  test('a change rolled back in the working copy is not shipped: PostgreSQL keeps the row as committed, and a row inserted then rolled back stays absent', async () => {
    const url = await pgServer.createDatabase();
    const t = await pgKeystore(url, PASS);
    const reader = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    const kv = createProtocolStore(t.ks, 'omemo');
    kv.put('bot@gw', 'session', 'kept', 'v1');
    await t.commit();
    const pk = (key: string) => JSON.stringify(['omemo', 'bot@gw', 'session', key]);
    const stored = async (key: string) => {
      const row = await reader.committedRow('kv', pk(key));
      return row ? t.ks.sealer.open(row.value as Buffer, `kv\0omemo\0bot@gw\0session\0${key}`).toString('utf8') : undefined;
    };
    assert.equal(await stored('kept'), 'v1');
    assert.throws(() =>
      kv.transaction(() => {
        kv.put('bot@gw', 'session', 'kept', 'rolled-back');
        kv.put('bot@gw', 'session', 'new', 'rolled-back');
        throw new Error('abort');
      }),
    );
    assert.equal(kv.get('bot@gw', 'session', 'kept')?.toString(), 'v1');
    await t.commit();
    assert.equal(await stored('kept'), 'v1');
    assert.equal(await stored('new'), undefined);
    kv.put('bot@gw', 'session', 'kept', 'v2');
    await t.commit();
    assert.equal(await stored('kept'), 'v2');
    await reader.close();
    await t.close();
  });

  test('while the lease is renewed, batches go one at a time (a new FOR SHARE would otherwise keep the renewal waiting)', async () => {
    const url = await pgServer.createDatabase();
    const t = await pgKeystore(url, PASS);
    const kv = createProtocolStore(t.ks, 'omemo');
    await t.commit();
    // Count the gw_ship calls in flight together.
    const pool = t.backend.pool as unknown as { query: (...a: unknown[]) => Promise<unknown> };
    const query = pool.query.bind(pool);
    let now = 0;
    let peak = 0;
    pool.query = (...a: unknown[]) => {
      const text = typeof a[0] === 'string' ? a[0] : '';
      if (!text.includes('gw_ship')) return query(...a);
      now++;
      peak = Math.max(peak, now);
      return query(...a).finally(() => now--);
    };
    let n = 0;
    const churn = async (ms: number) => {
      const until = Date.now() + ms;
      const waits: Array<Promise<void>> = [];
      while (Date.now() < until) {
        kv.put('bot@gw', 'session', `k${n++ % 50}`, String(n));
        waits.push(t.wt.barrier());
        await new Promise((r) => setImmediate(r));
      }
      await Promise.all(waits);
    };
    await churn(600);
    assert.equal(peak, 2, 'two batches in flight together without a renewal (else this test shows nothing)');
    peak = 0;
    let renewed = false;
    let during = 0;
    await Promise.all([
      churn(600),
      t.wt.whileRenewing(async () => {
        // Batches sent before the renewal began may still be in flight: count from a little later.
        await new Promise((r) => setTimeout(r, 150));
        peak = now;
        await new Promise((r) => setTimeout(r, 350));
        renewed = await t.lease.renew();
        during = peak;
      }),
    ]);
    assert.ok(renewed);
    assert.ok(n > 100, `writes went on meanwhile (${n})`);
    assert.equal(during, 1, 'one at a time while renewing');
    await t.close();
  });

  test('batches in flight together commit in the order they were taken: a successor that arrives first waits; one whose predecessor rolled back rolls back too', async () => {
    const url = await pgServer.createDatabase();
    const b = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    const lease = new Lease(b.pool, 'ordering-test', 30_000);
    assert.ok(await lease.tryAcquire());
    const ship = (prev: number, seq: number, value: string) =>
      b.pool.query<{ ok: boolean }>('SELECT gw_ship($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) AS ok', [
        lease.holder, lease.epoch, ['kv'], ['row-x'], [Buffer.from(value)], [], [], [], [], null, prev, seq,
      ]);
    const value = async () => (await b.pool.query<{ data: Buffer }>("SELECT data FROM gw_rows WHERE tbl = 'kv' AND pk = 'row-x'")).rows[0]?.data.toString();
    // Batch 2 is sent before batch 1 reaches the database: it waits, and the later value stays.
    const second = ship(1, 2, 'second');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await value(), undefined, 'batch 2 wrote nothing before batch 1 committed');
    await ship(0, 1, 'first');
    assert.equal((await second).rows[0]!.ok, true);
    assert.equal(await value(), 'second');
    // Batch 4's predecessor (3) never commits: batch 4 raises and its row is not written.
    await assert.rejects(ship(3, 4, 'fourth'), /expected 3/);
    assert.equal(await value(), 'second');
    // A number already passed is refused at once (another batch took that place).
    await assert.rejects(ship(1, 5, 'stale'), /expected 1/);
    assert.equal(await value(), 'second');
    assert.equal((await ship(2, 6, 'sixth')).rows[0]!.ok, true);
    assert.equal(await value(), 'sixth');
    await b.close();
  });

  test('a handed-over stanza stays in gw_handoff until it is handled; its row goes in the batch that ships what handling it changed', async () => {
    const url = await pgServer.createDatabase();
    const active = await pgKeystore(url, PASS);
    const frozen = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    await frozen.handOff(`<message from="${CONTACT}/phone" to="bot@gw" id="h1" type="chat"><body>handed over</body></message>`);
    const waiting = async () => Number((await active.backend.pool.query<{ n: string }>('SELECT count(*) AS n FROM gw_handoff')).rows[0]!.n);
    let release!: () => void;
    const handlingMayEnd = new Promise<void>((r) => (release = r));
    const seen: string[] = [];
    const importer = new HandoffImporter({
      backend: active.backend,
      wt: active.wt,
      handle: async (el) => {
        seen.push(String(el.attrs.id));
        await handlingMayEnd;
        createProtocolStore(active.ks, 'omemo').put('bot@gw', 'session', 'handed', 'state of the handled stanza');
        return true;
      },
      log: pino({ level: 'silent' }),
    });
    assert.equal(await importer.poll(), 1);
    // Anything else shipped meanwhile does not take the row with it: a crash now leaves it for the
    // next active instance.
    createProtocolStore(active.ks, 'omemo').put('bot@gw', 'session', 'other', 'x');
    await active.commit();
    assert.equal(await waiting(), 1, 'not deleted before it is handled');
    assert.equal(await importer.poll(), 0, 'a row in hand is not started twice');
    release();
    await importer.settled();
    assert.equal(await waiting(), 0, 'deleted once handled');
    assert.deepEqual(seen, ['h1']);
    const row = await frozen.committedRow('kv', JSON.stringify(['omemo', 'bot@gw', 'session', 'handed']));
    assert.ok(row, 'what handling it changed is committed with the delete');
    // A stanza not handled (this instance may not act) stays for a later attempt.
    await frozen.handOff(`<message from="${CONTACT}/phone" to="bot@gw" id="h2" type="chat"><body>later</body></message>`);
    const refusing = new HandoffImporter({ backend: active.backend, wt: active.wt, handle: async () => false, log: pino({ level: 'silent' }) });
    assert.equal(await refusing.poll(), 1);
    await refusing.settled();
    await active.commit();
    assert.equal(await waiting(), 1);
    await frozen.close();
    await active.close();
  });
});

describe('the standby API', () => {
  test("a standby accepts a message to one of the bot's rooms (configured), as the active one does, and still refuses a domain it does not serve", async () => {
    const url = await pgServer.createDatabase();
    const backend = await PgBackend.open(url, PASS, { kdf: TEST_KDF });
    const config = validateConfig({
      component: { service: 'xmpp://127.0.0.1:1', domain: 'gw.example.org', secret: 'component-secret' },
      http: { admin_token: 'admin-token-for-tests-0001' },
      keystore: { url, passphrase: PASS },
      bridge: { allowed_domains: ['example.org'] },
      bots: [{ localpart: 'alerts', token: 'alerts-bot-token-0001', rooms: ['ops@conference.elsewhere.net'] }],
    });
    const app = standbyApp({ config, backend, metrics: new Metrics(), log: pino({ level: 'silent' }), reachable: () => true });
    const post = (to: string) => request(app).post('/v1/messages').set('authorization', 'Bearer alerts-bot-token-0001').send({ to, body: 'to the room' });
    const room = await post('ops@conference.elsewhere.net');
    assert.equal(room.status, 202, JSON.stringify(room.body));
    const [accepted] = await backend.acceptedBatch(10);
    assert.equal(accepted?.to, 'ops@conference.elsewhere.net');
    assert.equal(accepted?.id, room.body.id);
    const other = await post('someone@elsewhere.net');
    assert.equal(other.status, 403);
    assert.equal(other.body.error?.code ?? other.body.code, 'recipient_not_allowed');
    await backend.close();
  });
});
