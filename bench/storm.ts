// `npm run bench -- storm`: hostile traffic against the gateway (its own process) on a real Prosody,
// all on loopback, bounded in count and time (issue 15). Two phases:
//   1. storm: STORM_RATE hostile stanzas per second for STORM_SECONDS from ATTACKERS accounts of an
//      allowed domain (junk OMEMO with made-up device ids, first-contact device-list reads of new
//      proxies, subscribes, 100 KB plaintext bodies, odd pubsub and disco requests, junk XEP-0027),
//      with the default limits; then a minute of quiet.
//   2. burst: BURST first-contact device-list reads of distinct new proxies, as fast as the clients
//      send them, against a gateway whose stanza and identity limits are lifted, to measure what a
//      first contact costs now (identities created, keystore growth, time).
// Throughout, a monitor account of another domain pings the component every PING_EVERY_MS, and its
// own server too (Prosody answers those itself: the floor under the component's figure); its
// round trips, the gateway's RSS, event-loop lag and server connection are recorded, and the CPU
// used by the gateway and by Prosody (a slow ping can be either's fault).
// STORM_PHASES=storm runs only the storm phase (no quiet minute, no burst), for quick iterations;
// STORM_LIMITS (JSON, the limits: section) runs it with other limits.
// STORM_PROSODY_STORAGE=internal runs Prosody with Debian's file storage (the bench's setting before):
// there each roster change rewrites the user's whole roster file, and the attackers' own subscribes
// (one new roster item each, the gateway's approval and subscribe-back update it) made Prosody
// rewrite ~30 growing files a second. The default, sql (SQLite, one row per item), is what
// production setups commonly run. The server's configuration is printed with the figures.
// BENCH_GATEWAY_CPU_PROF=DIR profiles the storm phase's gateway process into DIR (bench/cpu-profile.ts).
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Prosody, prosodyVersion } from '../test/harness/prosody.js';
import { GatewayProcess } from '../test/harness/gateway-process.js';
import { XmppUser, xml } from '../test/harness/xmpp-user.js';
import { mkdirSync } from 'node:fs';
import { cpuSeconds, findPid, rssBytes, scrape, total, quantile } from './bots-support.js';
import { table } from './stats.js';

const ATTACKERS = 8;
const STORM_RATE = 500;
const STORM_SECONDS = 20;
const QUIET_SECONDS = process.env.STORM_PHASES === 'storm' ? 10 : 60;
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
 * Pings the component from its own account; records each round trip (a timeout counts as
 * PING_TIMEOUT_MS), and when the answer to a timed-out ping comes after all (late: it waited
 * somewhere) or never (lost).
 */
class Pinger {
  readonly rtts: Array<{ at: number; ms: number; answered: boolean; lateMs?: number }> = [];
  #stop = false;
  #loop: Promise<void> = Promise.resolve();
  #n = 0;
  /** Timed-out pings by id: when sent, and their record. */
  readonly #timedOut = new Map<string, { t0: number; rec: { lateMs?: number } }>();
  constructor(
    readonly user: XmppUser,
    readonly to: string,
  ) {
    user.client.on('stanza', (el: { name: string; attrs: Record<string, unknown> }) => {
      const id = el.name === 'iq' && typeof el.attrs.id === 'string' ? el.attrs.id : '';
      const late = this.#timedOut.get(id);
      if (!late) return;
      late.rec.lateMs = performance.now() - late.t0;
      this.#timedOut.delete(id);
    });
  }
  start(): void {
    this.#loop = (async () => {
      while (!this.#stop) {
        const t0 = performance.now();
        const id = `mon-${this.to}-${++this.#n}`;
        const answered = await this.user
          .iq(xml('iq', { type: 'get', to: this.to, id }, xml('ping', { xmlns: 'urn:xmpp:ping' })), PING_TIMEOUT_MS)
          .then(() => true)
          .catch(() => false);
        const ms = answered ? performance.now() - t0 : PING_TIMEOUT_MS;
        const rec: { at: number; ms: number; answered: boolean; lateMs?: number } = { at: Date.now(), ms, answered };
        if (!answered) this.#timedOut.set(id, { t0, rec });
        this.rtts.push(rec);
        await new Promise((r) => setTimeout(r, Math.max(0, PING_EVERY_MS - ms)));
      }
    })();
  }
  async stop(): Promise<void> {
    this.#stop = true;
    await this.#loop;
  }
  between(from: number, to: number): { n: number; p50: number; p99: number; max: number; unanswered: number; late: string } {
    const xs = this.rtts.filter((r) => r.at >= from && r.at <= to);
    const sorted = xs.map((r) => r.ms).sort((a, b) => a - b);
    const late = xs.filter((r) => r.lateMs !== undefined).map((r) => r.lateMs!);
    const lost = xs.filter((r) => !r.answered && r.lateMs === undefined).length;
    return {
      n: xs.length,
      p50: quantile(sorted, 0.5),
      p99: quantile(sorted, 0.99),
      max: sorted[sorted.length - 1] ?? 0,
      unanswered: xs.filter((r) => !r.answered).length,
      late: late.length + lost === 0 ? '-' : `${late.length} late (max ${(Math.max(0, ...late) / 1000).toFixed(1)} s), ${lost} never`,
    };
  }
}

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
  disconnectedSamples = 0;
  #timer: NodeJS.Timeout | null = null;
  constructor(
    readonly pid: number | null,
    readonly url: string,
    readonly componentPort: number,
  ) {}
  start(): void {
    this.#timer = setInterval(() => {
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
const dbBytes = (dir: string) => ['gateway.db', 'gateway.db-wal'].reduce((n, f) => n + (statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0);
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
  let gw: GatewayProcess | null = null;
  const users: XmppUser[] = [];
  let ok = true;
  try {
    // ---- phase 1: storm with the default limits ----
    // Default limits and keepalive (30 s): the configuration a deployment runs.
    // STORM_LIMITS='{"sender_stanza_burst":100}' runs the storm with other limits (the target is for the defaults).
    const stormLimits = process.env.STORM_LIMITS ? (JSON.parse(process.env.STORM_LIMITS) as Record<string, unknown>) : null;
    gw = await GatewayProcess.create(server, { bridge: { allowed_domains: [server.domain] }, ...(stormLimits ? { extra: { limits: stormLimits } } : {}) });
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
    const pid = findPid(gw.configFile);
    const prosodyPid = findPid(server.dir);
    const botDevice = ((await gw.get(`/v1/identities/${encodeURIComponent(`alerts@${gwDomain}`)}`, BOT_TOKEN)).body.omemo as Array<{ device_id: number }>)[0]!.device_id;
    const attackers = await connectAll(server, Array.from({ length: ATTACKERS }, (_, i) => `mallory${i}`));
    const [monitor] = await connectAll(server, ['monitor'], 'monitor.example');
    users.push(...attackers, monitor!);
    const pinger = new Pinger(monitor!, gwDomain);
    // The same account pings its own server too: what the server's own latency is, gateway aside.
    const serverPinger = new Pinger(monitor!, 'monitor.example');
    const watch = new Watch(pid, gw.url, server.componentPort);
    pinger.start();
    serverPinger.start();
    watch.start();
    await new Promise((r) => setTimeout(r, 3000));
    const before = await scrape(gw.url);
    const rss0 = rssBytes(pid) ?? 0;
    const db0 = dbBytes(gw.dir);
    const cpu0 = { gateway: cpuSeconds(pid) ?? 0, prosody: cpuSeconds(prosodyPid) ?? 0 };

    // This process's own event-loop lag: a ping answered while it is stalled counts as a timeout here.
    let benchLagMax = 0;
    let expected = performance.now() + 100;
    const benchLag = setInterval(() => {
      const now = performance.now();
      benchLagMax = Math.max(benchLagMax, now - expected);
      expected = now + 100;
    }, 100);
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
    clearInterval(benchLag);
    const after = await scrape(gw.url);
    const rssStormEnd = rssBytes(pid) ?? 0;
    const stormPing = pinger.between(t0, t1b);
    const serverPing = serverPinger.between(t0, t1b);
    const stormRate = sent / ((t1 - t0) / 1000);
    const cpuShare = (now: number | null, before: number) => `${(((now ?? before) - before) / ((t1b - t0) / 1000) * 100).toFixed(0)}%`;
    console.log(`sent ${sent} hostile stanzas in ${((t1 - t0) / 1000).toFixed(1)} s from ${ATTACKERS} accounts (${stormRate.toFixed(0)}/s offered)`);
    console.log(
      `storm CPU (of one core): gateway ${cpuShare(cpuSeconds(pid), cpu0.gateway)}, Prosody ${cpuShare(cpuSeconds(prosodyPid), cpu0.prosody)}; ` +
        `gateway event-loop lag max ${ms(watch.maxLagBetween(t0, t1b))}, inbound queue max ${watch.maxQueueBetween(t0, t1b)}; ` +
        `this (the clients') process's lag max ${ms(benchLagMax)}; ` +
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
    }
    const received = [...kinds.values()].reduce((x, e) => x + e.bytes, 0);
    const outputCounters = (m: Map<string, number>) => ['output_window', 'max_held_output', 'held_output_max_age'].map((l) => `${l}=${total(m, 'gateway_limited_total', `limit="${l}"`) - total(before, 'gateway_limited_total', `limit="${l}"`)}`).join(', ');
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
    const quietUntil = Date.now() + QUIET_SECONDS * 1000;
    while (Date.now() < quietUntil) await new Promise((r) => setTimeout(r, 1000));
    const t2 = Date.now();
    const rssAfter = rssBytes(pid) ?? 0;
    const quietPing = pinger.between(t1b, t2);
    const serverQuietPing = serverPinger.between(t1b, t2);
    const reconnects1 = total(await scrape(gw.url), 'gateway_component_reconnects_total') - total(before, 'gateway_component_reconnects_total');
    const disconnected1 = watch.disconnectedSamples;
    // Why the connection dropped, in the gateway's own words.
    const offline = gw.output.split('\n').filter((l) => /component offline|did not answer a ping|connection attempt failed/.test(l));
    for (const l of offline.slice(0, 10)) console.log(`gateway: ${l.slice(0, 300)}`);
    console.log(`keystore: ${mb(db0)} before, ${mb(dbBytes(gw.dir))} after the storm; hosted identities ${total(after, 'gateway_hosted_identities')}`);
    await pinger.stop();
    await serverPinger.stop();
    watch.stop();
    await gw.stop();
    await gw.destroy();
    gw = null;
    if (process.env.STORM_PHASES === 'storm') {
      console.log(
        table(
          ['phase', 'ping n', 'ping p50', 'ping p99', 'ping max', 'unanswered', 'of those'],
          [
            ['storm', String(stormPing.n), ms(stormPing.p50), ms(stormPing.p99), ms(stormPing.max), String(stormPing.unanswered), stormPing.late],
            ['quiet', String(quietPing.n), ms(quietPing.p50), ms(quietPing.p99), ms(quietPing.max), String(quietPing.unanswered), quietPing.late],
            ['storm, server ping', String(serverPing.n), ms(serverPing.p50), ms(serverPing.p99), ms(serverPing.max), String(serverPing.unanswered), serverPing.late],
            ['quiet, server ping', String(serverQuietPing.n), ms(serverQuietPing.p50), ms(serverQuietPing.p99), ms(serverQuietPing.max), String(serverQuietPing.unanswered), serverQuietPing.late],
          ],
        ),
      );
      console.log(`storm phase only: reconnects ${reconnects1}, samples disconnected ${disconnected1}`);
      console.log(`same run: component ping p99 ${ms(stormPing.p99)} against the server's own ${ms(serverPing.p99)} (the component's answer cannot beat the server's own latency)`);
      return stormPing.p99 < TARGET_PING_P99_MS && reconnects1 === 0 && disconnected1 === 0;
    }

    // ---- phase 2: a burst of first-contact reads, limits lifted ----
    gw = await GatewayProcess.create(server, {
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
    await gw.start();
    const pid2 = findPid(gw.configFile);
    const pinger2 = new Pinger(monitor!, gwDomain);
    const watch2 = new Watch(pid2, gw.url, server.componentPort);
    pinger2.start();
    watch2.start();
    await new Promise((r) => setTimeout(r, 3000));
    const b0 = await scrape(gw.url);
    const bRss0 = rssBytes(pid2) ?? 0;
    const bDb0 = dbBytes(gw.dir);
    const answered = new Set<string>();
    const onStanza = (el: { name: string; attrs: Record<string, unknown> }) => {
      if (el.name === 'iq' && typeof el.attrs.id === 'string' && el.attrs.id.startsWith('fc')) answered.add(el.attrs.id);
    };
    for (const a of attackers) a.client.on('stanza', onStanza);
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
    const b1 = await scrape(gw.url);
    const created = total(b1, 'gateway_hosted_identities') - total(b0, 'gateway_hosted_identities');
    const growth = dbBytes(gw.dir) - bDb0;
    const burstPing = pinger2.between(s0, s1 + 1500);
    const burstRssMax = watch2.maxBetween(s0, s1 + 1500);
    const reconnects2 = total(b1, 'gateway_component_reconnects_total') - total(b0, 'gateway_component_reconnects_total');
    await pinger2.stop();
    watch2.stop();
    for (const a of attackers) a.client.removeListener('stanza', onStanza);

    console.log(
      `burst: ${BURST} first-contact device-list reads sent in ${((sentAt - s0) / 1000).toFixed(1)} s, ${answered.size} answered after ${((s1 - s0) / 1000).toFixed(1)} s; ` +
        `identities created ${created}; keystore +${mb(growth)} (${(growth / Math.max(1, created) / 1024).toFixed(2)} KB per identity; issue 15 measured ~36 KB and ~30 ms each before); ` +
        `RSS ${mb(bRss0)} -> max ${mb(burstRssMax)}`,
    );

    const stormRssMax = watch.maxBetween(t0, t1b);
    const pingOk = stormPing.p99 < TARGET_PING_P99_MS && burstPing.p99 < TARGET_PING_P99_MS && quietPing.p99 < TARGET_PING_P99_MS;
    const rssOk = rssAfter - rss0 < TARGET_RSS_BACK_MB * MB;
    const connOk = reconnects1 === 0 && reconnects2 === 0 && disconnected1 === 0 && watch2.disconnectedSamples === 0;
    console.log(
      table(
        ['phase', 'ping n', 'ping p50', 'ping p99', 'ping max', 'unanswered', 'of those', 'RSS'],
        [
          ['storm', String(stormPing.n), ms(stormPing.p50), ms(stormPing.p99), ms(stormPing.max), String(stormPing.unanswered), stormPing.late, `${mb(rss0)} -> max ${mb(stormRssMax)}, ${mb(rssStormEnd)} at the end`],
          ['quiet minute', String(quietPing.n), ms(quietPing.p50), ms(quietPing.p99), ms(quietPing.max), String(quietPing.unanswered), quietPing.late, `${mb(rssAfter)} after ${QUIET_SECONDS} s (start ${mb(rss0)})`],
          ['storm, server ping', String(serverPing.n), ms(serverPing.p50), ms(serverPing.p99), ms(serverPing.max), String(serverPing.unanswered), serverPing.late, ''],
          [`burst ${BURST}`, String(burstPing.n), ms(burstPing.p50), ms(burstPing.p99), ms(burstPing.max), String(burstPing.unanswered), burstPing.late, `${mb(bRss0)} -> max ${mb(burstRssMax)}`],
        ],
      ),
    );
    console.log(`target: ping p99 under ${TARGET_PING_P99_MS} ms throughout: ${pingOk ? 'met' : 'MISSED'} (storm, same run: the server's own ping p99 ${ms(serverPing.p99)})`);
    console.log(`target: RSS back within ${TARGET_RSS_BACK_MB} MB of the start a minute after the storm (${mb(rssAfter - rss0)} above): ${rssOk ? 'met' : 'MISSED'}`);
    console.log(`target: no dropped server connection (reconnects ${reconnects1} + ${reconnects2}, samples disconnected ${disconnected1} + ${watch2.disconnectedSamples}): ${connOk ? 'met' : 'MISSED'}`);
    ok = pingOk && rssOk && connOk && answered.size === BURST;
  } finally {
    for (const u of users) await u.stop();
    if (gw) await gw.destroy();
    await server.destroy();
  }
  return ok;
}
