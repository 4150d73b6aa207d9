// Bridging a legacy XEP-0027 user (GnuPG) and an OMEMO user (python-omemo) through proxy JIDs, on a
// real Prosody: both directions with exact bodies (Unicode, newlines, 64 KB), receipts bridged both
// ways, and the failure cases: replay, tampered armor, wrong key, unknown key, and the key-drop
// command (the OMEMO user is told why, nothing goes out in plaintext).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway } from '../harness/gateway.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { LegacyPgpUser } from '../harness/pgp-user.js';
import { xml } from '../harness/xmpp-user.js';

const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

describe('XEP-0027 <-> OMEMO through proxy JIDs', () => {
  let server: Prosody;
  let gw: TestGateway;
  let alice: PythonOmemoUser;
  let carol: LegacyPgpUser;
  let proxyOfAlice: string;
  let proxyOfCarol: string;
  let aliceProxyFpr: string;

  before(async () => {
    server = await Prosody.start();
    gw = await TestGateway.start(server);
    alice = await PythonOmemoUser.start(server, 'alice', { resource: 'laptop' });
    carol = await LegacyPgpUser.create(server, 'carol');
    proxyOfAlice = `alice\\40example.org@${gw.domain}`;
    proxyOfCarol = `carol\\40example.org@${gw.domain}`;
    assert.match(await carol.register(gw.domain), /Registered/);
    aliceProxyFpr = await carol.fetchKey(gw.domain, proxyOfAlice);
    assert.deepEqual(await carol.gpg.userIds(aliceProxyFpr), [`xmpp:${proxyOfAlice}`], 'the proxy key names the escaped JID');
  });

  after(async () => {
    await alice?.stop();
    await carol?.stop();
    await gw?.destroy();
    await server?.destroy();
  });

  test('PGP -> OMEMO: exact body, from the proxy of the sender, receipt bridged back', async () => {
    const body = 'Grüße aus dem Altbau 🏚️\nzweite Zeile\r\nmit CRLF\tund Tab';
    const sent = await carol.sendEncrypted(proxyOfAlice, body, aliceProxyFpr, { receipt: true, id: 'c2a-1' });
    const got = await alice.waitForMessage((m) => m.body === body, 20000, 'bridged message');
    assert.equal(got.from, proxyOfCarol);
    assert.equal(got.encrypted, true);
    // Alice's client acknowledges; the gateway acknowledges to carol from alice's proxy.
    const ack = await carol.xmpp.waitFor((el) => el.getChild('received', 'urn:xmpp:receipts')?.attrs.id === sent.attrs.id, 15000, 'bridged receipt');
    assert.equal(String(ack.attrs.from).split('/')[0], proxyOfAlice);
  });

  test('OMEMO -> PGP: exact body, encrypted to the registered key and signed by the proxy, receipt bridged back', async () => {
    const body = 'Antwort ✓ — OMEMO nach PGP\nline 2';
    const sent = await alice.send(proxyOfCarol, body, { receipt: true, id: 'a2c-1' });
    const got = await carol.receiveEncrypted(proxyOfAlice, 20000);
    assert.equal(got.text, body);
    assert.equal(got.signature, 'good');
    assert.equal(got.signer, aliceProxyFpr);
    assert.ok(got.stanza.getChild('request', 'urn:xmpp:receipts'), 'the receipt request travels on');
    await carol.xmpp.send(xml('message', { to: String(got.stanza.attrs.from), id: 'ack-a2c-1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id: String(got.stanza.attrs.id) })));
    const r = await alice.waitForEvent((e) => e.event === 'receipt' && e.id === sent.id, 15000, 'receipt at alice');
    assert.equal(String(r.from).split('/')[0], proxyOfCarol);
  });

  test('a 64 KB body crosses both ways byte for byte', async () => {
    let big = '';
    for (let i = 0; Buffer.byteLength(big) < 64 * 1024 - 100; i++) big += `${String(i).padStart(4, '0')} ${'äbc😀'.repeat(3)} ${'x'.repeat(20)}\n`;
    assert.ok(Buffer.byteLength(big) <= 64 * 1024 && Buffer.byteLength(big) > 63 * 1024);
    await carol.sendEncrypted(proxyOfAlice, big, aliceProxyFpr, { id: 'big-1' });
    const got = await alice.waitForMessage((m) => m.body?.length === big.length, 30000, '64 KB message at alice');
    assert.equal(got.body, big);
    await alice.send(proxyOfCarol, big, { id: 'big-2' });
    const back = await carol.receiveEncrypted(proxyOfAlice, 30000);
    assert.equal(back.text, big);
  });

  test('replay, tampered armor and the wrong key are refused at the proxy; nothing reaches the OMEMO user', async () => {
    const original = await carol.encryptedMessage(proxyOfAlice, 'once only', aliceProxyFpr, { id: 'r-1' });
    await carol.xmpp.send(original);
    await alice.waitForMessage((m) => m.body === 'once only', 15000, 'first copy');
    await carol.xmpp.send(xml('message', { to: proxyOfAlice, type: 'chat', id: 'r-2' }, ...original.getChildElements()));
    const tampered = (await carol.gpg.encrypt('tampered', aliceProxyFpr, { sign: true })).replace(/([A-Za-z0-9+/]{40})([A-Za-z])/, (_m, a: string, b: string) => a + (b === 'A' ? 'B' : 'A'));
    await carol.xmpp.send(xml('message', { to: proxyOfAlice, type: 'chat', id: 't-1' }, xml('body', {}, '[enc]'), xml('x', { xmlns: 'jabber:x:encrypted' }, tampered)));
    await carol.sendEncrypted(proxyOfAlice, 'to the wrong key', carol.gpg.fingerprint, { id: 'w-1' });
    for (const [id, re] of [['t-1', /(malformed|bad-mac)/], ['w-1', /wrong-key/]] as const) {
      const err = await carol.xmpp.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === id, 15000, `error for ${id}`);
      assert.match(err.getChild('error')!.getChildText('text', NS_STANZAS) ?? '', re);
    }
    await carol.sendEncrypted(proxyOfAlice, 'after the bad ones', aliceProxyFpr, { id: 'ok-1' });
    await alice.waitForMessage((m) => m.body === 'after the bad ones', 15000, 'the next good message');
    const bodies = alice.messages.filter((m) => m.from === proxyOfCarol).map((m) => m.body);
    assert.equal(bodies.filter((b) => b === 'once only').length, 1, 'the replay was not delivered');
    assert.ok(!bodies.includes('tampered') && !bodies.includes('to the wrong key'));
  });

  test('an unknown key is refused; after `unregister` the OMEMO user is told why and nothing is sent in plaintext', async () => {
    const dave = await LegacyPgpUser.create(server, 'dave');
    try {
      const fpr = await dave.fetchKey(gw.domain, proxyOfAlice);
      await dave.sendEncrypted(proxyOfAlice, 'unregistered sender', fpr, { id: 'u-1' });
      const err = await dave.xmpp.waitFor((el) => el.attrs.type === 'error' && el.attrs.id === 'u-1', 15000, 'unknown-key error');
      assert.match(err.getChild('error')!.getChildText('text', NS_STANZAS) ?? '', /unknown-key/);
    } finally {
      await dave.stop();
    }
    assert.match(await carol.command(gw.domain, 'unregister'), /Removed the OpenPGP key/);
    const before = carol.xmpp.received.length;
    await alice.send(proxyOfCarol, 'are you there?', { id: 'gone-1' });
    const e = await alice.waitForEvent((x) => x.event === 'message_error' && x.id === 'gone-1', 15000, 'error reply to alice');
    assert.equal(e.condition, 'not-acceptable');
    const notice = await alice.waitForMessage((m) => m.from === proxyOfCarol && /not delivered to carol@example\.org/.test(m.body ?? ''), 15000, 'readable notice');
    assert.equal(notice.encrypted, true, 'the notice is OMEMO-encrypted like her message');
    await new Promise((r) => setTimeout(r, 300));
    const toCarol = carol.xmpp.received.slice(before).filter((el) => el.is('message') && String(el.attrs.from).startsWith(proxyOfAlice));
    assert.equal(toCarol.length, 0, 'nothing reached carol, in plaintext or otherwise');
  });
});
