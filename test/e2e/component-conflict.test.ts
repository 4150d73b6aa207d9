// What Prosody does with a second XEP-0114 connection for a component domain already connected
// (mod_component's component_conflict_resolve). It decides how a standby may take over (README,
// "More than one instance"): with the default (kick_new) the second connection is refused while the
// first one is up, so a frozen former active instance would keep its domain until its socket dies;
// with kick_old the new connection replaces the old one, which gets a conflict stream error.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Prosody } from '../harness/prosody.js';
import { waitUntil } from '../harness/gateway.js';
import { ComponentConnection } from '../../component/connection.js';
import { Metrics } from '../../http/metrics.js';

const connection = (server: Prosody) =>
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
