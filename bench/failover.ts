// Failover benchmark (keystore.url): two gateway processes on one PostgreSQL keystore, a real Prosody
// (component_conflict_resolve = kick_old) and a Node OMEMO receiver. A bot posts a message every
// 20 ms to the standby's API (which accepts into PostgreSQL all along); the active instance is then
// ended. Printed: the takeover time, from the kill to the first message the new active instance
// sends (timed at the receiver, so it includes Prosody's routing), for SIGKILL with ha.lease 10 s
// (the default) and 3 s, and for a clean stop (SIGTERM releases the lease); plus lost and doubled.
//
//   npm run bench -- failover          (BENCH_FAILOVER_LEASES=3 runs only the 3 s case, for development)
import { performance } from 'node:perf_hooks';
import { Prosody, prosodyAvailable } from '../test/harness/prosody.js';
import { GatewayProcess } from '../test/harness/gateway-process.js';
import { Postgres, postgresAvailable } from '../test/harness/postgres.js';
import { waitUntil } from '../test/harness/gateway.js';
import { BenchOmemoClient } from './omemo-client.js';
import { table } from './stats.js';

const TOKEN = 'bench-bot-token-0000-0123456789';

interface Outcome {
  scenario: string;
  leaseS: number;
  takeoverMs: number;
  accepted: number;
  lost: number;
  doubled: number;
}

async function scenario(prosody: Prosody, db: Postgres, bob: BenchOmemoClient, leaseS: number, how: 'SIGKILL' | 'SIGTERM'): Promise<Outcome> {
  const url = await db.createDatabase('failover');
  const mk = () =>
    GatewayProcess.create(prosody, {
      bots: [{ localpart: 'bench0', token: TOKEN, rate_limit: { per_second: 100000, burst: 100000 } }],
      extra: { keystore: { url, passphrase: 'keystore-passphrase-for-tests' }, ha: { lease: `${leaseS}s` } },
    });
  const a = await mk();
  const b = await mk();
  const active = (g: GatewayProcess) => async () => {
    const r = await g.readiness();
    return r?.role === 'active' && r.status === 200;
  };
  const received = new Map<string, number[]>();
  bob.onMessage = (m) => {
    const list = received.get(m.body) ?? [];
    list.push(performance.now());
    received.set(m.body, list);
  };
  try {
    await a.start(60000);
    await waitUntil(active(a), 60000, 'first instance active');
    await b.start(60000);
    // A session first, so the takeover is not timed with a session setup in it.
    const warm = `warm ${leaseS} ${how}`;
    await a.post('/v1/messages', TOKEN, { to: bob.jid, body: warm });
    await waitUntil(() => received.has(warm), 30000, 'warm-up message');
    const bodies: string[] = [];
    let stop = false;
    let n = 0;
    const posting = (async () => {
      while (!stop) {
        const body = `fo ${leaseS} ${how} #${n++}`;
        const r = await b.post('/v1/messages', TOKEN, { to: bob.jid, body }).catch(() => null);
        if (r?.status === 202) bodies.push(body);
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    await new Promise((res) => setTimeout(res, 1000));
    const killedAt = performance.now();
    const before = new Set(received.keys());
    if (how === 'SIGKILL') await a.kill();
    else await a.stop();
    // A stopping instance still sends what it has; the new active one's messages come after it exited.
    const goneAt = performance.now();
    await waitUntil(active(b), (leaseS + 60) * 1000, 'the standby took over');
    const fromNew = () => [...received.entries()].filter(([k, t]) => !before.has(k) && k.startsWith('fo ') && t[0]! > goneAt);
    await waitUntil(() => fromNew().length > 0, 60000, 'a message from the new active');
    await new Promise((res) => setTimeout(res, 1000));
    stop = true;
    await posting;
    await waitUntil(() => bodies.every((x) => received.has(x)), 60000, 'every accepted message received').catch(() => undefined);
    await new Promise((res) => setTimeout(res, 1000));
    const firstNew = Math.min(...fromNew().map(([, t]) => t[0]!));
    return {
      scenario: how === 'SIGKILL' ? 'active SIGKILLed' : 'active stopped (SIGTERM)',
      leaseS,
      takeoverMs: firstNew - killedAt,
      accepted: bodies.length,
      lost: bodies.filter((x) => !received.has(x)).length,
      doubled: bodies.filter((x) => (received.get(x)?.length ?? 0) > 1).length,
    };
  } finally {
    await a.destroy();
    await b.destroy();
  }
}

export async function runFailoverBench(): Promise<boolean> {
  if (!prosodyAvailable() || !postgresAvailable()) {
    console.log('\nFailover: skipped (needs prosody and postgresql)');
    return true;
  }
  const leases = (process.env.BENCH_FAILOVER_LEASES ?? '10,3').split(',').map(Number);
  const prosody = await Prosody.start({ componentConflict: 'kick_old' });
  const db = await Postgres.start();
  let bob: BenchOmemoClient | null = null;
  const out: Outcome[] = [];
  try {
    bob = await BenchOmemoClient.start(prosody, 'bob');
    for (const l of leases) out.push(await scenario(prosody, db, bob, l, 'SIGKILL'));
    out.push(await scenario(prosody, db, bob, leases[leases.length - 1]!, 'SIGTERM'));
  } finally {
    await bob?.stop();
    await prosody.destroy();
    await db.stop();
  }
  console.log('\nFailover: two instances on PostgreSQL, the active one ended while a bot posts to the standby every 20 ms');
  console.log(
    table(
      ['scenario', 'ha.lease', 'takeover (kill -> first message from the new active, at the receiver)', 'accepted', 'lost', 'doubled'],
      out.map((o) => [o.scenario, `${o.leaseS} s`, `${(o.takeoverMs / 1000).toFixed(2)} s`, String(o.accepted), String(o.lost), String(o.doubled)]),
    ),
  );
  console.log(
    '  A standby tries the lease every quarter of ha.lease, so after a SIGKILL the takeover is the rest of the\n' +
      '  lease (up to ha.lease) + up to a quarter of it + loading the keystore + connecting + the first send;\n' +
      '  a clean stop releases the lease, so the standby takes over at its next try.',
  );
  const ok = out.every((o) => o.lost === 0 && o.takeoverMs < (o.leaseS * 1.25 + 5) * 1000);
  console.log(ok ? 'Failover targets met (nothing lost, takeover within ha.lease x 1.25 + 5 s).' : 'Failover targets NOT met.');
  return ok;
}
