// A user whose OMEMO nodes are readable to approved contacts only (access model "presence": what
// Prosody gives a node published without publish-options, as Profanity 0.13 does), on python-omemo
// with both versions. A bot that writes to them first cannot read their keys: its message waits
// (keys_not_visible) or fails saying why, the bot asks the user for a subscription once, and
// the message goes out encrypted when the user approves. On Prosody and on ejabberd (they answer
// such a read with different conditions: forbidden / not-authorized + presence-subscription-required).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody, type XmppServer } from '../harness/prosody.js';
import { Ejabberd } from '../harness/ejabberd.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import type { GroupEngine } from '../../bridges/engine.js';

const ADMIN = 'admin-token-for-tests-0001';
const TOKENS = { alerts: 'alerts-bot-token-0001', news: 'news-bot-token-0001' } as const;

interface Status {
  status: string;
  encryption: string | null;
  error?: { code: string; message: string };
}

async function post(gw: TestGateway, bot: keyof typeof TOKENS, body: Record<string, unknown>): Promise<string> {
  const r = await fetch(`${gw.url}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${TOKENS[bot]}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(r.status, 202, await r.clone().text());
  return ((await r.json()) as { id: string }).id;
}

async function status(gw: TestGateway, id: string): Promise<Status> {
  return (await (await fetch(`${gw.url}/v1/messages/${id}`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as Status;
}

const SERVERS: Array<[string, () => Promise<XmppServer & { destroy(): Promise<void> }>]> = [
  ['Prosody', () => Prosody.start()],
  ['ejabberd', () => Ejabberd.start()],
];

for (const [kind, start] of SERVERS) describe(`a user who shows OMEMO keys to approved contacts only (${kind})`, () => {
  let server: XmppServer & { destroy(): Promise<void> };
  let gw: TestGateway;
  let carol: PythonOmemoUser;
  let carolJid: string;

  before(async () => {
    server = await start();
    gw = await TestGateway.start(server, { bots: Object.entries(TOKENS).map(([localpart, token]) => ({ localpart, token })) });
    carol = await PythonOmemoUser.start(server, 'carol', { backends: ['oldmemo', 'twomemo'], accessModel: 'presence', approveSubscriptions: false });
    carolJid = carol.jid;
  });

  after(async () => {
    await carol?.stop();
    await gw?.destroy();
    await server?.destroy();
  });

  // ejabberd says the nodes are there but closed (presence-subscription-required): the message
  // waits for the approval. Prosody answers a reader it does not know a plain forbidden, for nodes
  // and accounts that are not there too: the message fails at once, saying so, and is sent again.
  const certain = kind === 'ejabberd';
  test(certain
    ? 'the bot\'s message waits with keys_not_visible and one subscription request; approved, it is delivered encrypted'
    : 'the bot\'s message fails at once, saying whose approval it needs, with one subscription request; approved, the next one is delivered encrypted', async () => {
    const bot = `alerts@${gw.domain}`;
    let id = await post(gw, 'alerts', { to: carolJid, body: 'for approved eyes' });
    await carol.waitForEvent((e) => e.event === 'subscribe_request' && e.from === bot, 15000, 'subscription request from the bot');
    const code = certain ? 'keys_not_visible' : 'no_encryption_available';
    await waitUntil(async () => (await status(gw, id)).error?.code === code, 15000, `${code} on the message`);
    const first = await status(gw, id);
    assert.equal(first.status, certain ? 'queued' : 'failed', certain ? 'the message is kept, not failed' : 'failed at once, as for a contact without keys');
    assert.ok(first.error!.message.includes(carolJid) && /approval \(a presence subscription\)/.test(first.error!.message), first.error!.message);
    assert.match(first.error!.message, /alerts@\S+ has sent carol@\S+ a request for approval/);
    if (certain) assert.match(first.error!.message, /the message waits for the approval/);
    else assert.match(first.error!.message, /there is none, or only approved contacts may read it.*once given, send again/);
    assert.ok(!carol.messages.some((m) => m.from === bot), 'nothing reached carol before she approved');
    // Retries (1 s, 2 s, ...) and further messages do not ask again while the request is pending.
    if (!certain) await post(gw, 'alerts', { to: carolJid, body: 'second try, still not approved' });
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(carol.events.filter((e) => e.event === 'subscribe_request' && e.from === bot).length, 1);

    // Four tries by about 7 s after the POST, the next one 8 s later: the approval wakes the message.
    if (certain) await new Promise((r) => setTimeout(r, 5000));
    const approvedAt = Date.now();
    await carol.approve(bot);
    if (!certain) {
      // On the approval the bot sends her server its presence (with caps, directed: she does not
      // follow the bot), and her server pushes her current device lists: nothing is read for them.
      const omemo2 = gw.gateway.engines.get('omemo2') as GroupEngine;
      await waitUntil(() => omemo2.cachedDevices(carolJid)?.includes(carol.deviceId) === true, 10000, 'her OMEMO 2 device list pushed to the bot');
      id = await post(gw, 'alerts', { to: carolJid, body: 'for approved eyes' });
    }
    const got = await carol.waitForMessage((m) => m.from === bot && m.body === 'for approved eyes', 70000, 'the message after approval');
    assert.equal(got.encrypted, true);
    if (certain) assert.ok(Date.now() - approvedAt < 4000, `delivered ${Date.now() - approvedAt} ms after the approval (its retry was due later)`);
    assert.equal(got.namespace, 'twomemo', 'OMEMO 2, the newest version carol lists');
    await waitUntil(async () => (await status(gw, id)).status === 'delivered', 15000, 'delivered (receipt)');
    assert.equal(carol.messages.filter((m) => m.from === bot && m.body === 'for approved eyes').length, 1, 'exactly once');
  });

  test('a legacy OMEMO user writing to her proxy is told at once why it was not delivered; her proxy for him asks for her approval', async () => {
    const dora = await PythonOmemoUser.start(server, 'dora', { backends: ['oldmemo'] });
    try {
      const proxyOfCarol = `${carolJid.replace('@', '\\40')}@${gw.domain}`;
      const proxyOfDora = `${dora.jid.replace('@', '\\40')}@${gw.domain}`;
      await dora.send(proxyOfCarol, 'hello carol, via the gateway', { id: 'd2c-1' });
      const e = await dora.waitForEvent((x) => x.event === 'message_error' && x.id === 'd2c-1', 20000, 'error reply to dora');
      assert.equal(e.condition, 'not-acceptable');
      const notice = await dora.waitForMessage((m) => m.from === proxyOfCarol && /not delivered to/.test(m.body ?? ''), 20000, 'readable notice');
      assert.ok(notice.body!.includes(carolJid) && /approv/.test(notice.body!), notice.body!);
      assert.equal(notice.encrypted, true);
      await carol.waitForEvent((x) => x.event === 'subscribe_request' && x.from === proxyOfDora, 15000, 'subscription request from dora\'s proxy');
      assert.ok(!carol.messages.some((m) => m.from === proxyOfDora), 'nothing reached carol');
    } finally {
      await dora.stop();
    }
  });

  test('a refresh read as a hosted JID she has not approved fails for both OMEMO versions, with the code its server\'s answer allows', async () => {
    const r = await fetch(`${gw.url}/v1/contacts/${encodeURIComponent(carolJid)}/devices?refresh=true&as=${encodeURIComponent(`news@${gw.domain}`)}`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(r.status, 200);
    const body = (await r.json()) as { refreshed: Array<{ protocol: string; ok: boolean; error?: string }> };
    const byProtocol = Object.fromEntries(body.refreshed.map((x) => [x.protocol, x]));
    const error = certain ? 'keys_not_visible' : 'no_encryption_available';
    assert.deepEqual(byProtocol.omemo, { protocol: 'omemo', ok: false, error });
    assert.deepEqual(byProtocol.omemo2, { protocol: 'omemo2', ok: false, error });
    // As the approved bot, the same refresh reads both lists.
    const ok = (await (await fetch(`${gw.url}/v1/contacts/${encodeURIComponent(carolJid)}/devices?refresh=true&as=${encodeURIComponent(`alerts@${gw.domain}`)}`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as typeof body;
    assert.ok(ok.refreshed.filter((x) => x.protocol.startsWith('omemo')).every((x) => x.ok), JSON.stringify(ok.refreshed));
  });
  test('declined, a bot is not let in and does not ask again: its messages fail saying so', async () => {
    const news = `news@${gw.domain}`;
    const id = await post(gw, 'news', { to: carolJid, body: 'news she does not want' });
    await carol.waitForEvent((e) => e.event === 'subscribe_request' && e.from === news, 15000, 'subscription request from the news bot');
    await carol.deny(news);
    // The waiting message fails on its next try.
    await waitUntil(async () => (await status(gw, id)).status === 'failed', 20000, 'the first message failed');
    const again = await post(gw, 'news', { to: carolJid, body: 'news again' });
    await waitUntil(async () => (await status(gw, again)).status === 'failed', 15000, 'the second message failed');
    const s = await status(gw, again);
    // Certain on both servers now: her device lists are known (the approved bot read them), and
    // a listed device's bundle that news may not read is there but closed.
    assert.equal(s.error!.code, 'keys_not_visible');
    assert.match(s.error!.message, /declined news@.* request for approval; it is not asked again for a day/);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(carol.events.filter((e) => e.event === 'subscribe_request' && e.from === news).length, 1, 'asked once');
    assert.ok(!carol.messages.some((m) => m.from === news), 'nothing reached carol');
  });
});
