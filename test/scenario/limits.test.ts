// The limits of limits.ts through the real connection, router and engines of an in-process gateway
// (fake XEP-0114 server): stanza buckets per sender and per domain (one error reply, then silence),
// stanza and body sizes, identities per requester, per minute and in all, over XMPP and the API.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { xml, type Element } from '../../component/xml.js';
import { Scenario, ADMIN_TOKEN, BOT_TOKEN } from '../harness/scenario.js';
import { NODE_DEVICELIST, NS_OMEMO } from '../../bridges/omemo/constants.js';

const scenarios: Scenario[] = [];
after(async () => {
  for (const s of scenarios) await s.destroy();
});
async function start(limits: Record<string, unknown>, bridge: Record<string, unknown> = {}): Promise<Scenario> {
  const s = await Scenario.start({ extra: { limits }, bridge });
  scenarios.push(s);
  return s;
}

let n = 0;
const ping = (from: string, to = 'gw.example.org') => xml('iq', { type: 'get', id: `p${++n}`, from, to }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
const deviceListRead = (from: string, proxy: string) =>
  xml('iq', { type: 'get', id: `d${++n}`, from, to: proxy }, xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }, xml('items', { node: NODE_DEVICELIST })));
const condition = (el: Element | null | undefined): string | null =>
  el?.attrs.type === 'error' ? (el.getChild('error')?.getChildElements()[0]?.name ?? '?') : el ? 'ok' : null;
const proxy = (i: number) => `user${i}\\40example.org@gw.example.org`;

/** Injects all stanzas, waits until handled, and returns the answer (or null) to each. */
async function burst(s: Scenario, stanzas: Element[]): Promise<Array<string | null>> {
  const mark = s.server.received.length;
  for (const st of stanzas) s.server.inject(st);
  await s.settle();
  const out = s.server.since(mark);
  return stanzas.map((st) => condition(out.find((e) => e.attrs.id === st.attrs.id)));
}

const limitedCount = async (s: Scenario, limit: string): Promise<number> => {
  const m = new RegExp(`gateway_limited_total\\{limit="${limit}"\\} (\\d+)`).exec((await s.gateway.metrics.render()).body);
  return m ? Number(m[1]) : 0;
};

test('stanzas per sender: the burst is served, the first stanza over it gets resource-constraint, the rest silence; others unaffected', async () => {
  const s = await start({ sender_stanza_burst: 5, sender_stanzas_per_second: 0.001 });
  const answers = await burst(s, Array.from({ length: 12 }, () => ping('mallory@example.org/x')));
  assert.deepEqual(answers.slice(0, 5), ['ok', 'ok', 'ok', 'ok', 'ok']);
  assert.equal(answers[5], 'resource-constraint');
  assert.deepEqual(answers.slice(6), Array(6).fill(null), 'silence while over the limit');
  // Another sender of the same domain is served; another resource of the same bare JID is the same sender.
  assert.deepEqual(await burst(s, [ping('bob@example.org/y')]), ['ok']);
  assert.deepEqual(await burst(s, [ping('mallory@example.org/other')]), [null]);
  assert.ok((await limitedCount(s, 'sender_stanzas')) >= 7);
});

test('stanzas per domain: many senders of one domain share its bucket; other domains and the gateway itself are not counted', async () => {
  const s = await start({ domain_stanza_burst: 6, domain_stanzas_per_second: 0.001 });
  // (settle() pings from example.org: the flood comes from legacy.example.)
  const answers = await burst(s, Array.from({ length: 10 }, (_, i) => ping(`u${i}@legacy.example/x`)));
  assert.deepEqual(answers, ['ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'resource-constraint', null, null, null]);
  assert.deepEqual(await burst(s, [ping('carol@example.org/x')]), ['ok']);
  assert.deepEqual(await burst(s, [ping('gw.example.org'), ping('gw.example.org')]), ['ok', 'ok']);
  assert.ok((await limitedCount(s, 'domain_stanzas')) >= 4);
});

test('stanza and body sizes: an oversized stanza gets policy-violation; an OMEMO message over omemo_max_body is refused before decrypting', async () => {
  const s = await start({ max_stanza: '64kb', omemo_max_body: '4kb' });
  const big = xml('iq', { type: 'get', id: 'big1', from: 'bob@example.org/x', to: 'gw.example.org' }, xml('ping', { xmlns: 'urn:xmpp:ping' }, 'x'.repeat(70_000)));
  assert.equal(condition(await s.exchange(big)), 'policy-violation');
  assert.equal(await limitedCount(s, 'max_stanza'), 1);
  // 30 KB of OMEMO payload: within max_stanza, over omemo_max_body (with its allowance for base64 and headers).
  const enc = xml(
    'encrypted',
    { xmlns: NS_OMEMO },
    xml('header', { sid: '1234' }, xml('key', { rid: '1' }, randomBytes(40).toString('base64')), xml('iv', {}, randomBytes(12).toString('base64'))),
    xml('payload', {}, randomBytes(30_000).toString('base64')),
  );
  const msg = xml('message', { type: 'chat', id: 'omemo-big', from: 'bob@example.org/x', to: 'alerts@gw.example.org' }, enc);
  const reply = await s.exchange(msg);
  assert.equal(condition(reply), 'policy-violation');
  assert.match(reply!.getChild('error')!.getChildText('text') ?? '', /larger than this gateway accepts/);
  assert.equal(await limitedCount(s, 'omemo_max_body'), 1);
  // A stanza within the limits is still served.
  assert.deepEqual(await burst(s, [ping('bob@example.org/x')]), ['ok']);
});

test('identities: per requester per minute (device-list reads of new proxies; one refusal answered, then silence), bots exempt, known proxies free; API 429 with Retry-After', async () => {
  const s = await start({ identities_per_requester_per_minute: 3, identities_per_minute: 1000 });
  const answers = await burst(s, [1, 2, 3, 4, 5, 6].map((i) => deviceListRead('mallory@example.org/x', proxy(i))));
  assert.deepEqual(answers, ['ok', 'ok', 'ok', 'resource-constraint', null, null]);
  // The proxies already made are served again without counting; another requester may make new ones.
  assert.deepEqual(await burst(s, [deviceListRead('mallory@example.org/x', proxy(1)), deviceListRead('bob@example.org/x', proxy(4))]), ['ok', 'ok']);
  assert.deepEqual(await burst(s, [deviceListRead('mallory@example.org/x', 'alerts@gw.example.org')]), ['ok']);
  assert.ok((await limitedCount(s, 'identities_per_requester')) >= 2);
  // fingerprints <jid> at the domain is charged to the sender too: no new identity, a readable refusal.
  const mark = s.server.received.length;
  s.server.inject(xml('message', { type: 'chat', id: 'fp1', from: 'mallory@example.org/x', to: 'gw.example.org' }, xml('body', {}, `fingerprints ${proxy(9)}`)));
  await s.settle();
  assert.ok(s.server.since(mark).length > 0, 'the command is answered');
  assert.equal(s.gateway.omemo!.internals.keyring.peek(proxy(9)), undefined);
  // The API: the admin token is one requester.
  const get = (i: number) => fetch(`${s.gateway.httpUrl}/v1/identities/${encodeURIComponent(proxy(i))}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  for (const i of [20, 21, 22]) assert.equal((await get(i)).status, 200);
  const r = await get(23);
  assert.equal(r.status, 429);
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'identity_rate_limited');
});

test('identities: subscribes to new proxies are charged too; the first refused gets resource-constraint and nothing else (no subscribed, no presence, no subscribe back), later ones nothing at all', async () => {
  const s = await start({ identities_per_requester_per_minute: 2, identities_per_minute: 1000 });
  const subscribe = (i: number) => xml('presence', { type: 'subscribe', id: `s${++n}`, from: 'mallory@example.org/x', to: proxy(i) });
  const mark = s.server.received.length;
  const stanzas = [1, 2, 3, 4].map(subscribe);
  for (const st of stanzas) s.server.inject(st);
  await s.settle();
  const out = s.server.since(mark).filter((e) => e.name === 'presence');
  const to = (i: number) => out.filter((e) => e.attrs.from === proxy(i) || String(e.attrs.from).startsWith(`${proxy(i)}/`));
  for (const i of [1, 2]) {
    const types = new Set(to(i).map((e) => String(e.attrs.type ?? 'available')));
    assert.deepEqual([...types].sort(), ['available', 'subscribe', 'subscribed'], `proxy ${i} accepted`);
  }
  assert.deepEqual(to(3).map((e) => `${e.attrs.type}:${condition(e)}`), ['error:resource-constraint'], 'proxy 3 refused, and only that');
  assert.deepEqual(to(4), [], 'proxy 4 refused in silence: the sender was told already');
  for (const i of [3, 4]) assert.equal(s.gateway.subscriptions.get(proxy(i), 'mallory@example.org').from, false, 'no subscription stored');
  assert.ok((await limitedCount(s, 'identities_per_requester')) >= 2);
  // A proxy that has an identity takes new subscribers without counting them.
  s.server.inject(xml('presence', { type: 'subscribe', id: `s${++n}`, from: 'bob@example.org/x', to: proxy(1) }));
  await s.settle();
  assert.equal(s.gateway.subscriptions.get(proxy(1), 'bob@example.org').from, true);
});

test('identities: per minute in all, and bridge.max_hosted_identities', async () => {
  const s = await start({ identities_per_requester_per_minute: 1000, identities_per_minute: 4 });
  const answers = await burst(s, [1, 2, 3, 4, 5, 6].map((i) => deviceListRead(`u${i}@example.org/x`, proxy(i))));
  assert.deepEqual(answers, ['ok', 'ok', 'ok', 'ok', 'resource-constraint', 'resource-constraint']);
  assert.ok((await limitedCount(s, 'identities_per_minute')) >= 2);

  // The bot's identity exists from the start; with max 3 hosted, two proxies fit, then no more.
  const t = await start({ identities_per_minute: 1000 }, { max_hosted_identities: 3 });
  assert.deepEqual(await burst(t, [1, 2, 3].map((i) => deviceListRead('bob@example.org/x', proxy(i)))), ['ok', 'ok', 'policy-violation']);
  const r = await fetch(`${t.gateway.httpUrl}/v1/identities/${encodeURIComponent(proxy(99))}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(r.status, 403);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'identity_limit_reached');
  assert.match((await t.gateway.metrics.render()).body, /gateway_hosted_identities 3/);
  // After a restart the hosted count is read from the keystore: still full.
  await t.stopGateway();
  await t.startGateway();
  assert.deepEqual(await burst(t, [deviceListRead('bob@example.org/x', proxy(7))]), ['policy-violation']);
  assert.deepEqual(await burst(t, [deviceListRead('bob@example.org/x', proxy(1))]), ['ok']);
});

test('back-pressure: POST /v1/messages answers 503 overloaded with Retry-After past limits.max_outbox_depth; the loop lag is in /metrics', async () => {
  const s = await start({ max_outbox_depth: 0 });
  const r = await fetch(`${s.gateway.httpUrl}/v1/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${BOT_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ to: 'bob@example.org', body: 'hello' }),
  });
  assert.equal(r.status, 503);
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'overloaded');
  const m = (await s.gateway.metrics.render()).body;
  assert.match(m, /gateway_limited_total\{limit="outbox_depth"\} 1/);
  assert.match(m, /gateway_event_loop_lag_seconds \d/);
});

test('message errors: a contact flooding a hosted JID with undecryptable or plaintext messages gets limits.message_errors_per_contact_per_minute error replies, then none; others still get theirs', async () => {
  const s = await start({ message_errors_per_contact_per_minute: 3 });
  const botDevice = String((await s.gateway.omemo!.identity('alerts@gw.example.org')).omemo![0]!.device_id);
  const junk = (from: string, i: number) =>
    xml(
      'message',
      { type: 'chat', id: `j${++n}`, from, to: 'alerts@gw.example.org' },
      i % 2 === 0
        ? xml('body', {}, 'plaintext to a bot that takes none')
        : xml(
            'encrypted',
            { xmlns: NS_OMEMO },
            xml('header', { sid: String(1000 + i) }, xml('key', { rid: botDevice }, randomBytes(40).toString('base64')), xml('iv', {}, randomBytes(12).toString('base64'))),
            xml('payload', {}, randomBytes(24).toString('base64')),
          ),
    );
  const answers = await burst(s, [0, 1, 2, 3, 4, 5].map((i) => junk('mallory@example.org/x', i)));
  assert.deepEqual(answers, ['not-acceptable', 'not-acceptable', 'not-acceptable', null, null, null]);
  assert.deepEqual(await burst(s, [junk('bob@example.org/x', 0)]), ['not-acceptable'], 'another contact has its own budget');
  assert.equal(await limitedCount(s, 'message_errors'), 3);
});

test('automatic replies: a bot answering every chat-command answer gets limits.auto_replies_per_contact_per_minute of them, then none; OTR text is no command', async () => {
  const s = await start({ auto_replies_per_contact_per_minute: 10 });
  const chat = (from: string, to: string, body: string) => xml('message', { type: 'chat', id: `m${++n}`, from, to }, xml('body', {}, body));
  const answersTo = (mark: number, who: string) => s.server.since(mark).filter((e) => e.name === 'message' && String(e.attrs.to).startsWith(who) && e.getChildText('body') !== null);
  // An auto-responder: whatever the gateway says to it, it answers with a line the gateway does not know.
  let mark = s.server.received.length;
  for (let i = 0; i < 30; i++) s.server.inject(chat('echo-bot@example.org/r', 'gw.example.org', `[bot] I did not understand "${i}"`));
  await s.settle();
  const answers = answersTo(mark, 'echo-bot@example.org');
  assert.equal(answers.length, 10, 'ten answers, then silence');
  assert.match(answers[0]!.getChildText('body')!, /^Unknown command/);
  assert.equal(await limitedCount(s, 'auto_replies'), 20);
  // Another contact has a budget of its own.
  mark = s.server.received.length;
  s.server.inject(chat('dave@example.org/x', 'gw.example.org', 'help'));
  await s.settle();
  assert.equal(answersTo(mark, 'dave@example.org').length, 1);
  // An OTR query or message to the domain is protocol traffic, not a command: no answer at all.
  mark = s.server.received.length;
  s.server.inject(chat('erin@example.org/x', 'gw.example.org', '?OTRv23?'));
  s.server.inject(chat('erin@example.org/x', 'gw.example.org', '?OTR:AAMDAAAAAQ==.'));
  await s.settle();
  assert.equal(answersTo(mark, 'erin@example.org').length, 0);
});

test('automatic replies: the OTR "not encrypted" notice to a contact who keeps sending tagged plaintext is budgeted too', async () => {
  const s = await start({ auto_replies_per_contact_per_minute: 3 });
  const tagged = 'hello \t  \t\t\t\t \t \t \t    \t\t  \t   \t\t  \t\t';
  const mark = s.server.received.length;
  for (let i = 0; i < 8; i++) s.server.inject(xml('message', { type: 'chat', id: `t${++n}`, from: 'olga@example.org/pc', to: proxy(7) }, xml('body', {}, tagged)));
  await s.settle();
  const notices = s.server.since(mark).filter((e) => /not encrypted/.test(e.getChildText('body') ?? ''));
  assert.equal(notices.length, 3);
  assert.ok((await limitedCount(s, 'auto_replies')) >= 5);
});
