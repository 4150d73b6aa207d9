// The accept path of a bot message alone (issue 16): POST /v1/messages from the request arriving to
// the 202 written and the outbox row committed, with nothing sent after it (the component is never
// connected, so no OMEMO, no stanza). A gateway (its real app and keystore: a SQLite file, WAL) runs
// in a child process; this process posts over kept-alive connections, closed loop, `concurrency`
// requests in flight, and reads the child's CPU time (user + system, process.cpuUsage) around each
// measured batch. The figure is the child's CPU per accepted request, independent of the offered
// load; alternate it with another build's (node OTHER/dist/bench/accept.js) to compare.
//   node dist/bench/accept.js [CONCURRENCY,...] [REQUESTS] [ROUNDS]
// BENCH_ACCEPT_PROF=DIR writes the child's CPU profile (--cpu-prof) into DIR; BENCH_ACCEPT_NODE_ARGS
// adds node options to the child (e.g. --perf-basic-prof for `perf record -p`). BENCH_ACCEPT_STUB=outbox
// answers from a stub instead of OutboxStore.accept (no SQLite, no seal: the HTTP side alone);
// `queued` stubs the sender's wake-up too. Stubbed figures say where the CPU goes, not what it is.
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TOKEN = 'bench-accept-token-0123456789';
const BODY = JSON.stringify({
  to: 'bob@example.org',
  body: 'bench r1 123 deploy of service-x finished on host-y; 3 warnings, 0 errors; see the dashboard for details.',
});

type ToChild = { op: 'cpu' } | { op: 'stop' };
type FromChild = { op: 'port'; port: number } | { op: 'cpu'; user: number; system: number };

async function serve(): Promise<void> {
  const { validateConfig } = await import('../config.js');
  const { Gateway } = await import('../context.js');
  const { createLogger } = await import('../log.js');
  const dir = mkdtempSync(join(tmpdir(), 'bench-accept-'));
  const config = validateConfig({
    component: { domain: 'gw.example.org', secret: 'component-secret' },
    http: { admin_token: 'admin-token-0123456789' },
    keystore: { path: join(dir, 'gateway.db'), passphrase: 'keystore-passphrase-for-tests' },
    bridge: { allowed_domains: ['example.org'] },
    // Rows pile up (nothing is sent): no depth limit in the way.
    limits: { max_outbox_depth: 100_000_000 },
    bots: Array.from({ length: 10 }, (_, i) => ({ localpart: `bench${i}`, token: i === 0 ? TOKEN : `${TOKEN}-${i}`, rate_limit: { per_second: 100_000, burst: 100_000 } })),
  });
  const gw = new Gateway(config, { log: createLogger('info'), keystore: { kdf: { N: 1024, r: 8, p: 1 } } });
  const stub = process.env.BENCH_ACCEPT_STUB ?? '';
  if (stub.includes('outbox')) {
    const ob = gw.outbox as unknown as { accept: (m: { bot: string; to: string }) => Promise<unknown> };
    let i = 0;
    ob.accept = (m) => Promise.resolve({ created: true, message: { id: `msg_${i++}`, kind: 'bot', bot: m.bot, to: m.to, status: 'queued', nextAttemptAt: 0 } });
  }
  if (stub.includes('queued')) (gw as unknown as { sender: { queued: () => void } }).sender.queued = () => {};
  const server = createServer(gw.app);
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    process.send!({ op: 'port', port: typeof a === 'object' && a ? a.port : 0 } satisfies FromChild);
  });
  process.on('message', (m: ToChild) => {
    if (m.op === 'cpu') {
      const c = process.cpuUsage();
      process.send!({ op: 'cpu', user: c.user, system: c.system } satisfies FromChild);
    } else {
      server.close();
      server.closeAllConnections();
      gw.keystore.close();
      rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    }
  });
}

class Child {
  readonly #p: ChildProcess;
  #waiting: Array<(m: FromChild) => void> = [];

  constructor() {
    const prof = process.env.BENCH_ACCEPT_PROF;
    this.#p = fork(fileURLToPath(import.meta.url), ['serve'], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      execArgv: [...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : []), ...(process.env.BENCH_ACCEPT_NODE_ARGS?.split(' ').filter(Boolean) ?? [])],
    });
    this.#p.on('message', (m: FromChild) => this.#waiting.shift()?.(m));
  }

  next(): Promise<FromChild> {
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  async cpuUs(): Promise<number> {
    const m = this.next();
    this.#p.send({ op: 'cpu' } satisfies ToChild);
    const r = await m;
    if (r.op !== 'cpu') throw new Error('bench accept: unexpected answer');
    return r.user + r.system;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.#p.once('exit', () => resolve());
      this.#p.send({ op: 'stop' } satisfies ToChild);
    });
  }
}

function poster(port: number): (token: string) => Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  return (token) =>
    new Promise((resolve) => {
      const req = request(
        {
          agent,
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/v1/messages',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY) },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', () => resolve(0));
      req.end(BODY);
    });
}

/** `n` requests, `concurrency` in flight; the tokens of bench0..bench9 in turn when `bots` > 1. */
async function load(post: (token: string) => Promise<number>, n: number, concurrency: number, bots: number): Promise<number> {
  let next = 0;
  let refused = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const bot = i % bots;
      if ((await post(bot === 0 ? TOKEN : `${TOKEN}-${bot}`)) !== 202) refused++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return refused;
}

async function main(): Promise<void> {
  const [cText = '1,10', nText = '10000', roundsText = '3'] = process.argv.slice(2);
  const levels = cText.split(',').map(Number);
  const n = Number(nText);
  const rounds = Number(roundsText);
  const child = new Child();
  const hello = await child.next();
  if (hello.op !== 'port') throw new Error('bench accept: no port');
  const post = poster(hello.port);
  await load(post, 3000, 10, 10); // warm-up (JIT, SQLite pages)
  console.log(`accept path: ${n} POST /v1/messages per run (closed loop), load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  for (let r = 0; r < rounds; r++) {
    for (const c of levels) {
      const bots = c === 1 ? 1 : 10;
      const cpu0 = await child.cpuUs();
      const t0 = process.hrtime.bigint();
      const refused = await load(post, n, c, bots);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const cpu = (await child.cpuUs()) - cpu0;
      console.log(
        `  round ${r + 1} concurrency ${String(c).padStart(2)} (${bots} bot${bots > 1 ? 's' : ''}): ${(cpu / n).toFixed(1).padStart(6)} µs gateway CPU per request, ${((n / ms) * 1000).toFixed(0)}/s, ${refused} not 202`,
      );
    }
  }
  console.log(`  load after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  await child.stop();
  process.exit(0);
}

if (process.argv[2] === 'serve') await serve();
else await main();
