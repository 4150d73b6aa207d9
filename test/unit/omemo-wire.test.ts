// What goes on the wire matches XEP-0384 v0.3.0 as deployed (protocols.md §1), checked on the XML the
// engine produces and with independent decoding (node:crypto and the library's own curve).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv, randomBytes } from 'node:crypto';
import xml from '@xmpp/xml';
import { FakeNetwork, makePeer, send, chat, encryptedOf, reparse } from './helpers/omemo-net.js';
import { NODE_DEVICELIST, NS_OMEMO, bundleNode } from '../../bridges/omemo/constants.js';
import { libraryCurve } from '../harness/libsignal-curve.js';
import { inspectPreKey, inspectWhisper, SIGNAL_VERSION_BYTE } from '../../bridges/omemo/signal-message.js';
import { parseEncrypted, parseBundle, parseDeviceList, parseId } from '../../bridges/omemo/wire.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';
const b64 = (s: string | null | undefined) => Buffer.from(s ?? '', 'base64');
const ab = (b: Buffer) => new Uint8Array(b).buffer;

test('bundle item: 33-byte 0x05 keys in base64, ids, 100 prekeys, a valid XEdDSA signature', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const items = net.items(A, bundleNode(a.deviceId))!;
  assert.equal(items.length, 1);
  assert.equal(items[0]!.attrs.id, 'current');
  const bundle = items[0]!.getChild('bundle', NS_OMEMO)!;
  const spk = bundle.getChild('signedPreKeyPublic')!;
  assert.match(String(spk.attrs.signedPreKeyId), /^[0-9]+$/);
  const ik = bundle.getChildText('identityKey')!;
  // 0x05 then any byte: base64 'B' followed by one of Q..f (not always 'BQ').
  assert.match(ik, /^B[Q-Za-f]/);
  for (const k of [b64(ik), b64(spk.getText())]) {
    assert.equal(k.length, 33);
    assert.equal(k[0], 0x05);
  }
  const sig = b64(bundle.getChildText('signedPreKeySignature'));
  assert.equal(sig.length, 64);
  // XEdDSA by the identity key over the 33-byte serialized signed prekey (library's own curve).
  const curve = await libraryCurve();
  assert.equal(curve.verifySignature(ab(b64(ik)), ab(b64(spk.getText())), ab(sig)), false, 'signature valid');
  const bad = Buffer.from(sig);
  bad[10]! ^= 1;
  assert.equal(curve.verifySignature(ab(b64(ik)), ab(b64(spk.getText())), ab(bad)), true, 'tampered signature rejected');
  const pks = bundle.getChild('prekeys')!.getChildren('preKeyPublic');
  assert.equal(pks.length, 100);
  const ids = new Set(pks.map((p) => p.attrs.preKeyId));
  assert.equal(ids.size, 100);
  for (const p of pks) {
    const k = b64(p.getText());
    assert.equal(k.length, 33);
    assert.equal(k[0], 0x05);
  }
  // The fingerprint is the identity key without its type byte.
  assert.equal(await a.engine.fingerprint(A), b64(ik).subarray(1).toString('hex'));
  // And our own parser reads it back.
  assert.equal(parseBundle(items)?.preKeys.length, 100);
});

test('device list item', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const items = net.items(A, NODE_DEVICELIST)!;
  const list = items[0]!.getChild('list', NS_OMEMO)!;
  assert.deepEqual(list.getChildren('device').map((d) => d.attrs.id), [String(a.deviceId)]);
  assert.deepEqual(parseDeviceList(items), [a.deviceId]);
});

test('message: header with sid, keys and a 12-byte iv inside it; payload beside it; EME, store hint, fallback body', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const m = await send(a, B, 'wire format check');
  const enc = encryptedOf(m);
  const header = enc.getChild('header')!;
  assert.equal(header.attrs.sid, String(a.deviceId));
  assert.equal(b64(header.getChildText('iv')).length, 12);
  assert.equal(enc.getChild('iv'), undefined, 'iv is inside header');
  assert.ok(enc.getChild('payload'));
  const key = header.getChild('key')!;
  assert.equal(key.attrs.rid, String(b.deviceId));
  assert.equal(key.attrs.prekey, 'true');
  const eme = m.getChild('encryption', 'urn:xmpp:eme:0')!;
  assert.equal(eme.attrs.namespace, NS_OMEMO);
  assert.equal(eme.attrs.name, 'OMEMO');
  assert.ok(m.getChild('store', 'urn:xmpp:hints'));
  assert.ok(m.getChildText('body')!.includes('OMEMO'));
  assert.ok(!m.getChildText('body')!.includes('wire format check'));
  // PreKeyWhisperMessage: 0x33, identity/base keys 33 bytes, inner WhisperMessage 0x33 with an 8-byte MAC.
  const pre = b64(key.getText());
  assert.equal(pre[0], SIGNAL_VERSION_BYTE);
  const info = inspectPreKey(pre)!;
  assert.ok(info.preKeyId > 0);
  assert.equal(info.identityKey.toString('hex'), '05' + (await a.engine.fingerprint(A)));
  // Decrypt the key element with Bob's session directly: 32 bytes = AES-128 key || GCM tag.
  const bId = await b.engine.internals.keyring.ensure(B);
  const km = await b.engine.internals.sessions.decrypt(bId, A, a.deviceId, pre, true);
  assert.equal(km.length, 32);
  const d = createDecipheriv('aes-128-gcm', km.subarray(0, 16), b64(header.getChildText('iv')));
  d.setAuthTag(km.subarray(16));
  const plain = Buffer.concat([d.update(b64(enc.getChildText('payload'))), d.final()]);
  assert.equal(plain.toString('utf8'), 'wire format check');
  // After Bob answers, Alice sends plain WhisperMessages (0x33, no prekey attribute).
  const r = await b.engine.decrypt(B, reparse(xml('message', { from: `${A}/gw`, to: B }, enc)));
  assert.equal(r.ok, false, 'the same ciphertext again is a duplicate');
  const bob = await send(b, A, 'reply');
  await a.engine.decrypt(A, bob);
  const m2 = encryptedOf(await send(a, B, 'normal'));
  const k2 = m2.getChild('header')!.getChild('key')!;
  assert.equal(k2.attrs.prekey, undefined);
  const w = b64(k2.getText());
  assert.equal(w[0], SIGNAL_VERSION_BYTE);
  const wi = inspectWhisper(w)!;
  assert.equal(wi.ratchetKey.length, 33);
  assert.equal(wi.ratchetKey[0], 5);
});

test('key-transport replies: whole messages from the hosted JID resource, no body, no payload, store hint', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const d = await b.engine.decrypt(B, await send(a, B, 'hi'));
  const kt = d.replies[0]!;
  assert.equal(kt.name, 'message');
  assert.equal(kt.attrs.from, `${B}/gw`);
  assert.equal(kt.attrs.to, A);
  assert.equal(kt.attrs.type, 'chat');
  assert.ok(kt.attrs.id);
  assert.equal(kt.getChild('body'), undefined);
  assert.ok(kt.getChild('store', 'urn:xmpp:hints'));
  const enc = encryptedOf(kt);
  assert.equal(enc.getChild('payload'), undefined);
  assert.equal(b64(enc.getChild('header')!.getChildText('iv')).length, 12);
});

test('parsers take what deployed clients send and refuse the rest without throwing', () => {
  assert.equal(parseEncrypted(reparse(xml('encrypted', { xmlns: NS_OMEMO }))), null);
  type K = { rid: string; prekey?: string; text?: string };
  const enc = (attrs: Record<string, string>, iv: Buffer, keys: K[], payload?: string) =>
    reparse(
      xml(
        'encrypted',
        { xmlns: NS_OMEMO },
        xml(
          'header',
          attrs,
          ...keys.map((k) => xml('key', k.prekey ? { rid: k.rid, prekey: k.prekey } : { rid: k.rid }, k.text ?? 'AAAA')),
          xml('iv', {}, iv.toString('base64')),
        ),
        payload ? xml('payload', {}, payload) : null,
      ),
    );
  const good = parseEncrypted(enc({ sid: '123' }, randomBytes(16), [{ rid: '5', prekey: '1', text: 'MwAB' }, { rid: '6' }], 'AAAA'));
  assert.equal(good?.sid, 123);
  assert.equal(good?.iv.length, 16);
  assert.deepEqual(good?.keys.map((k) => [k.rid, k.prekey]), [[5, true], [6, false]]);
  assert.equal(parseEncrypted(enc({ sid: 'x' }, randomBytes(12), [])), null);
  assert.equal(parseEncrypted(enc({ sid: '0' }, randomBytes(12), [])), null);
  assert.equal(parseEncrypted(enc({ sid: '1' }, randomBytes(8), [])), null);
  assert.equal(parseEncrypted(enc({ sid: '1' }, randomBytes(12), [{ rid: '-1' }]))?.keys.length, 0);
  assert.equal(parseId('4294967295'), 4294967295);
  assert.equal(parseId('4294967296'), null);
  assert.equal(parseId(' 12 '), 12);
  assert.equal(parseId('1e3'), null);
  assert.equal(parseBundle([xml('item', { id: 'current' }, xml('bundle', { xmlns: NS_OMEMO }))]), null);
  assert.deepEqual(parseDeviceList([xml('item', {}, xml('list', { xmlns: NS_OMEMO }, xml('device', { id: 'nope' }), xml('device', { id: '7' }), xml('device', { id: '7' })))]), [7]);
  // Fuzz: the Signal message inspectors never throw.
  for (let i = 0; i < 2000; i++) {
    const junk = randomBytes(i % 200);
    if (i % 3 === 0 && junk.length > 0) junk[0] = SIGNAL_VERSION_BYTE;
    inspectWhisper(junk);
    inspectPreKey(junk);
  }
});

test('malformed peer input is a value, never a throw', async () => {
  const net = new FakeNetwork();
  const a = await makePeer(net, A);
  const b = await makePeer(net, B);
  const good = encryptedOf(await send(b, A, 'x'));
  const cases = [
    xml('message', { from: `${B}/x`, to: A }, xml('encrypted', { xmlns: NS_OMEMO })),
    xml('message', { to: A }, good),
    xml('message', { from: `${B}/x`, to: A }, xml('encrypted', { xmlns: NS_OMEMO }, xml('header', { sid: String(b.deviceId) }, xml('key', { rid: String(a.deviceId) }, 'garbage'), xml('iv', {}, randomBytes(12).toString('base64'))))),
    xml('message', { from: `${B}/x`, to: A }, xml('encrypted', { xmlns: NS_OMEMO }, xml('header', { sid: String(b.deviceId) }, xml('key', { rid: String(a.deviceId), prekey: 'true' }, randomBytes(90).toString('base64')), xml('iv', {}, randomBytes(12).toString('base64'))), xml('payload', {}, 'AAAA'))),
  ];
  for (const c of cases) {
    const r = await a.engine.decrypt(A, reparse(c));
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.reason, 'malformed');
  }
  // The real message still works afterwards.
  const d = await a.engine.decrypt(A, chat(b, A, [good]));
  assert.equal(d.ok && d.body, 'x');
});
