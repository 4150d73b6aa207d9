// `npm run keystore -- copy`: a SQLite keystore with live OMEMO sessions moves to PostgreSQL and the
// gateway goes on there with the same identity and sessions (no re-keying, same passphrase).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { Prosody } from '../harness/prosody.js';
import { waitUntil } from '../harness/gateway.js';
import { GatewayProcess } from '../harness/gateway-process.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { Postgres } from '../harness/postgres.js';

const CLI = new URL('../../keystore-cli.js', import.meta.url).pathname;
const BOT_TOKEN = 'alerts-bot-token-0001';
const PASSPHRASE = 'keystore-passphrase-for-tests';

const copy = (from: string, to: string, passphrase = PASSPHRASE) =>
  spawnSync(process.execPath, [CLI, 'copy', '--from', from, '--to', to], { encoding: 'utf8', env: { ...process.env, GATEWAY_KEYSTORE_PASSPHRASE: passphrase }, timeout: 60000 });

describe('keystore copy: SQLite to PostgreSQL', () => {
  let db: Postgres;
  let server: Prosody;
  let hook: WebhookReceiver;
  let bob: PythonOmemoUser;
  const gws: GatewayProcess[] = [];

  before(async () => {
    db = await Postgres.start();
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
  });
  after(async () => {
    await bob?.stop();
    for (const g of gws) await g.destroy();
    await hook?.stop();
    await server?.destroy();
    await db?.stop();
  });

  test('sessions, identity and trust survive the move; a wrong passphrase or a non-empty target is refused', async () => {
    const bots = [{ localpart: 'alerts', token: BOT_TOKEN, webhook: { url: hook.url, secret: hook.secret } }];
    const lite = await GatewayProcess.create(server, { bots });
    gws.push(lite);
    await lite.start();
    const bot = `alerts@${server.componentDomain}`;
    bob = await PythonOmemoUser.start(server, 'bob', { resource: 'phone' });
    await bob.subscribe(bot);
    await bob.send(bot, 'hello on sqlite');
    await waitUntil(() => hook.messages().some((m) => m.body === 'hello on sqlite'), 30000, 'inbound on SQLite');
    assert.equal((await lite.post('/v1/messages', BOT_TOKEN, { to: 'bob@example.org', body: 'reply on sqlite' })).status, 202);
    const first = await bob.waitForMessage((m) => m.body === 'reply on sqlite', 30000, 'outbound on SQLite');
    assert.equal(await lite.stop(), 0);

    const url = await db.createDatabase('copy');
    const path = join(lite.dir, 'gateway.db');
    const wrong = copy(path, url, 'not the passphrase at all');
    assert.equal(wrong.status, 3, wrong.stderr);
    const ok = copy(path, url);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /copied \d+ rows/);
    const again = copy(path, url);
    assert.equal(again.status, 3, 'a second copy into a keystore that has rows is refused');
    assert.match(again.stderr, /already holds a keystore/);
    // Nothing readable in PostgreSQL.
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const raw = Buffer.concat((await c.query<{ b: Buffer }>("SELECT convert_to(tbl || pk, 'UTF8') || data AS b FROM gw_rows")).rows.map((r) => r.b));
    await c.end();
    for (const s of ['reply on sqlite', 'bob@example.org', 'alerts']) assert.ok(!raw.includes(Buffer.from(s)), `${s} readable`);

    const onPg = await GatewayProcess.create(server, { bots, extra: { keystore: { url, passphrase: PASSPHRASE }, ha: { lease: '3s' } } });
    gws.push(onPg);
    await onPg.start();
    await waitUntil(async () => (await onPg.readiness())?.role === 'active', 30000, 'active on PostgreSQL');
    assert.equal((await onPg.post('/v1/messages', BOT_TOKEN, { to: 'bob@example.org', body: 'reply on postgresql' })).status, 202);
    const second = await bob.waitForMessage((m) => m.body === 'reply on postgresql', 30000, 'outbound on PostgreSQL');
    // Same device, same identity: bob sees the same fingerprint and no decryption error.
    assert.equal(second.device_id, first.device_id);
    assert.equal(second.fingerprint, first.fingerprint);
    await bob.send(bot, 'hello on postgresql');
    await waitUntil(() => hook.messages().some((m) => m.body === 'hello on postgresql'), 30000, 'inbound on PostgreSQL');
    assert.deepEqual(bob.events.filter((e) => e.event === 'decrypt_error'), []);
  });
});
