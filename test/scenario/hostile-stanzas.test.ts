// Issue 15's found bugs, each driven through the real connection and router of an in-process gateway
// connected to the fake XEP-0114 server (test/harness/scenario.ts).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { xml } from '../../component/xml.js';
import { Scenario } from '../harness/scenario.js';

const PROXY = 'bob\\40example.org@gw.example.org';
let s: Scenario;
const rejections: unknown[] = [];
const onRejection = (r: unknown) => rejections.push(r);

before(async () => {
  process.on('unhandledRejection', onRejection);
  s = await Scenario.start();
});
after(async () => {
  process.removeListener('unhandledRejection', onRejection);
  await s?.destroy();
});

/** A stripped signature with the signature packet's version byte replaced. */
function withSignatureVersion(stripped: string, version: number): string {
  const b = Buffer.from(stripped.split('\n=')[0]!.replace(/\s/g, ''), 'base64');
  const headerLength = b[0]! & 0x40 ? (b[1]! < 192 ? 2 : b[1]! < 224 ? 3 : 6) : 1 + [1, 2, 4][b[0]! & 3]!;
  b[headerLength] = version;
  return b.toString('base64');
}

test('bug 1: a signed presence with a v5 or v2 signature packet neither crashes nor rejects; the gateway keeps answering', async () => {
  const sig = await s.gateway.pgp!.signPresence('carol\\40legacy.example@gw.example.org', 'Online');
  for (const v of [5, 2, 3, 6]) {
    s.server.inject(
      xml('presence', { from: 'mallory@legacy.example/x', to: PROXY }, xml('status', {}, 'Online'), xml('x', { xmlns: 'jabber:x:signed' }, withSignatureVersion(sig, v))),
    );
  }
  await s.settle();
  // give a discarded promise time to surface
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(rejections, []);
  assert.ok(s.gateway.conn.online);
  const pong = await s.exchange(xml('iq', { type: 'get', id: 'p1', from: 'mallory@legacy.example/x', to: s.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  assert.equal(pong?.attrs.type, 'result');
});
