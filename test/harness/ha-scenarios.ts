// The SIGKILL failover of two gateway instances on one PostgreSQL keystore, on any XMPP server (the
// HA tests run it on Prosody and on ejabberd): bots post through both instances' APIs while the
// active one is SIGKILLed midway; every message reaches the user, none twice but the one in flight
// (same id), no OMEMO error; the user's replies reach the webhook once each.
import assert from 'node:assert/strict';
import type { XmppServer } from './prosody.js';
import { waitUntil } from './gateway.js';
import { type GatewayProcess, haInstance, waitRole } from './gateway-process.js';
import { PythonOmemoUser } from './omemo-user.js';
import type { WebhookReceiver } from './webhook-receiver.js';

export const HA_BOT_TOKEN = 'alerts-bot-token-0001';

export interface FailoverSetup {
  server: XmppServer;
  /** An empty PostgreSQL database. */
  url: string;
  leaseS: number;
  hook: WebhookReceiver;
  /** The user's localpart (a new account: its OMEMO sessions start with this keystore). */
  user: string;
  /** Every instance made is pushed here, and the user is handed to onUser once started (the caller stops them). */
  gws: GatewayProcess[];
  onUser: (u: PythonOmemoUser) => void;
}

const role = async (g: GatewayProcess) => (await g.readiness())?.role ?? 'down';

/** Posts like a careful client: an Idempotency-Key, and on a failure the same request to the other instance. */
export async function postTo(order: GatewayProcess[], to: string, body: string, key: string): Promise<string> {
  for (let round = 0; round < 20; round++) {
    for (const g of order) {
      try {
        const r = await g.post('/v1/messages', HA_BOT_TOKEN, { to, body }, { 'Idempotency-Key': key });
        if (r.status === 202) return String(r.body.id);
      } catch {
        // connection refused or reset: try the other one
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`no instance accepted ${body}`);
}

/** Runs the scenario; resolves with the two instances (b is the active one at the end). */
export async function sigkillFailover(s: FailoverSetup): Promise<{ a: GatewayProcess; b: GatewayProcess }> {
  const bot = `alerts@${s.server.componentDomain}`;
  const instance = async () => {
    const g = await haInstance(s.server, { url: s.url, leaseS: s.leaseS, bot: { localpart: 'alerts', token: HA_BOT_TOKEN }, webhook: { url: s.hook.url, secret: s.hook.secret } });
    s.gws.push(g);
    return g;
  };
  const hookFrom = s.hook.accepted.length;
  const a = await instance();
  await a.start();
  await waitRole(a, 'active', 'first instance active');
  const b = await instance();
  await b.start();
  assert.equal(await role(b), 'standby');
  assert.match(await (await fetch(`${b.url}/metrics`)).text(), /^gateway_active 0$/m);
  assert.match(await (await fetch(`${a.url}/metrics`)).text(), /^gateway_active 1$/m);
  // A standby answers what needs the engines with 503 standby.
  const ids = await fetch(`${b.url}/v1/identities/alerts`, { headers: { authorization: 'Bearer admin-token-for-tests-0001' } });
  assert.equal(ids.status, 503);

  const user = await PythonOmemoUser.start(s.server, s.user, { resource: 'phone' });
  s.onUser(user);
  const to = user.jid.split('/')[0]!;
  await user.subscribe(bot);
  await postTo([a], to, 'hello before', 'warm-up');
  await user.waitForMessage((m) => m.body === 'hello before', 30000, 'first message');

  const N = 50;
  for (let i = 0; i < N; i++) {
    if (i === N / 2) await a.kill();
    // Alternate between the instances; a dead one is skipped by the retry.
    const order = i % 2 === 0 ? [a, b] : [b, a];
    await postTo(order, to, `ha #${i}`, `ha-${i}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await waitRole(b, 'active', 'the standby took over', (s.leaseS + 30) * 1000);
  for (let i = 0; i < N; i++) await user.waitForMessage((m) => m.body === `ha #${i}`, 60000, `ha #${i}`);
  await new Promise((r) => setTimeout(r, 2000)); // anything doubled would arrive now
  const got = user.messages.filter((m) => m.from === bot && m.body?.startsWith('ha #'));
  const counts = new Map<string, number>();
  for (const m of got) counts.set(m.body!, (counts.get(m.body!) ?? 0) + 1);
  // Every message arrives. The one window for a duplicate (README): a stanza written to the server
  // whose "sent" mark had not reached PostgreSQL (the write-through's next batch) when the process
  // died; the new active instance sends it again under the same stanza id (a receiver drops it by id).
  for (let i = 0; i < N; i++) assert.ok((counts.get(`ha #${i}`) ?? 0) >= 1, `ha #${i} not delivered`);
  const doubled = [...counts].filter(([, n]) => n > 1);
  assert.ok(doubled.length <= 1 && doubled.every(([, n]) => n === 2), `delivered more than once: ${JSON.stringify(doubled)}`);
  for (const [body] of doubled) assert.equal(new Set(got.filter((m) => m.body === body).map((m) => m.id)).size, 1, 'a resend carries the same id');
  assert.deepEqual(user.events.filter((e) => e.event === 'decrypt_error'), [], 'no OMEMO decryption error');

  // Replies reach the bot's webhook once each, through the new active instance.
  const replies = () =>
    s.hook.accepted
      .slice(hookFrom)
      .filter((d) => d.payload.type === 'message' && String(d.payload.body).startsWith('reply #'))
      .map((d) => d.payload.body);
  for (let i = 0; i < 5; i++) await user.send(bot, `reply #${i}`);
  await waitUntil(() => replies().length >= 5, 30000, 'replies delivered');
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(replies(), [0, 1, 2, 3, 4].map((i) => `reply #${i}`));
  // The same window for webhooks: a delivery the killed instance had posted but not yet marked is
  // posted again under the same webhook-id (receivers drop it by id, as Standard Webhooks says).
  const mine = s.hook.accepted.slice(hookFrom);
  const again = mine.filter((d, i) => mine.findIndex((x) => x.id === d.id) !== i);
  assert.ok(again.length <= 1, `webhook ids accepted twice: ${JSON.stringify(again.map((d) => d.payload.type))}`);
  assert.ok(again.every((d) => d.payload.type === 'status'), 'only a delivery in flight at the kill (a status) may repeat');
  return { a, b };
}
