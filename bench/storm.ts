// `npm run bench -- storm`: hostile traffic against the gateway (its own process) on a real Prosody,
// all on loopback, bounded in count and time (issue 15). Two phases:
//   1. storm: STORM_RATE hostile stanzas per second for STORM_SECONDS from ATTACKERS accounts of an
//      allowed domain (junk OMEMO with made-up device ids, first-contact device-list reads of new
//      proxies, subscribes, 100 KB plaintext bodies, odd pubsub and disco requests, junk XEP-0027),
//      with the default limits; then a minute of quiet.
//   2. burst: BURST first-contact device-list reads of distinct new proxies, as fast as the clients
//      send them, against a gateway (a new one) whose stanza and identity limits are lifted, to
//      measure what a first contact costs now (identities created, keystore growth, time).
// Throughout, a monitor account of another domain pings the component every PING_EVERY_MS, and its
// own server too (Prosody answers those itself: the floor under the component's figure), in each
// phase; its round trips, the gateway's RSS, event-loop lag and server connection are recorded, and
// the CPU used by the gateway and by Prosody (a slow ping can be either's fault). The monitor runs
// in its own process (bench/storm-monitor.ts): in the attackers' process, whose event loop stalls
// for 1.6-2.6 s while it writes the burst and reads its answers, a pong was counted late while it
// waited there. STORM_MONITOR=inline runs it there as before. Each phase prints its slowest pongs
// beside what was going on (the server's own pings, the gateway's lag, the bytes waiting on the
// component connection each way, the inbound queue); STORM_TIMELINE=1 prints that per second.
// Keystore growth is printed for the main file and the WAL apart: the WAL file keeps its largest
// size until it is cut back, so main + WAL at the end of the burst is not what the identities take;
// the main file after the gateway has stopped (its close runs a TRUNCATE checkpoint) is.
// STORM_PHASES=storm runs only the storm phase (10 s of quiet, no burst), STORM_PHASES=burst only the
// burst, for quick iterations; STORM_LIMITS (JSON, the limits: section) runs the storm with other limits.
// STORM_PROSODY_STORAGE=internal runs Prosody with Debian's file storage (the bench's setting before):
// there each roster change rewrites the user's whole roster file, and the attackers' own subscribes
// (one new roster item each, the gateway's approval and subscribe-back update it) made Prosody
// rewrite ~30 growing files a second. The default, sql (SQLite, one row per item), is what
// production setups commonly run. The server's configuration is printed with the figures.
// BENCH_GATEWAY_CPU_PROF=DIR profiles each phase's gateway process into DIR (bench/cpu-profile.ts).
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Prosody, prosodyVersion } from '../test/harness/prosody.js';
import { GatewayProcess } from '../test/harness/gateway-process.js';
import { XmppUser, xml } from '../test/harness/xmpp-user.js';
import { cpuSeconds, findPid, rssBytes, scrape, total } from './bots-support.js';
import { table } from './stats.js';
import { OwnLag, Pinger, pingStats, slowest, type MonitorArgs, type MonitorSnapshot, type PingRecord, type PingStats } from './storm-monitor.js';

const ATTACKERS = 8;
const STORM_RATE = 500;
const STORM_SECONDS = 20;
const QUIET_SECONDS = 60;
const BURST = 10_000;
const BURST_TIMEOUT_MS = 180_000;
const PING_EVERY_MS = 100;
const PING_TIMEOUT_MS = 5000;
const BOT_TOKEN = 'alerts-bot-token-0001';
const MB = 1024 * 1024;

// Targets (issue 15)
const TARGET_PING_P99_MS = 1000;
const TARGET_RSS_BACK_MB = 100;

const NS_OMEMO = 'eu.siacs.conversations.axolotl';
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';

/**
 * Bytes waiting on the component connection (loopback, from /proc/net/tcp): what the gateway wrote
 * that Prosody has not read yet (its receive queue plus the gateway's send queue), and the reverse.
 * A reply to a ping waits behind all of the first.
 */
export function componentBacklog(componentPort: number): { toProsody: number; toGateway: number } {
  const out = { toProsody: 0, toGateway: 0 };
  let text = '';
  try {
    text = readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return out;
  }
  const port = componentPort.toString(16).toUpperCase().padStart(4, '0');
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || f[3] !== '01') continue; // established
    const [tx, rx] = f[4]!.split(':').map((h) => parseInt(h, 16)) as [number, number];
    if (f[1]!.endsWith(`:${port}`)) {
      out.toProsody += rx; // Prosody's side: received, not read
      out.toGateway += tx;
    } else if (f[2]!.endsWith(`:${port}`)) {
      out.toProsody += tx; // the gateway's side: written, not yet taken
      out.toGateway += rx;
    }
  }
  return out;
}

/** Samples the gateway's RSS and connection once a second. */
class Watch {
  readonly rss: Array<{ at: number; bytes: number }> = [];
  readonly lag: Array<{ at: number; ms: number }> = [];
  readonly backlog: Array<{ at: number; toProsody: number; toGateway: number }> = [];
  readonly queue: Array<{ at: number; n: number }> = [];
  readonly output: Array<{ at: number; held: number; unconfirmed: number }> = [];
  /** The keystore's main file and WAL, in bytes. */
  readonly files: Array<{ at: number; main: number; wal: number }> = [];
  /** CPU seconds used so far by the gateway and by the server. */
  readonly cpu: Array<{ at: number; gateway: number; server: number }> = [];
  serverPid: number | null = null;
  disconnectedSamples = 0;
  #timer: NodeJS.Timeout | null = null;
  constructor(
    readonly pid: number | null,
    readonly url: string,
    readonly componentPort: number,
    readonly dir: string,
  ) {}
  start(): void {
    this.#timer = setInterval(() => {
      this.files.push({ at: Date.now(), ...dbFiles(this.dir) });
      this.cpu.push({ at: Date.now(), gateway: cpuSeconds(this.pid) ?? 0, server: cpuSeconds(this.serverPid) ?? 0 });
      this.backlog.push({ at: Date.now(), ...componentBacklog(this.componentPort) });
      const b = rssBytes(this.pid);
      if (b !== null) this.rss.push({ at: Date.now(), bytes: b });
      scrape(this.url)
        .then((s) => {
          if (total(s, 'gateway_component_connected') !== 1) this.disconnectedSamples++;
          this.lag.push({ at: Date.now(), ms: total(s, 'gateway_event_loop_lag_seconds') * 1000 });
          this.queue.push({ at: Date.now(), n: total(s, 'gateway_cache_entries', 'cache="inbound_queue"') });
          this.output.push({ at: Date.now(), held: total(s, 'gateway_component_output', 'state="held"'), unconfirmed: total(s, 'gateway_component_output', 'state="unconfirmed"') });
        })
        .catch(() => this.disconnectedSamples++);
    }, 1000);
  }
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
  }
  maxBetween(from: number, to: number): number {
    return Math.max(0, ...this.rss.filter((r) => r.at >= from && r.at <= to).map((r) => r.bytes));
  }
  maxBacklogBetween(from: number, to: number): { toProsody: number; toGateway: number } {
    const xs = this.backlog.filter((r) => r.at >= from && r.at <= to);
    return { toProsody: Math.max(0, ...xs.map((r) => r.toProsody)), toGateway: Math.max(0, ...xs.map((r) => r.toGateway)) };
  }
  maxHeldBetween(from: number, to: number): number {
    return Math.max(0, ...this.output.filter((r) => r.at >= from && r.at <= to).map((r) => r.held));
  }
  maxUnconfirmedBetween(from: number, to: number): number {
    return Math.max(0, ...this.output.filter((r) => r.at >= from && r.at <= to).map((r) => r.unconfirmed));
  }
  maxQueueBetween(from: number, to: number): number {
    return Math.max(0, ...this.queue.filter((r) => r.at >= from && r.at <= to).map((r) => r.n));
  }
  maxWalBetween(from: number, to: number): number {
    return Math.max(0, ...this.files.filter((r) => r.at >= from && r.at <= to).map((r) => r.wal));
  }
  /** The sample nearest to `at` of `xs`. */
  static near<T extends { at: number }>(xs: readonly T[], at: number): T | undefined {
    let best: T | undefined;
    for (const x of xs) if (!best || Math.abs(x.at - at) < Math.abs(best.at - at)) best = x;
    return best;
  }
  /** The worst event-loop lag the gateway reported (each sample: the worst tick of its last second). */
  maxLagBetween(from: number, to: number): number {
    return Math.max(0, ...this.lag.filter((r) => r.at >= from && r.at <= to).map((r) => r.ms));
  }
}

const proxyOf = (local: string, domain: string, gw: string) => `${local}\\40${domain}@${gw}`;

/** The i-th hostile stanza (a mix of the kinds issue 15 found). */
function hostile(i: number, domain: string, gw: string, botDevice: number): ReturnType<typeof xml> {
  const bot = `alerts@${gw}`;
  const id = `h${i}`;
  switch (i % 8) {
    case 0: // junk OMEMO, made-up device id, a key for the bot's device (decrypt fails, no repair fetch)
      return xml(
        'message',
        { to: bot, type: 'chat', id },
        xml(
          'encrypted',
          { xmlns: NS_OMEMO },
          xml('header', { sid: String(randomInt(1, 0x7fffffff)) }, xml('key', { rid: String(botDevice) }, randomBytes(60).toString('base64')), xml('iv', {}, randomBytes(12).toString('base64'))),
          xml('payload', {}, randomBytes(24).toString('base64')),
        ),
      );
    case 1: // first-contact device-list read of a new proxy
      return xml('iq', { type: 'get', to: proxyOf(`storm${i}`, domain, gw), id }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: `${NS_OMEMO}.devicelist` })));
    case 2: // subscribe to a new proxy (signed presence back: a PGP key)
      return xml('presence', { to: proxyOf(`sub${i}`, domain, gw), type: 'subscribe', id });
    case 3: // one in 64: a 100 KB plaintext body to the bot (refused: plaintext); else a presence probe of a new proxy
      if (i % 64 === 3) return xml('message', { to: bot, type: 'chat', id }, xml('body', {}, 'A'.repeat(100 * 1024)));
      return xml('presence', { to: proxyOf(`probe${i}`, domain, gw), type: 'probe', id });
    case 4: // a bundle read with a made-up device id
      return xml('iq', { type: 'get', to: bot, id }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: `${NS_OMEMO}.bundles:${randomInt(1, 0x7fffffff)}` })));
    case 5: // disco#info of a new proxy
      return xml('iq', { type: 'get', to: proxyOf(`disco${i}`, domain, gw), id }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' }));
    case 6: // junk XEP-0027 to a proxy
      return xml('message', { to: proxyOf('bob', domain, gw), type: 'chat', id }, xml('body', {}, 'x'), xml('x', { xmlns: 'jabber:x:encrypted' }, randomBytes(300).toString('base64')));
    default: // an iq nobody handles
      return xml('iq', { type: 'set', to: bot, id }, xml('query', { xmlns: `urn:example:junk:${i % 97}` }));
  }
}

const mb = (b: number) => `${(b / MB).toFixed(0)} MB`;
const kb = (b: number) => `${(b / 1024).toFixed(0)} KB`;
const ms = (x: number) => `${x.toFixed(x < 10 ? 1 : 0)} ms`;
const fileSize = (path: string) => statSync(path, { throwIfNoEntry: false })?.size ?? 0;
/** The keystore's main file and its WAL (the WAL keeps its largest size until a TRUNCATE checkpoint). */
const dbFiles = (dir: string) => ({ main: fileSize(join(dir, 'gateway.db')), wal: fileSize(join(dir, 'gateway.db-wal')) });
const limitedLines = (s: Map<string, number>) =>
  [...s.entries()]
    .filter(([k, v]) => k.startsWith('gateway_limited_total{') && v > 0)
    .map(([k, v]) => `${/limit="([^"]+)"/.exec(k)?.[1]}=${v}`)
    .join(', ');

async function connectAll(server: Prosody, names: string[], domain?: string): Promise<XmppUser[]> {
  const out: XmppUser[] = [];
  for (const n of names) out.push(await XmppUser.connect(server, n, { presence: false, ...(domain ? { domain } : {}) }));
  return out;
}

/** The monitor's two ping series (component, own server) and its own event-loop lag. */
interface Monitor {
  snapshot(): Promise<MonitorSnapshot>;
  stop(): Promise<MonitorSnapshot>;
  readonly where: string;
}

/** The monitor in this process, on its XmppUser (STORM_MONITOR=inline: as the bench did before). */
function inlineMonitor(user: XmppUser, targets: string[]): Monitor {
  const lag = new OwnLag();
  const pingers = targets.map((t) => new Pinger((el, ms) => user.iq(el, ms), user.client as never, t, PING_EVERY_MS, PING_TIMEOUT_MS));
  for (const p of pingers) p.start();
  const snap = (): MonitorSnapshot => ({ rtts: Object.fromEntries(pingers.map((p) => [p.to, p.rtts])), lag: lag.samples });
  return {
    where: "in the clients' process (STORM_MONITOR=inline)",
    snapshot: async () => snap(),
    stop: async () => {
      for (const p of pingers) await p.stop();
      lag.stop();
      return snap();
    },
  };
}

/** The monitor in its own process (bench/storm-monitor.ts), so the attackers' clients cannot delay it. */
async function processMonitor(server: Prosody, targets: string[]): Promise<Monitor> {
  const domain = 'monitor.example';
  const { password } = server.addUser('monitor', 'password', domain);
  const args: MonitorArgs = { service: server.c2sService, domain, username: 'monitor', password, targets, everyMs: PING_EVERY_MS, timeoutMs: PING_TIMEOUT_MS };
  const child: ChildProcess = fork(new URL('./storm-monitor.js', import.meta.url).pathname, [JSON.stringify(args)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = <T>(pred: (m: Record<string, unknown>) => boolean): Promise<T> =>
    new Promise((resolve, reject) => {
      const onMsg = (m: Record<string, unknown>) => {
        if (!pred(m)) return;
        child.off('message', onMsg);
        child.off('exit', onExit);
        resolve(m as T);
      };
      const onExit = (code: number | null) => reject(new Error(`storm monitor exited (${code})`));
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
  await next((m) => m.ready === true);
  let stopped: MonitorSnapshot | null = null;
  return {
    where: 'its own process',
    snapshot: async () => {
      if (stopped) return stopped;
      const p = next<{ snapshot: MonitorSnapshot }>((m) => m.snapshot !== undefined);
      child.send({ cmd: 'snapshot' });
      return (await p).snapshot;
    },
    stop: async () => {
      if (stopped) return stopped;
      const p = next<{ snapshot: MonitorSnapshot }>((m) => m.stopped === true);
      child.send({ cmd: 'stop' });
      stopped = (await p).snapshot;
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
      return stopped;
    },
  };
}

/** Starts a gateway process; BENCH_GATEWAY_CPU_PROF=DIR profiles it (bench/cpu-profile.ts). */
async function startGateway(gw: GatewayProcess): Promise<void> {
  const prof = process.env.BENCH_GATEWAY_CPU_PROF;
  const savedNodeOptions = process.env.NODE_OPTIONS;
  if (prof) {
    mkdirSync(prof, { recursive: true });
    process.env.NODE_OPTIONS = `${savedNodeOptions ?? ''} --import=${new URL('./cpu-profile.js', import.meta.url).href}`.trim();
  }
  try {
    await gw.start();
  } finally {
    if (prof) {
      if (savedNodeOptions === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = savedNodeOptions;
    }
  }
}

const row = (phase: string, p: PingStats, rss = ''): string[] => [phase, String(p.n), ms(p.p50), ms(p.p99), ms(p.max), String(p.unanswered), p.late, rss];

/** The slowest pongs of a phase, each beside what was going on then: where the time went. */
function explainSlowest(what: string, rtts: readonly PingRecord[], serverRtts: readonly PingRecord[], watch: Watch, from: number, to: number): void {
  for (const r of slowest(rtts, from, to, 3)) {
    const sent = r.at - r.ms;
    const srv = serverRtts.filter((s) => s.at >= sent - 200 && s.at - s.ms <= r.at + 200).map((s) => s.ms);
    const lag = watch.lag.filter((l) => l.at >= sent && l.at <= r.at + 1000).map((l) => l.ms);
    const f = Watch.near(watch.files, r.at);
    const bl = watch.backlog.filter((b) => b.at >= sent && b.at <= r.at + 1000);
    const q = watch.queue.filter((b) => b.at >= sent && b.at <= r.at + 1000).map((b) => b.n);
    console.log(
      `${what}: slow pong ${ms(r.ms)} at +${((sent - from) / 1000).toFixed(1)} s; server pings meanwhile ${srv.length ? srv.map((x) => ms(x)).join(', ') : 'none'}; ` +
        `gateway lag (worst tick per second) ${lag.length ? lag.map((x) => ms(x)).join(', ') : '?'}; ` +
        `component connection backlog (per second) toward the gateway ${bl.map((b) => kb(b.toGateway)).join(', ') || '?'}, toward Prosody ${bl.map((b) => kb(b.toProsody)).join(', ') || '?'}; ` +
        `inbound queue ${q.join(', ') || '?'}; WAL ${f ? mb(f.wal) : '?'}`,
    );
  }
}

/** STORM_TIMELINE=1: one line per second of a phase (where a slow pong's time went). */
function timeline(what: string, rtts: readonly PingRecord[], serverRtts: readonly PingRecord[], watch: Watch, from: number, to: number): void {
  if (!process.env.STORM_TIMELINE) return;
  const lines: string[][] = [];
  for (let t = from; t < to; t += 1000) {
    const inSec = <T extends { at: number }>(xs: readonly T[]) => xs.filter((x) => x.at >= t && x.at < t + 1000);
    const c = inSec(rtts).map((r) => r.ms);
    const sv = inSec(serverRtts).map((r) => r.ms);
    const b = inSec(watch.backlog)[0];
    const o = inSec(watch.output)[0];
    const cpuNow = inSec(watch.cpu)[0];
    const cpuPrev = watch.cpu.filter((x) => x.at < t).at(-1);
    lines.push([
      `+${((t - from) / 1000).toFixed(0)}`,
      c.length ? ms(Math.max(...c)) : '-',
      sv.length ? ms(Math.max(...sv)) : '-',
      ms(inSec(watch.lag)[0]?.ms ?? 0),
      String(inSec(watch.queue)[0]?.n ?? '?'),
      b ? kb(b.toProsody) : '?',
      b ? kb(b.toGateway) : '?',
      o ? kb(o.unconfirmed) : '?',
      cpuNow && cpuPrev ? `${((cpuNow.gateway - cpuPrev.gateway) * 100).toFixed(0)}%` : '?',
      cpuNow && cpuPrev ? `${((cpuNow.server - cpuPrev.server) * 100).toFixed(0)}%` : '?',
      mb(inSec(watch.files)[0]?.wal ?? 0),
    ]);
  }
  console.log(`${what}, per second:`);
  console.log(table(['t', 'pong max', 'server pong max', 'gw lag', 'inbound q', 'to Prosody', 'to gw', 'unconfirmed', 'gw CPU', 'Prosody CPU', 'WAL'], lines));
}

type Ctx = { server: Prosody; gwDomain: string; attackers: XmppUser[]; monitor: Monitor };

const PHASES = new Set((process.env.STORM_PHASES ?? 'storm,burst').split(',').map((x) => x.trim()));

export async function runStormBench(): Promise<boolean> {
  console.log('\n## storm: hostile stanzas against the gateway (its own process, Prosody on loopback)');
  const storage = process.env.STORM_PROSODY_STORAGE === 'internal' ? 'internal' : 'sql';
  const server = await Prosody.start({ extraDomains: ['monitor.example'], storage });
  // The server's configuration, as run (its own settings; ports and paths left out).
  const cfg = readFileSync(server.configFile, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('--') && !/^(pidfile|data_path|certificates|log|interfaces|c2s_ports|c2s_interfaces|component_ports|component_interfaces|s2s_ports|http_ports|https_ports|component_secret|run_as_root)\b/.test(l));
  console.log(`Prosody ${prosodyVersion() ?? '?'} (Debian), storage ${storage}${storage === 'sql' ? ' (STORM_PROSODY_STORAGE=internal: Debian files)' : ' (Debian files; the default is sql)'}; config: ${cfg.join(' | ')}`);
  const gwDomain = server.componentDomain;
  const users: XmppUser[] = [];
  let monitor: Monitor | null = null;
  const gws: GatewayProcess[] = [];
  let ok = true;
  try {
    const attackers = await connectAll(server, Array.from({ length: ATTACKERS }, (_, i) => `mallory${i}`));
    users.push(...attackers);
    // The monitor pings the component and its own server (Prosody answers those itself: the floor under the component's figure).
    const targets = [gwDomain, 'monitor.example'];
    if (process.env.STORM_MONITOR === 'inline') {
      const [m] = await connectAll(server, ['monitor'], 'monitor.example');
      users.push(m!);
      monitor = inlineMonitor(m!, targets);
    } else {
      monitor = await processMonitor(server, targets);
    }
    console.log(`phases: ${[...PHASES].join(', ')} (STORM_PHASES=storm|burst|storm,burst); the monitor runs in ${monitor.where}`);
    const ctx: Ctx = { server, gwDomain, attackers, monitor };
    if (PHASES.has('storm')) ok = (await stormPhase(ctx, gws)) && ok;
    if (PHASES.has('burst')) ok = (await burstPhase(ctx, gws)) && ok;
  } finally {
    if (monitor) await monitor.stop().catch(() => undefined);
    for (const u of users) await u.stop();
    for (const g of gws) await g.destroy();
    await server.destroy();
  }
  return ok;
}

/** Phase 1: the storm with the default limits, then a minute of quiet (10 s with STORM_PHASES=storm). */
async function stormPhase({ server, gwDomain, attackers, monitor }: Ctx, gws: GatewayProcess[]): Promise<boolean> {
  const quietSeconds = PHASES.has('burst') ? QUIET_SECONDS : 10;
  // Default limits and keepalive (30 s): the configuration a deployment runs.
  // STORM_LIMITS='{"sender_stanza_burst":100}' runs the storm with other limits (the target is for the defaults).
  const stormLimits = process.env.STORM_LIMITS ? (JSON.parse(process.env.STORM_LIMITS) as Record<string, unknown>) : null;
  const gw = await GatewayProcess.create(server, { bridge: { allowed_domains: [server.domain] }, ...(stormLimits ? { extra: { limits: stormLimits } } : {}) });
  gws.push(gw);
  await startGateway(gw);
  const pid = findPid(gw.configFile);
  const prosodyPid = findPid(server.dir);
  const botDevice = ((await gw.get(`/v1/identities/${encodeURIComponent(`alerts@${gwDomain}`)}`, BOT_TOKEN)).body.omemo as Array<{ device_id: number }>)[0]!.device_id;
  const watch = new Watch(pid, gw.url, server.componentPort, gw.dir);
  watch.serverPid = prosodyPid;
  watch.start();
  await new Promise((r) => setTimeout(r, 3000));
  const before = await scrape(gw.url);
  const rss0 = rssBytes(pid) ?? 0;
  const f0 = dbFiles(gw.dir);
  const cpu0 = { gateway: cpuSeconds(pid) ?? 0, prosody: cpuSeconds(prosodyPid) ?? 0 };

  // This process's own event-loop lag: the clients' sends wait while it is stalled.
  const benchLag = new OwnLag();
  const t0 = Date.now();
  const perTick = STORM_RATE / 100;
  let sent = 0;
  let outstanding = 0;
  const count = STORM_RATE * STORM_SECONDS;
  while (sent < count && Date.now() - t0 < STORM_SECONDS * 1000 * 2) {
    const tick = Date.now();
    // Sends are not awaited one by one (the socket buffers them); at most 1000 outstanding.
    for (let k = 0; k < perTick && sent < count; k++, sent++) {
      outstanding++;
      attackers[sent % ATTACKERS]!.send(hostile(sent, server.domain, gwDomain, botDevice)).then(
        () => outstanding--,
        () => outstanding--,
      );
    }
    while (outstanding > 1000) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, Math.max(0, 10 - (Date.now() - tick))));
  }
  while (outstanding > 0) await new Promise((r) => setTimeout(r, 10));
  const t1 = Date.now();
  // Let the gateway finish what reached it.
  await new Promise((r) => setTimeout(r, 2000));
  const t1b = Date.now();
  benchLag.stop();
  const after = await scrape(gw.url);
  const rssStormEnd = rssBytes(pid) ?? 0;
  const stormRate = sent / ((t1 - t0) / 1000);
  const cpuShare = (now: number | null, before: number) => `${((((now ?? before) - before) / ((t1b - t0) / 1000)) * 100).toFixed(0)}%`;
  const snap1 = await monitor.snapshot();
  console.log(`sent ${sent} hostile stanzas in ${((t1 - t0) / 1000).toFixed(1)} s from ${ATTACKERS} accounts (${stormRate.toFixed(0)}/s offered)`);
  console.log(
    `storm CPU (of one core): gateway ${cpuShare(cpuSeconds(pid), cpu0.gateway)}, Prosody ${cpuShare(cpuSeconds(prosodyPid), cpu0.prosody)}; ` +
      `gateway event-loop lag max ${ms(watch.maxLagBetween(t0, t1b))}, inbound queue max ${watch.maxQueueBetween(t0, t1b)}; ` +
      `the clients' process's lag max ${ms(benchLag.maxBetween(t0, t1b))}, the monitor's ${ms(Math.max(0, ...snap1.lag.filter((l) => l.at >= t0 && l.at <= t1b).map((l) => l.ms)))}; ` +
      `component connection backlog max ${kb(watch.maxBacklogBetween(t0, t1b).toProsody)} toward Prosody, ${kb(watch.maxBacklogBetween(t0, t1b).toGateway)} toward the gateway`,
  );
  const stanzasIn = total(after, 'gateway_stanzas_in_total') - total(before, 'gateway_stanzas_in_total');
  const stanzasOut = total(after, 'gateway_stanzas_out_total') - total(before, 'gateway_stanzas_out_total');
  console.log(`the gateway sent ${stanzasOut} stanzas (${(stanzasOut / Math.max(1, stanzasIn)).toFixed(2)} per stanza in)`);
  // What reached the attackers (all from the gateway, or from the server on its behalf), by kind and bytes:
  // the server reads the component connection a chunk at a time, so a ping's answer waits behind these bytes.
  const kinds = new Map<string, { n: number; bytes: number }>();
  for (const a of attackers) {
    for (const el of a.received) {
      const first = el.getChildElements().find((c) => c.name !== 'error')?.name ?? el.getChild('error')?.getChildElements()[0]?.name ?? '';
      const k = `${el.name}/${String(el.attrs.type ?? (el.name === 'presence' ? 'available' : 'normal'))}${first ? ` <${first}>` : ''}`;
      const e = kinds.get(k) ?? { n: 0, bytes: 0 };
      e.n++;
      e.bytes += el.toString().length;
      kinds.set(k, e);
    }
    a.received.length = 0;
  }
  const received = [...kinds.values()].reduce((x, e) => x + e.bytes, 0);
  const outputCounters = (m: Map<string, number>) =>
    ['output_window', 'max_held_output', 'held_output_max_age'].map((l) => `${l}=${total(m, 'gateway_limited_total', `limit="${l}"`) - total(before, 'gateway_limited_total', `limit="${l}"`)}`).join(', ');
  console.log(
    `the attackers received ${(received / Math.max(1, sent)).toFixed(0)} bytes per hostile stanza sent; output pacing: held max ${kb(watch.maxHeldBetween(t0, t1b))}, unconfirmed max ${kb(watch.maxUnconfirmedBetween(t0, t1b))}; ${outputCounters(after)}`,
  );
  console.log(
    `the attackers received ${kb(received)}: ` +
      [...kinds]
        .sort((a, b) => b[1].bytes - a[1].bytes)
        .slice(0, 12)
        .map(([k, e]) => `${k} ${e.n} (${kb(e.bytes)})`)
        .join(', '),
  );
  console.log(`the gateway took in ${stanzasIn} stanzas (${(stanzasIn / ((t1b - t0) / 1000)).toFixed(0)}/s, pings and answers to its own requests included); refused by limits: ${limitedLines(after) || 'none'}`);

  // A minute of quiet: does memory come back?
  const quietUntil = Date.now() + quietSeconds * 1000;
  while (Date.now() < quietUntil) await new Promise((r) => setTimeout(r, 1000));
  const t2 = Date.now();
  const rssAfter = rssBytes(pid) ?? 0;
  const snap = await monitor.snapshot();
  const [cRtts, sRtts] = [snap.rtts[gwDomain]!, snap.rtts['monitor.example']!];
  const stormPing = pingStats(cRtts, t0, t1b);
  const serverPing = pingStats(sRtts, t0, t1b);
  const quietPing = pingStats(cRtts, t1b, t2);
  const serverQuietPing = pingStats(sRtts, t1b, t2);
  const reconnects = total(await scrape(gw.url), 'gateway_component_reconnects_total') - total(before, 'gateway_component_reconnects_total');
  const disconnected = watch.disconnectedSamples;
  // Why the connection dropped, in the gateway's own words.
  const offline = gw.output.split('\n').filter((l) => /component offline|did not answer a ping|connection attempt failed/.test(l));
  for (const l of offline.slice(0, 10)) console.log(`gateway: ${l.slice(0, 300)}`);
  const f1 = dbFiles(gw.dir);
  console.log(`keystore after the storm: main file ${mb(f0.main)} -> ${mb(f1.main)}, WAL ${mb(f0.wal)} -> ${mb(f1.wal)}; hosted identities ${total(after, 'gateway_hosted_identities')}`);
  explainSlowest('storm', cRtts, sRtts, watch, t0, t1b);
  timeline('storm', cRtts, sRtts, watch, t0, t1b);
  watch.stop();
  await gw.stop();
  const stormRssMax = watch.maxBetween(t0, t1b);
  console.log(
    table(
      ['phase', 'ping n', 'ping p50', 'ping p99', 'ping max', 'unanswered', 'of those', 'RSS'],
      [
        row('storm', stormPing, `${mb(rss0)} -> max ${mb(stormRssMax)}, ${mb(rssStormEnd)} at the end`),
        row('storm, server ping', serverPing),
        row(`quiet ${quietSeconds} s`, quietPing, `${mb(rssAfter)} after ${quietSeconds} s (start ${mb(rss0)})`),
        row(`quiet, server ping`, serverQuietPing),
      ],
    ),
  );
  const pingOk = stormPing.p99 < TARGET_PING_P99_MS && quietPing.p99 < TARGET_PING_P99_MS;
  const rssOk = rssAfter - rss0 < TARGET_RSS_BACK_MB * MB;
  const connOk = reconnects === 0 && disconnected === 0;
  console.log(`target: ping p99 under ${TARGET_PING_P99_MS} ms in the storm and the quiet after: ${pingOk ? 'met' : 'MISSED'} (same run: the server's own ping p99 ${ms(serverPing.p99)}, the component's answer cannot beat it)`);
  console.log(`target: RSS back within ${TARGET_RSS_BACK_MB} MB of the start ${quietSeconds} s after the storm (${mb(rssAfter - rss0)} above)${quietSeconds < 60 ? ' (the target is for a minute)' : ''}: ${rssOk ? 'met' : 'MISSED'}`);
  console.log(`target: no dropped server connection in the storm (reconnects ${reconnects}, samples disconnected ${disconnected}): ${connOk ? 'met' : 'MISSED'}`);
  return pingOk && (rssOk || quietSeconds < 60) && connOk;
}

/** Phase 2: a burst of first-contact reads, limits lifted. */
async function burstPhase({ server, gwDomain, attackers, monitor }: Ctx, gws: GatewayProcess[]): Promise<boolean> {
  const gw = await GatewayProcess.create(server, {
    bridge: { allowed_domains: [server.domain] },
    extra: {
      limits: {
        sender_stanzas_per_second: 1_000_000,
        sender_stanza_burst: 1_000_000,
        domain_stanzas_per_second: 1_000_000,
        domain_stanza_burst: 1_000_000,
        identities_per_requester_per_minute: 1_000_000,
        identities_per_minute: 1_000_000,
      },
    },
  });
  gws.push(gw);
  await startGateway(gw);
  const pid = findPid(gw.configFile);
  const prosodyPid = findPid(server.dir);
  const watch = new Watch(pid, gw.url, server.componentPort, gw.dir);
  watch.serverPid = prosodyPid;
  watch.start();
  await new Promise((r) => setTimeout(r, 3000));
  const b0 = await scrape(gw.url);
  const rss0 = rssBytes(pid) ?? 0;
  const f0 = dbFiles(gw.dir);
  const cpu0 = { gateway: cpuSeconds(pid) ?? 0, prosody: cpuSeconds(prosodyPid) ?? 0 };
  const answered = new Set<string>();
  const onStanza = (el: { name: string; attrs: Record<string, unknown> }) => {
    if (el.name === 'iq' && typeof el.attrs.id === 'string' && el.attrs.id.startsWith('fc')) answered.add(el.attrs.id);
  };
  for (const a of attackers) a.client.on('stanza', onStanza);
  const benchLag = new OwnLag();
  const s0 = Date.now();
  for (let i = 0; i < BURST; i += 200) {
    const batch: Array<Promise<void>> = [];
    for (let k = i; k < Math.min(BURST, i + 200); k++) {
      const read = xml('iq', { type: 'get', to: proxyOf(`first${k}`, server.domain, gwDomain), id: `fc${k}` }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: `${NS_OMEMO}.devicelist` })));
      batch.push(attackers[k % ATTACKERS]!.send(read).catch(() => undefined));
    }
    await Promise.all(batch);
  }
  const sentAt = Date.now();
  while (answered.size < BURST && Date.now() - s0 < BURST_TIMEOUT_MS) await new Promise((r) => setTimeout(r, 100));
  const s1 = Date.now();
  await new Promise((r) => setTimeout(r, 1500));
  const s2 = Date.now();
  benchLag.stop();
  const b1 = await scrape(gw.url);
  const f1 = dbFiles(gw.dir);
  const cpuShare = (now: number | null, before: number) => `${((((now ?? before) - before) / ((s2 - s0) / 1000)) * 100).toFixed(0)}%`;
  const cpu = `gateway ${cpuShare(cpuSeconds(pid), cpu0.gateway)}, Prosody ${cpuShare(cpuSeconds(prosodyPid), cpu0.prosody)}`;
  const created = total(b1, 'gateway_hosted_identities') - total(b0, 'gateway_hosted_identities');
  const reconnects = total(b1, 'gateway_component_reconnects_total') - total(b0, 'gateway_component_reconnects_total');
  for (const a of attackers) {
    a.client.removeListener('stanza', onStanza);
    a.received.length = 0;
  }
  const snap = await monitor.snapshot();
  const [cRtts, sRtts] = [snap.rtts[gwDomain]!, snap.rtts['monitor.example']!];
  const burstPing = pingStats(cRtts, s0, s2);
  const serverPing = pingStats(sRtts, s0, s2);
  const rssMax = watch.maxBetween(s0, s2);
  watch.stop();
  explainSlowest('burst', cRtts, sRtts, watch, s0, s2);
  timeline('burst', cRtts, sRtts, watch, s0, s2);
  // Stopping the gateway closes the keystore with a TRUNCATE checkpoint: every page in the main file, the WAL emptied.
  await gw.stop();
  const f2 = dbFiles(gw.dir);
  const per = (b: number) => `${(b / Math.max(1, created) / 1024).toFixed(2)} KB per identity`;
  console.log(
    `burst: ${BURST} first-contact device-list reads sent in ${((sentAt - s0) / 1000).toFixed(1)} s, ${answered.size} answered after ${((s1 - s0) / 1000).toFixed(1)} s; identities created ${created}; ` +
      `CPU (of one core) ${cpu}; gateway event-loop lag max ${ms(watch.maxLagBetween(s0, s2))}, inbound queue max ${watch.maxQueueBetween(s0, s2)}; ` +
      `component connection backlog max ${kb(watch.maxBacklogBetween(s0, s2).toProsody)} toward Prosody, ${kb(watch.maxBacklogBetween(s0, s2).toGateway)} toward the gateway; ` +
      `the clients' process's lag max ${ms(benchLag.maxBetween(s0, s2))}, the monitor's ${ms(Math.max(0, ...snap.lag.filter((l) => l.at >= s0 && l.at <= s2).map((l) => l.ms)))}`,
  );
  console.log(
    `burst keystore: main file +${mb(f1.main - f0.main)}, WAL ${mb(f0.wal)} -> ${mb(f1.wal)} (max ${mb(watch.maxWalBetween(s0, s2))}) at the end of the burst (main + WAL: ${per(f1.main + f1.wal - f0.main - f0.wal)}); ` +
      `after the gateway stopped (TRUNCATE checkpoint, WAL ${mb(f2.wal)}): main file +${mb(f2.main - f0.main)}, ${per(f2.main - f0.main)} (issue 15 measured ~36 KB and ~30 ms each before); RSS ${mb(rss0)} -> max ${mb(rssMax)}`,
  );
  console.log(table(['phase', 'ping n', 'ping p50', 'ping p99', 'ping max', 'unanswered', 'of those', 'RSS'], [row(`burst ${BURST}`, burstPing, `${mb(rss0)} -> max ${mb(rssMax)}`), row('burst, server ping', serverPing)]));
  const pingOk = burstPing.p99 < TARGET_PING_P99_MS;
  const connOk = reconnects === 0 && watch.disconnectedSamples === 0;
  console.log(`target: ping p99 under ${TARGET_PING_P99_MS} ms in the burst: ${pingOk ? 'met' : 'MISSED'} (same run: the server's own ping p99 ${ms(serverPing.p99)})`);
  console.log(`target: no dropped server connection in the burst (reconnects ${reconnects}, samples disconnected ${watch.disconnectedSamples}): ${connOk ? 'met' : 'MISSED'}`);
  return pingOk && connOk && answered.size === BURST;
}
