// Two gateway processes on one PostgreSQL keystore behind ejabberd, with a python-omemo user.
// ejabberd takes a second component connection beside the first and shares the domain's inbound
// stanzas between them (component-conflict.test.ts). So when the active instance freezes and the
// standby takes over, ejabberd goes on writing part of what users send into the frozen instance's
// socket; when that one runs again it has lost the lease. It must hand those stanzas to the new
// active instance (through PostgreSQL) instead of dropping them, and then leave the domain. And the
// SIGKILL failover the Prosody test runs (test/harness/ha-scenarios.ts) holds here too.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Ejabberd } from '../harness/ejabberd.js';
import { waitUntil } from '../harness/gateway.js';
import { GatewayProcess, haInstance, waitRole } from '../harness/gateway-process.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { sigkillFailover } from '../harness/ha-scenarios.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { Postgres } from '../harness/postgres.js';

const BOT_TOKEN = 'alerts-bot-token-0001';
const LEASE_S = 3;

describe('two instances on PostgreSQL behind ejabberd', () => {
  let db: Postgres;
  let server: Ejabberd;
  let hook: WebhookReceiver;
  const gws: GatewayProcess[] = [];
  let bob: PythonOmemoUser | undefined;
  let carol: PythonOmemoUser | undefined;

  before(async () => {
    db = await Postgres.start();
    server = await Ejabberd.start();
    hook = await WebhookReceiver.start();
  });

  after(async () => {
    await bob?.stop();
    await carol?.stop();
    for (const g of gws) await g.destroy();
    await hook?.stop();
    await server?.destroy();
    await db?.stop();
  });

  test('the active instance frozen past the lease: what ejabberd wrote into its socket meanwhile reaches the webhook through the new active one, once each, with no OMEMO error', async () => {
    const url = await db.createDatabase('ha_ejabberd');
    const bot = `alerts@${server.componentDomain}`;
    const instance = async () => {
      const g = await haInstance(server, { url, leaseS: LEASE_S, bot: { localpart: 'alerts', token: BOT_TOKEN }, webhook: { url: hook.url, secret: hook.secret } });
      gws.push(g);
      return g;
    };
    const received = (prefix: string) => hook.messages().filter((m) => String(m.body).startsWith(prefix)).map((m) => String(m.body));

    const a = await instance();
    await a.start();
    await waitRole(a, 'active', 'first instance active');
    const b = await instance();
    await b.start();
    await waitRole(b, 'standby', 'second instance standby');

    bob = await PythonOmemoUser.start(server, 'bob', { resource: 'phone' });
    await bob.subscribe(bot);
    const r = await a.post('/v1/messages', BOT_TOKEN, { to: 'bob@example.org', body: 'hello from the bot' });
    assert.equal(r.status, 202);
    await bob.waitForMessage((m) => m.body === 'hello from the bot', 30000, 'first message');
    await bob.send(bot, 'warm-up');
    await waitUntil(() => received('warm-up').length === 1, 30000, 'warm-up reply at the webhook');

    a.pause();
    await waitRole(b, 'active', 'the standby took over from the frozen one', (LEASE_S * 2 + 30) * 1000);
    const N = 30;
    for (let i = 0; i < N; i++) await bob.send(bot, `during the freeze #${i}`);
    // ejabberd shares them between the two connections: only part can reach the webhook yet.
    await new Promise((r) => setTimeout(r, 3000));
    const beforeResume = received('during the freeze #').length;

    a.resume();
    await waitRole(a, 'standby', 'the resumed instance reports standby', 30000);
    try {
      await waitUntil(() => received('during the freeze #').length >= N, 60000, `all ${N} replies at the webhook`);
    } catch (e) {
      // Say where they stopped: what the resumed instance handed over, what the active one took.
      const lines = (out: string, re: RegExp) => out.split('\n').filter((l) => re.test(l)).slice(-12).join('\n');
      throw new Error(
        `${(e as Error).message}: ${received('during the freeze #').length} of ${N} (${beforeResume} before the resume)\n` +
          `resumed instance:\n${lines(a.output, /hand|lease|standby|error/i)}\nactive instance:\n${lines(b.output, /handling stanzas|not decrypted|error/i)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 1500)); // anything doubled would arrive now
    const got = received('during the freeze #');
    assert.deepEqual([...got].sort(), Array.from({ length: N }, (_, i) => `during the freeze #${i}`).sort(), 'each once');
    assert.ok(beforeResume < N, `ejabberd routed nothing to the frozen connection (${beforeResume} of ${N} before the resume): the test did not exercise the hand-over`);
    assert.match(a.output, /handed|hand/i, 'the resumed instance says what it did with them');
    assert.match(b.output, /handling stanzas a former active instance read without the lease/);

    // The new active instance now holds the domain alone: replies and bot messages both go on.
    await b.post('/v1/messages', BOT_TOKEN, { to: 'bob@example.org', body: 'after the freeze' });
    await bob.waitForMessage((m) => m.body === 'after the freeze', 30000, 'message through the new active');
    for (let i = 0; i < 5; i++) await bob.send(bot, `after #${i}`);
    await waitUntil(() => received('after #').length === 5, 30000, 'replies after the freeze');
    assert.deepEqual(bob.events.filter((e) => e.event === 'decrypt_error'), [], 'no OMEMO decryption error at the user');
  });

  test('SIGKILL of the active instance while bots post through both: every message delivered, none twice but the one in flight (same id), no OMEMO error; replies to the webhook once', async () => {
    // The first test's instances (another keystore) leave the domain first.
    for (const g of gws.splice(0)) await g.destroy();
    const url = await db.createDatabase('ha_ejabberd_kill');
    await sigkillFailover({ server, url, leaseS: LEASE_S, hook, user: 'carol', gws, onUser: (u) => (carol = u) });
  });
});
