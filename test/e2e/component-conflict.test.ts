// What Prosody does with a second XEP-0114 connection for a component domain already connected
// (mod_component's component_conflict_resolve). It decides how a standby may take over (README,
// "More than one instance"): with the default (kick_new) the second connection is refused while the
// first one is up, so a frozen former active instance would keep its domain until its socket dies;
// with kick_old the new connection replaces the old one, which gets a conflict stream error.
// ejabberd (ejabberd_service) has no such setting: it takes the second connection beside the first
// and shares the domain's inbound stanzas between them.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import xml from '@xmpp/xml';
import { Prosody, type XmppServer } from '../harness/prosody.js';
import { Ejabberd } from '../harness/ejabberd.js';
import { XmppUser } from '../harness/xmpp-user.js';
import { waitUntil } from '../harness/gateway.js';
import { ComponentConnection } from '../../component/connection.js';
import { Metrics } from '../../http/metrics.js';

const connection = (server: XmppServer) =>
  new ComponentConnection({
    service: server.componentService,
    domain: server.componentDomain,
    secret: server.componentSecret,
    log: pino({ level: 'silent' }),
    metrics: new Metrics(),
    initialDelayMs: 200,
    maxDelayMs: 500,
    keepaliveMs: 0,
  });

describe('Prosody and a second connection for the same component domain', () => {
  const servers: Prosody[] = [];
  const conns: ComponentConnection[] = [];
  after(async () => {
    for (const c of conns) await c.stop();
    for (const s of servers) await s.destroy();
  });

  test('default (kick_new): the second connection is refused, the first stays', async () => {
    const server = await Prosody.start();
    servers.push(server);
    const first = connection(server);
    const second = connection(server);
    conns.push(first, second);
    await first.start();
    assert.ok(first.online);
    await second.start();
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(second.online, false);
    assert.equal(first.online, true);
    assert.match(String(second.lastError), /conflict|lost|closed|connect/i);
  });

  test('kick_old: the second connection replaces the first, which is closed with a conflict', async () => {
    const server = await Prosody.start({ componentConflict: 'kick_old' });
    servers.push(server);
    const first = connection(server);
    conns.push(first);
    await first.start();
    let firstDropped = false;
    first.on('offline', () => (firstDropped = true));
    const second = connection(server);
    conns.push(second);
    await second.start();
    assert.ok(second.online);
    await waitUntil(() => firstDropped, 10000, 'first connection dropped');
    // The first one reconnects (its own retry loop) and in turn replaces the second: two live
    // instances fight over the domain. Hence a standby never connects, and a former active one
    // stops reconnecting once its lease is gone.
    await first.stop();
  });
});

describe('ejabberd and a second connection for the same component domain', () => {
  let server: Ejabberd;
  const conns: ComponentConnection[] = [];
  let alice: XmppUser | undefined;
  after(async () => {
    await alice?.client.stop().catch(() => undefined);
    for (const c of conns) await c.stop();
    await server?.destroy();
  });

  test('both connections stay up and the inbound stanzas are split between them; once one goes, the other gets everything', async () => {
    server = await Ejabberd.start();
    const first = connection(server);
    const second = connection(server);
    conns.push(first, second);
    const got = new Map<ComponentConnection, string[]>([[first, []], [second, []]]);
    for (const c of [first, second]) c.on('stanza', (el) => el.is('message') && got.get(c)!.push(String(el.attrs.id)));
    await first.start();
    await second.start();
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(first.online, true);
    assert.equal(second.online, true, `ejabberd refused the second connection: ${second.lastError}`);

    alice = await XmppUser.connect(server, 'alice');
    const N = 60;
    for (let i = 0; i < N; i++) await alice.send(xml('message', { to: `user${i}@${server.componentDomain}`, type: 'chat', id: `split-${i}` }, xml('body', {}, 'x')));
    await waitUntil(() => got.get(first)!.length + got.get(second)!.length >= N, 10000, 'every message reached one of the connections');
    // Each stanza reaches exactly one of the two; neither gets them all.
    assert.equal(new Set([...got.get(first)!, ...got.get(second)!]).size, N);
    assert.equal(got.get(first)!.length + got.get(second)!.length, N);
    assert.ok(got.get(first)!.length > 0 && got.get(second)!.length > 0, `split ${got.get(first)!.length}/${got.get(second)!.length}`);

    await first.stop();
    got.get(second)!.length = 0;
    for (let i = 0; i < 20; i++) await alice.send(xml('message', { to: `user${i}@${server.componentDomain}`, type: 'chat', id: `after-${i}` }, xml('body', {}, 'x')));
    await waitUntil(() => got.get(second)!.length >= 20, 10000, 'the remaining connection gets every message');
  });
});
