// Issue 15's found bugs, each driven through the real connection and router of an in-process gateway
// connected to the fake XEP-0114 server (test/harness/scenario.ts).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { xml } from '../../component/xml.js';
import { Scenario } from '../harness/scenario.js';
import { waitUntil } from '../harness/gateway.js';

const PROXY = 'bob\\40example.org@gw.example.org';
let s: Scenario;
const rejections: unknown[] = [];
const onRejection = (r: unknown) => rejections.push(r);

before(async () => {
  process.on('unhandledRejection', onRejection);
  s = await Scenario.start({
    bots: [
      { localpart: 'alerts', token: 'alerts-bot-token-scenario-0001' },
      { localpart: 'plain', token: 'plain-bot-token-scenario-0001', allow_plaintext: true },
    ],
  });
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

test('bug 4: a queued message that cannot be written as XML fails with a code; the connection is never cut', async () => {
  const connections = s.server.connections;
  const ttlMs = 3600_000;
  // rows as an older gateway could have queued them (the API refuses these now), and a plaintext body with NUL
  const rows = [
    s.gateway.outbox.enqueue({ bot: 'plain', to: 'bob\u0000@example.org', body: 'x', encryption: 'none', idempotencyKey: null, ttlMs }),
    s.gateway.outbox.enqueue({ bot: 'plain', to: 'bob@example.org', body: 'nul \u0000 inside', encryption: 'none', idempotencyKey: null, ttlMs }),
    s.gateway.outbox.enqueue({ bot: 'plain', to: 'bob@example.org/\uFFFF', body: 'x', encryption: 'none', idempotencyKey: null, ttlMs }),
  ].map((r) => r.message.id);
  const good = s.gateway.outbox.enqueue({ bot: 'plain', to: 'carol@example.org', body: 'fine', encryption: 'none', idempotencyKey: null, ttlMs }).message.id;
  s.gateway.sender.kick();
  await waitUntil(() => [...rows, good].every((id) => s.gateway.outbox.get(id)!.status !== 'queued'), 20_000, 'every row tried');
  for (const id of rows) {
    const m = s.gateway.outbox.get(id)!;
    assert.equal(m.status, 'failed', id);
    assert.ok(['jid_malformed', 'stanza_unserializable'].includes(m.error!.code), `${id}: ${m.error!.code}`);
    assert.equal(m.attempts <= 1, true, `${id}: failed at the first attempt, not retried`);
  }
  assert.equal(s.gateway.outbox.get(good)!.status, 'sent');
  // 'sent' means written to the socket; the fake server may not have read it yet (under load).
  await waitUntil(() => s.server.received.some((e) => e.name === 'message' && e.attrs.to === 'carol@example.org'), 10_000, 'the server read the good message');
  assert.equal(s.server.notWellFormed, 0, 'the gateway never wrote XML the server refuses');
  assert.equal(s.server.connections, connections, 'the connection was never cut');
  assert.ok(s.gateway.conn.online);
});

test('storm: the component stream goes through StreamParser (linear in long text runs, where ltx alone is quadratic); a 200 KB body is answered', async () => {
  const { StreamParser } = await import('../../component/stream-parser.js');
  const write = StreamParser.prototype.write;
  let seen = 0;
  StreamParser.prototype.write = function (this: InstanceType<typeof StreamParser>, data: string) {
    seen += data.length;
    write.call(this, data);
  };
  try {
    const reply = await s.exchange(xml('message', { type: 'chat', id: 'big-body', from: 'mallory@example.org/x', to: 'alerts@gw.example.org' }, xml('body', {}, 'A'.repeat(200_000))));
    assert.equal(reply?.attrs.type, 'error', 'a plaintext body to the bot is refused');
    assert.ok(seen >= 200_000, `the stream went through StreamParser (${seen} characters)`);
  } finally {
    StreamParser.prototype.write = write;
  }
});
