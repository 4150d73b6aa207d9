// A legacy XEP-0027 user (GnuPG + a real XMPP login) and a bot, through Prosody and the gateway:
// key registration and lookup by chat command, user -> webhook, bot -> user via the REST API with
// receipts, and the failure cases (replay, tampered armor, wrong key, unknown key, plaintext).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { LegacyPgpUser } from '../harness/pgp-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { xml } from '../harness/xmpp-user.js';

const BOT_TOKEN = 'alerts-bot-token-0001';
const ADMIN = 'admin-token-for-tests-0001';
const CANARY = 'canary-body-9f2c ✓ must never reach a log';

describe('XEP-0027 user and a bot through the gateway', () => {
  let server: Prosody;
  let gw: TestGateway;
  let hook: WebhookReceiver;
  let carol: LegacyPgpUser;
  let bot: string;
  let botFpr: string;

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    gw = await TestGateway.start(server, { bots: [{ localpart: 'alerts', token: BOT_TOKEN, webhook: { url: hook.url, secret: hook.secret } }] });
    bot = `alerts@${gw.domain}`;
    carol = await LegacyPgpUser.create(server, 'carol');
  });

  after(async () => {
    await carol?.stop();
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test('register by chat command (user ID checked) and fetch the bot key with `key`', async () => {
    const help = await carol.command(gw.domain, 'help');
    assert.match(help, /fingerprints <jid>/);
    const reg = await carol.register(gw.domain);
    assert.match(reg, new RegExp(`Registered your OpenPGP key ${carol.gpg.fingerprint}`));
    assert.equal(gw.gateway.contacts.get(carol.bare)!.pgpFingerprint, carol.gpg.fingerprint);
    botFpr = await carol.fetchKey(gw.domain, bot);
    const ids = await carol.gpg.userIds(botFpr);
    assert.deepEqual(ids, [`xmpp:${bot}`]);
    const fps = await carol.command(gw.domain, `fingerprints ${bot}`);
    assert.match(fps, new RegExp(botFpr));
    // A key whose user ID names someone else is refused by the chat command.
    const mallory = await LegacyPgpUser.create(server, 'mallory', { uid: 'xmpp:carol@example.org' });
    try {
      assert.match(await mallory.register(gw.domain), /Error: The key has no user ID naming your address/);
      assert.equal(gw.gateway.contacts.get(mallory.bare)?.pgpKey ?? null, null);
    } finally {
      await mallory.stop();
    }
  });

  test('user -> bot: decrypted exactly, posted to the webhook with the sender key and trust, receipt acknowledged', async () => {
    const body = `${CANARY}\nzweite Zeile — 😀`;
    const sent = await carol.sendEncrypted(bot, body, botFpr, { receipt: true });
    await waitUntil(() => hook.messages().length === 1, 15000, 'webhook delivery');
    const m = hook.messages()[0]!;
    assert.equal(m.body, body);
    assert.equal(m.from, carol.bare);
    assert.equal(m.to, bot);
    assert.equal(m.encryption, 'pgp');
    assert.deepEqual(m.sender, { fingerprint: carol.gpg.fingerprint, trust: 'trusted' });
    const ack = await carol.xmpp.waitFor((el) => el.getChild('received', 'urn:xmpp:receipts')?.attrs.id === sent.attrs.id, 10000, 'receipt');
    assert.equal(String(ack.attrs.from).split('/')[0], bot);
  });

  test('bot -> user: POST /v1/messages is encrypted to the registered key and signed; the receipt marks it delivered', async () => {
    const body = `deploy finished ✓ ${CANARY}`;
    const res = await fetch(`${gw.url}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${BOT_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: carol.bare, body }),
    });
    assert.equal(res.status, 202);
    const { id } = (await res.json()) as { id: string };
    const got = await carol.receiveEncrypted(bot);
    assert.equal(got.text, body);
    assert.equal(got.signature, 'good');
    assert.equal(got.signer, botFpr);
    assert.equal(got.stanza.attrs.id, id);
    assert.ok(got.stanza.getChild('request', 'urn:xmpp:receipts'));
    assert.equal(got.stanza.getChild('encryption', 'urn:xmpp:eme:0')?.attrs.namespace, 'jabber:x:encrypted');
    await carol.xmpp.send(xml('message', { to: String(got.stanza.attrs.from), id: `ack-${id}` }, xml('received', { xmlns: 'urn:xmpp:receipts', id })));
    await waitUntil(async () => {
      const r = await fetch(`${gw.url}/v1/messages/${id}`, { headers: { authorization: `Bearer ${BOT_TOKEN}` } });
      return ((await r.json()) as { status: string }).status === 'delivered';
    }, 10000, 'delivered status');
    await waitUntil(() => hook.accepted.some((d) => d.payload.type === 'status' && d.payload.message_id === id && d.payload.status === 'delivered'), 10000, 'status webhook');
  });

  test('a replayed ciphertext is dropped; tampered armor and the wrong key get an error reply; nothing reaches the webhook', async () => {
    const before = hook.messages().length;
    const original = await carol.encryptedMessage(bot, 'only once', botFpr, { id: 'once-1' });
    await carol.xmpp.send(original);
    await waitUntil(() => hook.messages().length === before + 1, 10000, 'first copy delivered');
    const replay = xml('message', { to: bot, type: 'chat', id: 'once-2' }, ...original.children.filter((c) => typeof c !== 'string').map((c) => c));
    await carol.xmpp.send(replay);
    // Tampered: flip a character inside the base64 of the encrypted data.
    const tamperedText = (await carol.gpg.encrypt('tampered', botFpr, { sign: true })).replace(/([A-Za-z0-9+/]{40})([A-Za-z])/, (_m, a: string, b: string) => a + (b === 'A' ? 'B' : 'A'));
    await carol.xmpp.send(xml('message', { to: bot, type: 'chat', id: 'tamper-1' }, xml('body', {}, '[enc]'), xml('x', { xmlns: 'jabber:x:encrypted' }, tamperedText)));
    const tamperErr = await carol.xmpp.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'tamper-1', 10000, 'error for tampered armor');
    assert.match(tamperErr.getChild('error')!.getChildText('text', 'urn:ietf:params:xml:ns:xmpp-stanzas') ?? '', /could not decrypt this message \((malformed|bad-mac)\)/);
    // Encrypted to carol's own key instead of the bot's.
    await carol.sendEncrypted(bot, 'wrong key', carol.gpg.fingerprint, { id: 'wrongkey-1' });
    const wrongErr = await carol.xmpp.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'wrongkey-1', 10000, 'error for wrong key');
    assert.match(wrongErr.getChild('error')!.getChildText('text', 'urn:ietf:params:xml:ns:xmpp-stanzas') ?? '', /wrong-key/);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(hook.messages().length, before + 1, 'the replay and the bad messages were not delivered');
    assert.equal(carol.xmpp.received.filter((el) => el.attrs.type === 'error' && el.attrs.id === 'once-2').length, 0, 'a replay is dropped quietly');
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /gateway_replays_dropped_total\{protocol="pgp"\} 1/);
  });

  test('an unregistered sender\'s signed message is refused as unknown-key; plaintext is refused', async () => {
    const dave = await LegacyPgpUser.create(server, 'dave');
    try {
      await dave.gpg.importKey(await carol.gpg.exportPublic());
      await dave.fetchKey(gw.domain, bot);
      await dave.sendEncrypted(bot, 'who am I', botFpr, { id: 'dave-1' });
      const err = await dave.xmpp.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'dave-1', 10000, 'unknown key error');
      assert.match(err.getChild('error')!.getChildText('text', 'urn:ietf:params:xml:ns:xmpp-stanzas') ?? '', /unknown-key/);
      await dave.xmpp.send(xml('message', { to: bot, type: 'chat', id: 'plain-1' }, xml('body', {}, 'plain text')));
      const plain = await dave.xmpp.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'plain-1', 10000, 'plaintext refused');
      assert.ok(plain.getChild('error')!.getChild('not-acceptable'));
    } finally {
      await dave.stop();
    }
  });

  test('bot -> unregistered user fails with a reason the bot can act on', async () => {
    const res = await fetch(`${gw.url}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${BOT_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: `nobody@${server.domain}`, body: 'hello?' }),
    });
    const { id } = (await res.json()) as { id: string };
    let m: { status: string; error?: { code: string } } = { status: 'queued' };
    await waitUntil(async () => {
      m = (await (await fetch(`${gw.url}/v1/messages/${id}`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as typeof m;
      return m.status === 'failed';
    }, 15000, 'failed status');
    assert.equal(m.error!.code, 'no_encryption_available');
  });

  test('signed presence: the gateway signs its presence; a signature by an unregistered key is reported to the user', async () => {
    await carol.xmpp.send(xml('presence', { to: bot, type: 'subscribe' }));
    const pres = await carol.xmpp.waitFor((el) => el.is('presence') && !el.attrs.type && String(el.attrs.from).startsWith(`${bot}/`), 10000, 'bot presence');
    const sig = pres.getChildText('x', 'jabber:x:signed');
    assert.ok(sig, 'presence carries jabber:x:signed');
    const v = await carol.gpg.verifyDetached(pres.getChildText('status') ?? '', sig, await (async () => (await carol.gpg.run(['--armor', '--export', botFpr])).stdout.toString())());
    assert.equal(v.valid, true);
    // Carol now signs her presence with a new key she has not registered.
    const other = await LegacyPgpUser.create(server, 'carol-other-key');
    try {
      const status = 'Online with my new key';
      const signed = await other.gpg.signDetached(status);
      await carol.xmpp.send(xml('presence', { to: bot }, xml('status', {}, status), xml('x', { xmlns: 'jabber:x:signed' }, signed)));
      const notice = await carol.xmpp.waitFor((el) => el.is('message') && el.attrs.from === gw.domain && /signed presence/.test(el.getChildText('body') ?? ''), 10000, 'mismatch notice');
      assert.match(notice.getChildText('body')!, new RegExp(carol.gpg.fingerprint));
    } finally {
      await other.stop();
    }
  });

  test('no body ever reached a log', () => {
    const logs = gw.logs.text();
    assert.ok(logs.length > 1000, 'logs were captured');
    assert.ok(!logs.includes('canary-body-9f2c'), 'a message body leaked into the logs');
    assert.ok(!logs.includes('zweite Zeile'));
  });
});
