// Two gateway processes on one PostgreSQL keystore (keystore.url), a real Prosody and a python-omemo
// user. The active instance is SIGKILLed while bots post through both instances' APIs; later the
// new active one is SIGSTOPped past the lease and resumed: it must come back as a standby that
// writes and sends nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Prosody } from '../harness/prosody.js';
import { waitUntil } from '../harness/gateway.js';
import { GatewayProcess, haInstance, waitRole } from '../harness/gateway-process.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { Postgres } from '../harness/postgres.js';

const BOT_TOKEN = 'alerts-bot-token-0001';
const LEASE_S = 3;

describe('two instances on PostgreSQL: failover', () => {
  let db: Postgres;
  let url: string;
  let server: Prosody;
  let hook: WebhookReceiver;
  const gws: GatewayProcess[] = [];
  let bob: PythonOmemoUser;
  let bot: string;

  const instance = async () => {
    const g = await haInstance(server, { url, leaseS: LEASE_S, bot: { localpart: 'alerts', token: BOT_TOKEN }, webhook: { url: hook.url, secret: hook.secret } });
    gws.push(g);
    return g;
  };
  const role = async (g: GatewayProcess) => (await g.readiness())?.role ?? 'down';

  /** Posts like a careful client: an Idempotency-Key, and on a failure the same request to the other instance. */
  const post = async (order: GatewayProcess[], body: string, key: string): Promise<string> => {
    for (let round = 0; round < 20; round++) {
      for (const g of order) {
        try {
          const r = await g.post('/v1/messages', BOT_TOKEN, { to: 'bob@example.org', body }, { 'Idempotency-Key': key });
          if (r.status === 202) return String(r.body.id);
        } catch {
          // connection refused or reset: try the other one
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`no instance accepted ${body}`);
  };

  before(async () => {
    db = await Postgres.start();
    url = await db.createDatabase('ha');
    // kick_old: a new active instance replaces a frozen one's connection (see the README).
    server = await Prosody.start({ componentConflict: 'kick_old' });
    hook = await WebhookReceiver.start();
    bot = `alerts@${server.componentDomain}`;
  });

  after(async () => {
    await bob?.stop();
    for (const g of gws) await g.destroy();
    await hook?.stop();
    await server?.destroy();
    await db?.stop();
  });

  test('SIGKILL of the active instance while bots post through both: every message delivered, none twice but the one in flight (same id), no OMEMO error; replies to the webhook once', async () => {
    const a = await instance();
    await a.start();
    await waitRole(a, 'active', 'first instance active');
    const b = await instance();
    await b.start();
    assert.equal(await role(b), 'standby');
    const ready = await (await fetch(`${b.url}/metrics`)).text();
    assert.match(ready, /^gateway_active 0$/m);
    assert.match(await (await fetch(`${a.url}/metrics`)).text(), /^gateway_active 1$/m);
    // A standby answers what needs the engines with 503 standby.
    const ids = await fetch(`${b.url}/v1/identities/alerts`, { headers: { authorization: 'Bearer admin-token-for-tests-0001' } });
    assert.equal(ids.status, 503);

    bob = await PythonOmemoUser.start(server, 'bob', { resource: 'phone' });
    await bob.subscribe(bot);
    await post([a], 'hello before', 'warm-up');
    await bob.waitForMessage((m) => m.body === 'hello before', 30000, 'first message');

    const N = 50;
    for (let i = 0; i < N; i++) {
      if (i === N / 2) await a.kill();
      // Alternate between the instances; a dead one is skipped by the retry.
      const order = i % 2 === 0 ? [a, b] : [b, a];
      await post(order, `ha #${i}`, `ha-${i}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await waitRole(b, 'active', 'the standby took over', (LEASE_S + 30) * 1000);
    for (let i = 0; i < N; i++) await bob.waitForMessage((m) => m.body === `ha #${i}`, 60000, `ha #${i}`);
    await new Promise((r) => setTimeout(r, 2000)); // anything doubled would arrive now
    const got = bob.messages.filter((m) => m.from === bot && m.body?.startsWith('ha #'));
    const counts = new Map<string, number>();
    for (const m of got) counts.set(m.body!, (counts.get(m.body!) ?? 0) + 1);
    // Every message arrives. The one window for a duplicate (README): a stanza written to the server
    // whose "sent" mark had not reached PostgreSQL (one round trip) when the process died; the new
    // active instance sends it again under the same stanza id (a receiver can drop it by id).
    for (let i = 0; i < N; i++) assert.ok((counts.get(`ha #${i}`) ?? 0) >= 1, `ha #${i} not delivered`);
    const doubled = [...counts].filter(([, n]) => n > 1);
    assert.ok(doubled.length <= 1 && doubled.every(([, n]) => n === 2), `delivered more than once: ${JSON.stringify(doubled)}`);
    for (const [body] of doubled) assert.equal(new Set(got.filter((m) => m.body === body).map((m) => m.id)).size, 1, 'a resend carries the same id');
    assert.deepEqual(bob.events.filter((e) => e.event === 'decrypt_error'), [], 'no OMEMO decryption error');

    // Replies reach the bot's webhook once each, through the new active instance.
    for (let i = 0; i < 5; i++) await bob.send(bot, `reply #${i}`);
    await waitUntil(() => hook.messages().filter((m) => String(m.body).startsWith('reply #')).length >= 5, 30000, 'replies delivered');
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(hook.messages().filter((m) => String(m.body).startsWith('reply #')).map((m) => m.body), [0, 1, 2, 3, 4].map((i) => `reply #${i}`));
    // The same window for webhooks: a delivery the killed instance had posted but not yet marked is
    // posted again under the same webhook-id (receivers drop it by id, as Standard Webhooks says).
    const seen = new Map<string, number>();
    for (const d of hook.accepted) seen.set(d.id, (seen.get(d.id) ?? 0) + 1);
    const again = hook.accepted.filter((d, i) => hook.accepted.findIndex((x) => x.id === d.id) !== i);
    assert.ok(again.length <= 1, `webhook ids accepted twice: ${JSON.stringify(again.map((d) => d.payload.type))}`);
    assert.ok(again.every((d) => d.payload.type === 'status'), 'only a delivery in flight at the kill (a status) may repeat');
  });

  test('the active instance SIGSTOPped past the lease: the other takes over; resumed, the old one writes and sends nothing and reports standby', async () => {
    const b = gws[1]!;
    const c = await instance();
    await c.start();
    assert.equal(await role(c), 'standby');
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    try {
      const epochOf = async () => String((await pool.query('SELECT epoch FROM gw_lease')).rows[0].epoch);
      const oldEpoch = await epochOf();
      b.pause();
      await waitRole(c, 'active', 'the standby took over from the frozen one', (LEASE_S * 2 + 30) * 1000);
      assert.notEqual(await epochOf(), oldEpoch);
      const before = bob.messages.length;
      await post([c], 'after the pause', 'pause-1');
      await bob.waitForMessage((m) => m.body === 'after the pause', 30000, 'message through the new active');
      const rowsOfOld = async () => Number((await pool.query('SELECT count(*) AS n FROM gw_rows WHERE epoch = $1', [oldEpoch])).rows[0].n);
      const maxRev = async () => String((await pool.query('SELECT coalesce(max(rev), 0) AS r FROM gw_rows WHERE epoch = $1', [oldEpoch])).rows[0].r);
      const oldRows = await rowsOfOld();
      const oldRev = await maxRev();

      b.resume();
      await waitUntil(async () => (await role(b)) === 'standby', 20000, 'the resumed instance reports standby');
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(await role(b), 'standby');
      assert.equal(await maxRev(), oldRev, 'the resumed instance wrote nothing');
      assert.ok((await rowsOfOld()) <= oldRows);
      assert.equal(bob.messages.length, before + 1, 'the resumed instance sent nothing');
      assert.equal(await role(c), 'active');
      // And the system goes on: a message through the (now standby) old instance is sent by the new active one.
      await post([b], 'through the old one', 'pause-2');
      await bob.waitForMessage((m) => m.body === 'through the old one', 30000, 'message accepted by the resumed standby');
      assert.deepEqual(bob.events.filter((e) => e.event === 'decrypt_error'), [], 'no OMEMO decryption error');
    } finally {
      await pool.end();
    }
  });
});
