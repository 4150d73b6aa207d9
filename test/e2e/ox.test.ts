// OX (XEP-0373/0374) on a real Prosody against an OX user whose OpenPGP is GnuPG (the gpg binary) and
// whose XMPP is slixmpp (test/interop/ox_user.py): the gateway's key nodes read with plain items
// requests and announced by +notify; OX <-> OMEMO (python-omemo) and OX <-> XEP-0027 (GnuPG)
// through proxies, both ways; a bot both ways; and the refusals, each with its reason.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { Prosody } from '../harness/prosody.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { OMEMO_USER_SCRIPT, PythonOmemoUser } from '../harness/omemo-user.js';
import { LegacyPgpUser } from '../harness/pgp-user.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { PotrUser } from '../harness/otr-user.js';

const OX_USER_SCRIPT = join(dirname(OMEMO_USER_SCRIPT), 'ox_user.py');
const BOT_TOKEN = 'alerts-bot-token-0001';
const ADMIN = 'admin-token-for-tests-0001';
const CANARY = 'canary-ox-e2e-77aa ✓ must never reach a log';

describe('OX user (GnuPG + slixmpp) through the gateway', () => {
  let server: Prosody;
  let gw: TestGateway;
  let hook: WebhookReceiver;
  let dave: PythonOmemoUser; // the OX user, driven like the OMEMO one
  let alice: PythonOmemoUser;
  let carol: LegacyPgpUser;
  let bob: PotrUser;
  let bot: string;
  const proxy = (local: string) => `${local}\\40example.org@${gw.domain}`;
  const api = async (path: string, init: RequestInit & { token?: string } = {}) => {
    const res = await fetch(`${gw.url}${path}`, { ...init, headers: { authorization: `Bearer ${init.token ?? ADMIN}`, 'content-type': 'application/json' } });
    return { status: res.status, body: (await res.json().catch(() => null)) as Record<string, unknown> };
  };
  const oxFpr = async (jid: string) => ((await api(`/v1/identities/${encodeURIComponent(jid)}`)).body.ox as { fingerprint: string }).fingerprint;

  before(async () => {
    server = await Prosody.start();
    hook = await WebhookReceiver.start();
    gw = await TestGateway.start(server, { bots: [{ localpart: 'alerts', token: BOT_TOKEN, webhook: { url: hook.url, secret: hook.secret } }] });
    bot = `alerts@${gw.domain}`;
    [dave, alice, carol] = await Promise.all([
      PythonOmemoUser.start(server, 'dave', { resource: 'gpg', script: OX_USER_SCRIPT }),
      PythonOmemoUser.start(server, 'alice', { resource: 'laptop' }),
      LegacyPgpUser.create(server, 'carol'),
    ]);
    bob = await PotrUser.start(server, 'bob', { resource: 'pidgin' });
    assert.match(await carol.register(gw.domain), /Registered/);
  });

  after(async () => {
    await dave?.stop();
    await alice?.stop();
    await carol?.stop();
    await bob?.stop();
    await gw?.destroy();
    await hook?.stop();
    await server?.destroy();
  });

  test("a proxy's key: +notify to a subscribed OX contact, then both nodes read with plain items requests", async () => {
    const erin = proxy('erin');
    await dave.subscribe(erin);
    // The proxy's key is created on first use (here: the identity API) and announced by +notify,
    // or as the last item once the gateway has the contact's caps: either is a PEP event.
    const fpr = await oxFpr(erin);
    const ev = await dave.waitForEvent((e) => e.event === 'pep' && e.from === erin && e.node === 'urn:xmpp:openpgp:0:public-keys', 20000, 'metadata +notify');
    assert.deepEqual(ev.items, [{ id: 'current', payload: true }]);
    const keys = (await dave.command({ cmd: 'keys', jid: erin })) as unknown as { keys: Array<{ fingerprint: string; uids: string[]; item_id: string }>; metadata_item: string };
    assert.equal(keys.metadata_item, 'current');
    assert.equal(keys.keys.length, 1);
    assert.equal(keys.keys[0]!.fingerprint, fpr);
    assert.deepEqual(keys.keys[0]!.uids, [`xmpp:${erin}`], 'GnuPG reads the user ID with the escaped JID');
    assert.match(keys.keys[0]!.item_id, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'item id = the date');
    assert.match(await carol.command(gw.domain, `fingerprints ${erin}`), new RegExp(`OpenPGP \\(OX\\): ${fpr}`));
  });

  test('OX -> OMEMO through the proxy, and OMEMO -> OX signed by the proxy and encrypted with to/time', async () => {
    await dave.command({ cmd: 'send', to: proxy('alice'), body: CANARY, receipt: true, id: 'd2a-1' });
    const got = await alice.waitForMessage((m) => m.body === CANARY, 20000, 'bridged OX message at alice');
    assert.equal(got.from, proxy('dave'));
    assert.equal(got.encrypted, true);
    await dave.waitForEvent((e) => e.event === 'receipt' && e.id === 'd2a-1', 15000, 'receipt bridged back to dave');

    const body = 'Antwort ✓ OMEMO → OX\nzweite Zeile <b>&amp;</b>';
    await alice.send(proxy('dave'), body, { id: 'a2d-1' });
    const m = await dave.waitForMessage((x) => x.body === body, 20000, 'bridged OMEMO message at dave');
    assert.equal(m.from, proxy('alice'));
    assert.equal(m.signature, 'good');
    assert.equal(m.signer, await oxFpr(proxy('alice')));
    assert.equal(m.announced, true, 'signed by the key the proxy announces');
    assert.equal(m.to_ok, true);
    assert.equal(m.kind, 'signcrypt');
    assert.ok(Math.abs(Date.parse(String(m.time)) - Date.now()) < 120_000);
    assert.ok(!gw.logs.text().includes(CANARY), 'no plaintext in the logs');
  });

  test('OX <-> XEP-0027 through proxies, both ways', async () => {
    const daveProxyKey = await carol.fetchKey(gw.domain, proxy('dave'));
    await dave.command({ cmd: 'send', to: proxy('carol'), body: 'OX to PGP', id: 'd2c-1' });
    const atCarol = await carol.receiveEncrypted(proxy('dave'), 20000);
    assert.equal(atCarol.text, 'OX to PGP');
    assert.equal(atCarol.signature, 'good');
    assert.equal(atCarol.signer, daveProxyKey);
    await carol.sendEncrypted(proxy('dave'), 'PGP to OX', daveProxyKey, { id: 'c2d-1' });
    const m = await dave.waitForMessage((x) => x.body === 'PGP to OX', 20000, 'bridged PGP message at dave');
    assert.equal(m.from, proxy('carol'));
    assert.equal(m.signature, 'good');
    assert.equal(m.signer, await oxFpr(proxy('carol')));
  });

  test('OX <-> OTR (python-potr) through proxies, both ways', async () => {
    await bob.command({ cmd: 'query', to: proxy('dave') });
    await bob.waitFor((e) => e.event === 'encrypted', 30000, 'OTR session with the proxy of dave');
    await bob.command({ cmd: 'send', to: proxy('dave'), body: 'OTR to OX ✓' });
    const m = await dave.waitForMessage((x) => x.body === 'OTR to OX ✓', 20000, 'bridged OTR message at dave');
    assert.equal(m.from, proxy('bob'));
    assert.equal(m.signature, 'good');
    assert.equal(m.signer, await oxFpr(proxy('bob')));
    await dave.command({ cmd: 'send', to: proxy('bob'), body: 'OX to OTR ✓', id: 'd2o-1' });
    await waitUntil(() => bob.messages(proxy('dave')).includes('OX to OTR ✓'), 20000, 'bridged OX message at bob');
  });

  test('a bot both ways: REST -> OX by outbound preference, OX -> webhook with the key and its trust', async () => {
    const sent = await api('/v1/messages', { method: 'POST', token: BOT_TOKEN, body: JSON.stringify({ to: dave.jid, body: 'from the bot' }) });
    assert.equal(sent.status, 202);
    const m = await dave.waitForMessage((x) => x.body === 'from the bot', 20000, 'bot message at dave');
    assert.equal(m.from, bot);
    assert.equal(m.signer, await oxFpr(bot));
    await waitUntil(async () => (await api(`/v1/messages/${String(sent.body.id)}`, { token: BOT_TOKEN })).body.encryption === 'ox', 10000, 'status says ox');

    await dave.command({ cmd: 'send', to: bot, body: 'to the bot', id: 'd2b-1' });
    await waitUntil(() => hook.accepted.some((d) => d.payload.body === 'to the bot'), 20000, 'webhook delivery');
    const p = hook.accepted.find((d) => d.payload.body === 'to the bot')!.payload;
    assert.equal(p.encryption, 'ox');
    assert.equal(p.from, dave.jid);
    assert.deepEqual(p.sender, { fingerprint: dave.fingerprint, trust: 'trusted' });
    const devices = await api(`/v1/contacts/${dave.jid}/devices`);
    assert.ok((devices.body.devices as Array<{ protocol: string; fingerprint: string }>).some((d) => d.protocol === 'ox' && d.fingerprint === dave.fingerprint), 'the admin API lists the OX key');
    const t = await api(`/v1/contacts/${dave.jid}/trust`, { method: 'PUT', body: JSON.stringify({ fingerprint: dave.fingerprint.toLowerCase(), trust: 'verified' }) });
    assert.equal(t.status, 200);
    assert.equal(t.body.trust, 'verified');
  });

  test("a contact's new key arrives by +notify; after a verified key it stays untrusted until an admin verifies it", async () => {
    // dave's key was verified above; erin is subscribed to dave's presence (test 1), so dave's
    // server pushes his metadata node to the gateway when it changes.
    const old = dave.fingerprint;
    const { fingerprint: fresh, subkeys, old_subkeys: oldSubkeys } = (await dave.command({ cmd: 'new_key' })) as unknown as { fingerprint: string; subkeys: string[]; old_subkeys: string[] };
    assert.notEqual(fresh, old);
    await waitUntil(() => gw.gateway.trust.get(dave.jid, 'ox', fresh) !== undefined, 20000, 'the new key seen through +notify');
    assert.equal(gw.gateway.trust.get(dave.jid, 'ox', fresh)!.trust, 'untrusted', 'a new key after a verified one is not trusted');
    assert.equal(gw.gateway.trust.get(dave.jid, 'ox', old)!.active, false, 'the withdrawn key is inactive');
    const refused = await api('/v1/messages', { method: 'POST', token: BOT_TOKEN, body: JSON.stringify({ to: dave.jid, body: 'not yet', encryption: 'ox' }) });
    await waitUntil(async () => (await api(`/v1/messages/${String(refused.body.id)}`, { token: BOT_TOKEN })).body.status === 'failed', 20000, 'message failed');
    assert.equal(((await api(`/v1/messages/${String(refused.body.id)}`, { token: BOT_TOKEN })).body.error as { code: string }).code, 'no_trusted_devices');
    assert.equal((await api(`/v1/contacts/${dave.jid}/trust`, { method: 'PUT', body: JSON.stringify({ fingerprint: fresh, trust: 'verified' }) })).status, 200);
    await api('/v1/messages', { method: 'POST', token: BOT_TOKEN, body: JSON.stringify({ to: dave.jid, body: 'to the new key' }) });
    const m = await dave.waitForMessage((x) => x.body === 'to the new key', 20000, 'message to the new key');
    const encTo = m.enc_to as string[];
    assert.ok(encTo.some((k) => subkeys.includes(k)), 'encrypted to the new key');
    assert.ok(!encTo.some((k) => oldSubkeys.includes(k)), 'not to the withdrawn one');
    assert.ok(!gw.logs.text().includes('to the new key'));
  });

  test('refusals: bad signature, wrong to, stale time, unknown key, ciphertext for another key; a replay is dropped', async () => {
    const to = proxy('alice');
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['r-sig', { tamper: true }, /bad-signature/],
      ['r-to', { to_jid: proxy('someone-else') }, /wrong-recipient/],
      ['r-time', { time_offset: -3600 }, /stale-time/],
      ['r-key', { signer: 'alt' }, /unknown-key/],
      ['r-enc', { recipients: 'self' }, /wrong-key/],
    ];
    for (const [id, opts, re] of cases) {
      await dave.command({ cmd: 'send', to, body: `refused ${id}`, id, ...opts });
      const err = await dave.waitForEvent((e) => e.event === 'message_error' && e.id === id, 20000, `error reply for ${id}`);
      assert.equal(err.condition, 'not-acceptable');
      assert.match(String(err.text), re, id);
    }
    await dave.command({ cmd: 'send', to, body: 'once only', id: 'r-once' });
    await alice.waitForMessage((m) => m.body === 'once only', 20000, 'the original');
    await dave.command({ cmd: 'replay_last', to, id: 'r-replay' });
    await dave.command({ cmd: 'send', to, body: 'after the replay', id: 'r-after' });
    await alice.waitForMessage((m) => m.body === 'after the replay', 20000, 'the next good message');
    const bodies = alice.messages.filter((m) => m.from === proxy('dave')).map((m) => m.body);
    assert.equal(bodies.filter((b) => b === 'once only').length, 1, 'the replay was not delivered');
    assert.ok(!bodies.some((b) => b?.startsWith('refused ')), 'no refused message reached alice');
    assert.ok(!dave.events.some((e) => e.event === 'message_error' && e.id === 'r-replay'), 'a replay gets no reply');
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    for (const reason of ['bad-signature', 'wrong-recipient', 'stale-time', 'unknown-key', 'wrong-key']) {
      assert.match(metrics, new RegExp(`gateway_decrypt_failures_total\\{protocol="ox",reason="${reason}"\\} 1`), reason);
    }
    assert.match(metrics, /gateway_replays_dropped_total\{protocol="ox"\} 1/);
  });
});
