// What is not a message is not delivered as one. With plaintext allowed for a bot (an admin
// setting), plain messages reach its webhook marked encryption "none"; chat states, receipts and the
// fallback bodies of encryption the gateway cannot read never do.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { XmppUser, xml } from '../harness/xmpp-user.js';

describe('a bot with plaintext allowed', () => {
  let server: Prosody;
  let hook: WebhookReceiver;
  let gw: TestGateway;
  let erin: XmppUser;
  let bot: string;

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    gw = await TestGateway.start(server, {
      bots: [
        { localpart: 'open', token: 'open-bot-token-000001', allow_plaintext: true, webhook: { url: hook.url, secret: hook.secret } },
        { localpart: 'closed', token: 'closed-bot-token-00001', webhook: { url: hook.url, secret: hook.secret } },
      ],
    });
    bot = `open@${gw.domain}`;
    erin = await XmppUser.connect(server, 'erin');
  });

  after(async () => {
    await erin?.stop();
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test('plain text is delivered marked as unencrypted and untrusted', async () => {
    await erin.send(xml('message', { to: bot, type: 'chat', id: 'p1' }, xml('body', {}, 'plain hello')));
    await waitUntil(() => hook.messages().length === 1, 10000, 'plaintext at the webhook');
    const m = hook.messages()[0]!;
    assert.equal(m.body, 'plain hello');
    assert.equal(m.encryption, 'none');
    assert.deepEqual(m.sender, { trust: 'untrusted' });
  });

  test('chat states, receipts and fallback bodies of unreadable encryption never reach the webhook', async () => {
    await erin.send(xml('message', { to: bot, type: 'chat', id: 'cs1' }, xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
    await erin.send(xml('message', { to: bot, id: 'rc1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id: 'whatever' })));
    const fallbacks: Array<[string, ReturnType<typeof xml>]> = [
      ['omemo2', xml('encrypted', { xmlns: 'urn:xmpp:omemo:2' }, xml('header', { sid: '1' }))],
      ['ox', xml('openpgp', { xmlns: 'urn:xmpp:openpgp:0' }, 'AAAA')],
      ['eme', xml('encryption', { xmlns: 'urn:xmpp:eme:0', namespace: 'urn:example:future', name: 'FutureCrypt' })],
    ];
    for (const [id, payload] of fallbacks) {
      await erin.send(xml('message', { to: bot, type: 'chat', id }, payload, xml('body', {}, 'This message is encrypted; your client cannot read it.')));
      const err = await erin.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === id, 10000, `refusal of ${id}`);
      // Refused, never delivered: an engine that exists reads this junk as malformed ("could not
      // decrypt"), one that does not yet says it "cannot decrypt" the protocol.
      assert.match(err.getChild('error')!.getChildText('text', 'urn:ietf:params:xml:ns:xmpp-stanzas') ?? '', /(cannot|could not) decrypt/);
    }
    await erin.send(xml('message', { to: bot, type: 'chat', id: 'otr1' }, xml('body', {}, '?OTRv23? Erin would like an OTR session.')));
    // An OTR query is answered with an AKE (a D-H Commit), never delivered as text.
    await erin.waitFor((el) => /^\?OTR:AAMC/.test(el.getChildText('body') ?? ''), 10000, 'D-H Commit answering the OTR query');
    await erin.send(xml('message', { to: bot, type: 'chat', id: 'p2' }, xml('body', {}, 'second plain')));
    await waitUntil(() => hook.messages().length === 2, 10000, 'the next plain message');
    assert.deepEqual(hook.messages().map((m) => m.body), ['plain hello', 'second plain']);
  });

  test('the plaintext setting is per bot: another bot still refuses plain text', async () => {
    await erin.send(xml('message', { to: `closed@${gw.domain}`, type: 'chat', id: 'c1' }, xml('body', {}, 'hello closed')));
    const err = await erin.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'c1', 10000, 'refusal');
    assert.ok(err.getChild('error')!.getChild('not-acceptable'));
  });
});
