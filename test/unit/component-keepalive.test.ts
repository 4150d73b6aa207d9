// The component connection's keepalive (component/connection.ts) against the fake XEP-0114 server,
// which never answers the gateway's pings: a server that keeps sending is busy, not gone, and keeps
// its connection (a storm: the answer waits behind what the server still has to read); a server
// that sends nothing after the ping is dropped and connected to again.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import xml from '@xmpp/xml';
import { ComponentConnection } from '../../component/connection.js';
import { Metrics } from '../../http/metrics.js';
import { FakeComponentServer } from '../harness/fake-component-server.js';
import { waitUntil } from '../harness/gateway.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups) await c();
});

test('keepalive: a server that keeps sending keeps the connection though its pings go unanswered; a silent one is dropped and reconnected', async () => {
  const server = await new FakeComponentServer(undefined, undefined, { routeSelf: false }).listen();
  const metrics = new Metrics();
  const conn = new ComponentConnection({
    service: server.service,
    domain: server.domain,
    secret: server.secret,
    log: pino({ level: 'silent' }),
    metrics,
    initialDelayMs: 50,
    maxDelayMs: 100,
    keepaliveMs: 200,
  });
  cleanups.push(async () => {
    await conn.stop();
    await server.close();
  });
  await conn.start();
  assert.equal(server.connections, 1);
  const pings = () => server.received.filter((e) => e.name === 'iq' && e.getChild('ping', 'urn:xmpp:ping')).length;

  // Busy: a stanza every 20 ms, no ping answered. Several keepalive rounds time out meanwhile.
  let n = 0;
  const chatter = setInterval(() => {
    if (server.online) server.inject(xml('message', { from: 'bob@example.org/x', to: `alerts@${server.domain}`, id: `c${++n}` }, xml('body', {}, 'x')));
  }, 20);
  try {
    await waitUntil(() => pings() >= 5, 10_000, 'five keepalive pings');
    assert.equal(server.connections, 1, 'the connection was kept while the server was sending');
    assert.ok(conn.online);
    assert.match((await metrics.render()).body, /gateway_errors_total\{kind="component_keepalive_slow"\} [1-9]/);
  } finally {
    clearInterval(chatter);
  }

  // Silent: nothing after the ping, so the next timeout drops the connection, and it comes back.
  await waitUntil(() => server.connections >= 2, 10_000, 'a new connection after the server went silent');
});
