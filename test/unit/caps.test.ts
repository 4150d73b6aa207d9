import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import { capsVer } from '../../component/caps.js';

// Known answers from XEP-0115 §5.2 and §5.3.
test('caps ver: the simple example of XEP-0115', () => {
  const ver = capsVer(
    [{ category: 'client', type: 'pc', name: 'Exodus 0.9.1' }],
    ['http://jabber.org/protocol/caps', 'http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items', 'http://jabber.org/protocol/muc'],
  );
  assert.equal(ver, 'QgayPKawpkPSDYmwT/WM94uAlu0=');
});

test('caps ver: the complex example with languages and an extended form', () => {
  const form = xml(
    'x',
    { xmlns: 'jabber:x:data', type: 'result' },
    xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, 'urn:xmpp:dataforms:softwareinfo')),
    xml('field', { var: 'ip_version' }, xml('value', {}, 'ipv4'), xml('value', {}, 'ipv6')),
    xml('field', { var: 'os' }, xml('value', {}, 'Mac')),
    xml('field', { var: 'os_version' }, xml('value', {}, '10.5.1')),
    xml('field', { var: 'software' }, xml('value', {}, 'Psi')),
    xml('field', { var: 'software_version' }, xml('value', {}, '0.11')),
  );
  const ver = capsVer(
    [
      { category: 'client', type: 'pc', lang: 'en', name: 'Psi 0.11' },
      { category: 'client', type: 'pc', lang: 'el', name: 'Ψ 0.11' },
    ],
    ['http://jabber.org/protocol/caps', 'http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items', 'http://jabber.org/protocol/muc'],
    [form],
  );
  assert.equal(ver, 'q07IKJEyjvHSyhy//CH0CxmKi8w=');
});
