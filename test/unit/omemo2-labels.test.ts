// OMEMO 2 device labels: what a hosted JID publishes (the label without `labelsig`, which Debian's
// python-twomemo refuses), and how a contact's labels are read: signed ones shown only when the
// signature verifies against the device's identity key, unsigned ones marked unverified.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import { NODE_DEVICES, NS_OMEMO2 } from '../../bridges/omemo2/constants.js';
import { buildDeviceList, parseDeviceLabels } from '../../bridges/omemo2/wire.js';
import { xeddsaPublic, xeddsaSign, generateX25519 } from '../../bridges/ratchet/primitives.js';
import { FakeNetwork, reparse } from './helpers/omemo-net.js';
import { makeDual } from './helpers/omemo2-net.js';

const item = (devices: ReturnType<typeof xml>) => reparse(xml('item', { id: 'current' }, devices));

test('a hosted JID publishes its label in its OMEMO 2 device list, unsigned', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alerts@gw.example', { label: 'bot (E2EE gateway)' });
  const list = net.items(a.jid, NODE_DEVICES)![0]!.getChild('devices', NS_OMEMO2)!;
  const dev = list.getChildren('device');
  assert.equal(dev.length, 1);
  assert.equal(dev[0]!.attrs.id, String(a.deviceId));
  assert.equal(dev[0]!.attrs.label, 'bot (E2EE gateway)');
  assert.equal(dev[0]!.attrs.labelsig, undefined, 'no labelsig: python-twomemo 1.0.3 refuses the list with it');
  // Without a label option the list is as before.
  const b = await makeDual(net, 'plain@gw.example');
  assert.equal(net.items(b.jid, NODE_DEVICES)![0]!.getChild('devices', NS_OMEMO2)!.getChild('device')!.attrs.label, undefined);
});

test('a contact\'s label: unsigned shown as unverified, signed shown only when the signature verifies', async () => {
  const net = new FakeNetwork();
  const a = await makeDual(net, 'alerts@gw.example', { label: 'bot (E2EE gateway)' });
  const b = await makeDual(net, 'bob@gw.example', { label: 'bob laptop' });
  const bFpr = (await b.omemo2.devices(b.jid))[0]!.fingerprint;
  // a reads b's list (as a refresh does) and sees b's unsigned label.
  await a.omemo2.contactDevices(a.jid, b.jid, { refresh: true, bundles: true });
  assert.deepEqual(a.omemo2.deviceLabel(b.jid, b.deviceId, bFpr), { label: 'bob laptop', verified: false });
  assert.equal(a.omemo2.deviceLabel(b.jid, b.deviceId + 1, bFpr), null, 'no label for a device the list does not label');

  // A contact with a signed label (XEP-0384 0.9): verified against its identity key.
  const k = generateX25519();
  const ik = xeddsaPublic(k.priv);
  const fpr = ik.toString('hex');
  const sig = xeddsaSign(k.priv, Buffer.from('carol phone', 'utf8')).toString('base64');
  const signed = (label: string, labelsig: string) => [item(xml('devices', { xmlns: NS_OMEMO2 }, xml('device', { id: '7', label, labelsig })))];
  await a.omemo2.onPepEvent!(a.jid, 'carol@example.org/phone', NODE_DEVICES, signed('carol phone', sig));
  assert.deepEqual(a.omemo2.deviceLabel('carol@example.org', 7, fpr), { label: 'carol phone', verified: true });
  assert.equal(a.omemo2.deviceLabel('carol@example.org', 7, bFpr), null, 'the signature of another key: not shown');
  await a.omemo2.onPepEvent!(a.jid, 'carol@example.org/phone', NODE_DEVICES, signed('your bank', sig));
  assert.equal(a.omemo2.deviceLabel('carol@example.org', 7, fpr), null, 'a label changed under its signature: not shown');
});

test('labels: too long, or with an unreadable signature, are left out; ids still read', () => {
  const long = 'x'.repeat(53);
  const items = [item(xml('devices', { xmlns: NS_OMEMO2 },
    xml('device', { id: '1', label: long }),
    xml('device', { id: '2', label: 'ok', labelsig: 'AAAA' }),
    xml('device', { id: '3', label: 'fine' }),
    xml('device', { id: '4', label: '' }),
  ))];
  const labels = parseDeviceLabels(items);
  assert.deepEqual([...labels.keys()], [3]);
  assert.deepEqual(labels.get(3), { label: 'fine', sig: null });
  const built = buildDeviceList([5, 6], new Map([[6, 'six']]));
  assert.equal(built.getChildren('device')[0]!.attrs.label, undefined);
  assert.equal(built.getChildren('device')[1]!.attrs.label, 'six');
});
