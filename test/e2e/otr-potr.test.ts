// OTR through proxy JIDs on a real Prosody, against Debian's python3-potr (OTR v2) and a python-omemo
// user: AKE started by the contact (query) and by the gateway (a message waiting for the session),
// 20 messages each way, fragments both ways (potr with a small maximum message size; the gateway
// with bridge.otr_max_message_size), a garbage data message, a gateway restart mid-session, and the
// fingerprints as the API and the trust store show them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { PythonOmemoUser } from '../harness/omemo-user.js';
import { PotrUser, type OtrEvent } from '../harness/otr-user.js';
import { encodedText, encodeMessage, MSG_DATA } from '../../bridges/otr/messages.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';

const ADMIN = { authorization: 'Bearer admin-token-for-tests-0001', 'content-type': 'application/json' };
const BRIDGE = { otr_max_message_size: 400 };

function otrSuite(name: string, version: 2 | 3, peer: { libotr?: 'v3' }): void {
describe(`OTR (${name}) <-> OMEMO (python-omemo) through proxy JIDs`, () => {
  let server: Prosody;
  let gw: TestGateway;
  let alice: PythonOmemoUser;
  let bob: PotrUser;
  let proxyOfAlice: string;
  let proxyOfBob: string;

  before(async () => {
    server = await Prosody.start();
    gw = await TestGateway.start(server, { bridge: BRIDGE });
    alice = await PythonOmemoUser.start(server, 'alice', { resource: 'laptop' });
    bob = await PotrUser.start(server, 'bob', { resource: 'pidgin', maxMessageSize: 200, ...peer });
    proxyOfAlice = `alice\\40example.org@${gw.domain}`;
    proxyOfBob = `bob\\40example.org@${gw.domain}`;
  });

  after(async () => {
    await bob?.stop();
    await alice?.stop();
    await gw?.destroy();
    await server?.destroy();
  });

  test('the contact starts: a query to the bare proxy JID, AKE, 20 messages each way (fragmented both ways)', async () => {
    await bob.command({ cmd: 'query', to: proxyOfAlice });
    const enc = await bob.waitFor((e) => e.event === 'encrypted', 30000, 'OTR session with the proxy');
    assert.equal(enc.peer, `${proxyOfAlice}/gw`, 'the gateway answered from the proxy\'s full JID');
    const ident = (await (await fetch(`${gw.url}/v1/identities/${encodeURIComponent(proxyOfAlice)}`, { headers: ADMIN })).json()) as { otr: { fingerprint: string } };
    assert.equal(enc.fingerprint, ident.otr.fingerprint, 'potr sees the fingerprint the API shows');
    const devices = (await (await fetch(`${gw.url}/v1/contacts/bob@example.org/devices`, { headers: ADMIN })).json()) as { devices: Array<{ protocol: string; fingerprint: string }> };
    assert.ok(devices.devices.some((d) => d.protocol === 'otr' && d.fingerprint === bob.fingerprint), 'bob\'s OTR key is under the trust API');

    for (let i = 0; i < 20; i++) await bob.command({ cmd: 'send', to: proxyOfAlice, body: `bob->alice ${i} ${i % 5 === 0 ? 'ü'.repeat(300) : 'short'}` });
    await waitUntil(() => alice.messages.filter((m) => m.from === proxyOfBob && m.encrypted).length >= 20, 60000, '20 messages at alice');
    assert.deepEqual(
      alice.messages.filter((m) => m.from === proxyOfBob).map((m) => m.body),
      Array.from({ length: 20 }, (_, i) => `bob->alice ${i} ${i % 5 === 0 ? 'ü'.repeat(300) : 'short'}`),
    );
    for (let i = 0; i < 20; i++) await alice.send(proxyOfBob, `alice->bob ${i} ${i % 4 === 0 ? 'x'.repeat(500) : 'short'}`);
    await waitUntil(() => bob.messages(proxyOfAlice).length >= 20, 60000, '20 messages at bob');
    assert.deepEqual(bob.messages(proxyOfAlice), Array.from({ length: 20 }, (_, i) => `alice->bob ${i} ${i % 4 === 0 ? 'x'.repeat(500) : 'short'}`));
    assert.ok(!gw.logs.text().includes('alice->bob') && !gw.logs.text().includes('bob->alice'), 'no plaintext in the logs');
  });

  test('garbage data messages: an error (and for an unreadable one a fresh AKE), and the session still works', async () => {
    let before = bob.events.length;
    const since = (e: OtrEvent) => bob.events.indexOf(e) >= before;
    await bob.command({ cmd: 'send_raw', to: `${proxyOfAlice}/gw`, body: '?OTR:AAIDAAAAAAEAAAABAAAAwNeadbeefdeadbeef.' });
    const err = await bob.waitFor((e) => since(e) && e.event === 'stanza_error', 15000, 'an error for the malformed message');
    assert.match(String(err.text), /malformed/);
    // Well formed, but with keys the session does not have: an OTR error, a new AKE, the user told.
    before = bob.events.length;
    const ourTag = createProtocolStore(gw.gateway.keystore, 'otr').getJson<number>(proxyOfAlice, 'instance', 'tag')!;
    const h = version === 3 ? { version: 3 as const, senderTag: 0x1234567, receiverTag: ourTag } : { version: 2 as const, senderTag: 0, receiverTag: 0 };
    const unreadable = encodedText(
      encodeMessage({ type: MSG_DATA, h, flags: 0, senderKeyId: 1, recipientKeyId: 1, nextDh: 5n, ctr: Buffer.alloc(8, 1), encMsg: Buffer.from('garbage'), mac: Buffer.alloc(20, 7), oldMacKeys: Buffer.alloc(0), macedData: Buffer.alloc(0) }),
    );
    await bob.command({ cmd: 'send_raw', to: `${proxyOfAlice}/gw`, body: unreadable });
    await bob.waitFor((e) => since(e) && e.event === 'otr_error', 15000, 'an OTR error');
    await bob.waitFor((e) => since(e) && e.event === 'stanza_error', 15000, 'the stanza error: not delivered');
    await bob.waitFor((e) => since(e) && e.event === 'encrypted', 30000, 'a fresh session');
    await bob.command({ cmd: 'send', to: proxyOfAlice, body: 'after the garbage' });
    await waitUntil(() => alice.messages.some((m) => m.body === 'after the garbage'), 20000, 'message after the garbage');
    await alice.send(proxyOfBob, 'alice after the garbage');
    await waitUntil(() => bob.messages(proxyOfAlice).includes('alice after the garbage'), 20000, 'answer after the garbage');
  });

  test('a gateway restart mid-session: the session comes back from the keystore', async () => {
    const dir = gw.dir;
    await gw.stop();
    gw = await TestGateway.start(server, { bridge: BRIDGE, dir });
    await bob.command({ cmd: 'send', to: proxyOfAlice, body: 'after the restart' });
    await waitUntil(() => alice.messages.some((m) => m.body === 'after the restart'), 30000, 'message after the restart at alice');
    await alice.send(proxyOfBob, 'answer after the restart');
    await waitUntil(() => bob.messages(proxyOfAlice).includes('answer after the restart'), 30000, 'answer at bob');
  });

  test('the gateway starts: a message to a contact marked OTR waits for the AKE, then arrives exactly once', async () => {
    const carol = await PotrUser.start(server, version === 3 ? 'carol3' : 'carol', { resource: 'mcabber', ...peer });
    try {
      const carolJid = carol.jid;
      const res = await fetch(`${gw.url}/v1/contacts/${carolJid}`, { method: 'PUT', headers: ADMIN, body: JSON.stringify({ protocol: 'otr' }) });
      assert.equal(res.status, 200);
      await alice.send(`${carolJid.replace('@', '\\40')}@${gw.domain}`, 'waited for the AKE');
      await carol.waitFor((e) => e.event === 'encrypted', 30000, 'session started by the gateway');
      await waitUntil(() => carol.messages().includes('waited for the AKE'), 30000, 'the waiting message');
      await new Promise((r) => setTimeout(r, 2500));
      assert.equal(carol.messages().filter((m) => m === 'waited for the AKE').length, 1, 'exactly once');
    } finally {
      await carol.stop();
    }
  });
});
}

otrSuite('python-potr, v2', 2, {});
otrSuite('libotr 4.1 through a C peer, v3', 3, { libotr: 'v3' });
