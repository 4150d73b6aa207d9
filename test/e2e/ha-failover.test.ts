// Two gateway processes on one PostgreSQL keystore (keystore.url), a real Prosody and a python-omemo
// user. The active instance is SIGKILLed while bots post through both instances' APIs
// (test/harness/ha-scenarios.ts, also run on ejabberd); later the new active one is SIGSTOPped past
// the lease and resumed: it must come back as a standby that writes and sends nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Prosody } from '../harness/prosody.js';
import { waitUntil } from '../harness/gateway.js';
import { GatewayProcess, haInstance, waitRole } from '../harness/gateway-process.js';
import type { PythonOmemoUser } from '../harness/omemo-user.js';
import { HA_BOT_TOKEN as BOT_TOKEN, postTo, sigkillFailover } from '../harness/ha-scenarios.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { Postgres } from '../harness/postgres.js';

const LEASE_S = 3;

describe('two instances on PostgreSQL: failover', () => {
  let db: Postgres;
  let url: string;
  let server: Prosody;
  let hook: WebhookReceiver;
  const gws: GatewayProcess[] = [];
  let bob: PythonOmemoUser;

  const instance = async () => {
    const g = await haInstance(server, { url, leaseS: LEASE_S, bot: { localpart: 'alerts', token: BOT_TOKEN }, webhook: { url: hook.url, secret: hook.secret } });
    gws.push(g);
    return g;
  };
  const role = async (g: GatewayProcess) => (await g.readiness())?.role ?? 'down';

  const post = (order: GatewayProcess[], body: string, key: string) => postTo(order, 'bob@example.org', body, key);

  before(async () => {
    db = await Postgres.start();
    url = await db.createDatabase('ha');
    // kick_old: a new active instance replaces a frozen one's connection (see the README).
    server = await Prosody.start({ componentConflict: 'kick_old' });
    hook = await WebhookReceiver.start();
  });

  after(async () => {
    await bob?.stop();
    for (const g of gws) await g.destroy();
    await hook?.stop();
    await server?.destroy();
    await db?.stop();
  });

  test('SIGKILL of the active instance while bots post through both: every message delivered, none twice but the one in flight (same id), no OMEMO error; replies to the webhook once', async () => {
    await sigkillFailover({ server, url, leaseS: LEASE_S, hook, user: 'bob', gws, onUser: (u) => (bob = u) });
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
