// Bridging benchmark: a legacy XEP-0027 user (carol: @xmpp/client in this process + GnuPG) and an
// OMEMO user (bob: python-omemo on slixmpp, its own process) on a real Prosody, with the gateway as
// its own process (`node dist/main.js`, as deployed: its event loop shares nothing with the clients
// or with this driver). Measured in one run:
//   - PGP -> OMEMO: carol sends a XEP-0027 message to bob's proxy; the gateway decrypts it and
//     re-encrypts it with OMEMO to bob, from carol's proxy. From the stanza leaving carol's client
//     to the stanza at bob's client, and to the decrypted body there.
//   - OMEMO -> PGP: bob sends an OMEMO message to carol's proxy; from the stanza leaving bob's client
//     to the encrypted stanza at carol's client (gpg's decrypt timed separately).
//   - baseline: the same two clients exchanging a plain message directly (user -> Prosody -> user),
//     timed the same way, interleaved with the bridged messages so that both see the same load.
//   - throughput: bridged messages sent back to back, each way.
//   - gpg's own per-process encrypt and decrypt of the same messages, as the reference.
// Timestamps: this process takes process.hrtime.bigint() (CLOCK_MONOTONIC); bob's process takes
// time.monotonic_ns() (CLOCK_MONOTONIC too) at the moment things happen and reports them in its
// events (bench/bridge_omemo_user.py), so the pipe between the processes adds nothing; the run
// checks that the two clocks agree before measuring.
// Sockets: both clients write without Nagle's algorithm (bob's asyncio does by default; carol's is
// set here), and so does the gateway. Prosody keeps Nagle on by default, which with delayed ACKs
// stalls about 1 message in 50 by ~40 ms on any of its hops, baseline and bridged alike; it is
// switched off here so that p99 shows the gateway rather than that lottery.
// Environment: BENCH_BRIDGE_N (paced messages per direction, 200), BENCH_BRIDGE_BURST (200),
// BENCH_BRIDGE_PROSODY_NAGLE=1 (Prosody's default), BENCH_BRIDGE_DUMP=FILE (raw samples as JSON).
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type Element from 'ltx/lib/Element.js';
import { Addressing } from '../component/addressing.js';
import { Prosody, prosodyAvailable, prosodyVersion } from '../test/harness/prosody.js';
import { GatewayProcess } from '../test/harness/gateway-process.js';
import { LegacyPgpUser } from '../test/harness/pgp-user.js';
import { gpgAvailable } from '../test/harness/gpg.js';
import { OMEMO_USER_SCRIPT, PythonOmemoUser, pythonOmemoStatus, type OmemoEvent, type ReceivedMessage } from '../test/harness/omemo-user.js';
import { xml, type XmppUser } from '../test/harness/xmpp-user.js';
import { THROUGHPUT_LIMITS, fmtMs, table } from './stats.js';

const NS_ENC = 'jabber:x:encrypted';
/** Target: a bridged message adds at most this much over the server's own round trip, at p99. */
export const TARGET_ADDED_P99_MS = 15;

export const BENCH_USER_SCRIPT = join(OMEMO_USER_SCRIPT, '..', '..', '..', 'bench', 'bridge_omemo_user.py');

/** Milliseconds on CLOCK_MONOTONIC (the clock python's time.monotonic_ns() reads). */
export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
export const nsToMs = (ns: unknown): number => Number(ns) / 1e6;
/** fmtMs for differences, which may be negative. */
export const fmtDelta = (ms: number): string => (ms < 0 ? `-${fmtMs(-ms)}` : fmtMs(ms));
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Q {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles. */
export function q(samples: number[]): Q {
  const s = [...samples].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1]! };
}

function bodies(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix} #${i}: disk ${50 + (i % 50)}% full on db-${i % 7} — Grüße ✓`);
}

/** Messages arriving at carol's client, timestamped in the client's 'stanza' handler. */
export class Arrivals {
  readonly #seen: Array<{ t: number; el: Element }> = [];
  readonly #waiters: Array<{ pred: (el: Element) => boolean; resolve: (a: { t: number; el: Element }) => void }> = [];

  constructor(user: { xmpp: XmppUser }) {
    user.xmpp.client.on('stanza', (el: Element) => {
      const t = nowMs();
      if (!el.is('message')) return;
      const a = { t, el };
      const w = this.#waiters.findIndex((x) => x.pred(el));
      if (w >= 0) this.#waiters.splice(w, 1)[0]!.resolve(a);
      else this.#seen.push(a);
      // The harness user keeps every stanza for its own waits; the benchmark's would pile up there.
      const kept = user.xmpp.received.indexOf(el);
      if (kept >= 0) user.xmpp.received.splice(kept, 1);
    });
  }

  /** The next message matching `pred` (already arrived or future). */
  next(pred: (el: Element) => boolean, timeoutMs = 20000, what = 'message'): Promise<{ t: number; el: Element }> {
    const i = this.#seen.findIndex((a) => pred(a.el));
    if (i >= 0) return Promise.resolve(this.#seen.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (a: { t: number; el: Element }) => {
          clearTimeout(timer);
          resolve(a);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(new Error(`carol: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }
}

/** Sums and counts of the gateway's crypto histogram, by "protocol/operation". */
export async function cryptoTotals(gw: GatewayProcess): Promise<Map<string, { sum: number; count: number }>> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  const out = new Map<string, { sum: number; count: number }>();
  for (const m of text.matchAll(/^gateway_crypto_operation_seconds_(sum|count)\{protocol="([^"]+)",operation="([^"]+)"\} ([0-9.e+-]+)$/gm)) {
    const k = `${m[2]}/${m[3]}`;
    const e = out.get(k) ?? { sum: 0, count: 0 };
    e[m[1] as 'sum' | 'count'] = Number(m[4]);
    out.set(k, e);
  }
  return out;
}

/** The pid of the gateway process started with `configFile` (Linux /proc), or null. */
export function pidOf(configFile: string): number | null {
  try {
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').includes(configFile)) return Number(d);
      } catch {
        /* gone meanwhile */
      }
    }
  } catch {
    /* no /proc */
  }
  return null;
}

/** User + system CPU time of a process so far, ms (USER_HZ = 100 on Linux), or null. */
export function cpuMs(pid: number | null): number | null {
  if (pid === null) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // utime, stime: fields 14 and 15 of stat(5)
  } catch {
    return null;
  }
}

export interface BridgeBenchOptions {
  /** Paced messages per direction (each bridged and baseline). */
  n?: number;
  /** Back-to-back messages per direction for throughput. */
  burst?: number;
  /** Pause between paced messages, ms. */
  gapMs?: number;
}

export async function runBridgeBench(opts: BridgeBenchOptions = {}): Promise<boolean> {
  const n = opts.n ?? Number(process.env.BENCH_BRIDGE_N ?? 200);
  const burst = opts.burst ?? Number(process.env.BENCH_BRIDGE_BURST ?? 200);
  const gapMs = opts.gapMs ?? 5;
  const warm = 20;
  // Prosody's Nagle: see the top of this file.
  const prosodyNagle = process.env.BENCH_BRIDGE_PROSODY_NAGLE === '1';
  console.log(`\nBridging PGP <-> OMEMO through Prosody and the gateway (own process), curve25519 keys`);
  const missing = [
    prosodyAvailable() ? null : 'prosody (apt-get install prosody)',
    gpgAvailable() ? null : 'gpg (apt-get install gnupg)',
    pythonOmemoStatus().ok ? null : `python-omemo (${pythonOmemoStatus().why})`,
  ].filter((x) => x !== null);
  if (missing.length > 0) {
    console.log(`  skipped: ${missing.join(', ')} not available (scripts/install-deps.sh installs them)`);
    return true;
  }

  const t0run = nowMs();
  const load0 = loadavg();
  const prosodyVer = prosodyVersion() ?? '(version unknown)';
  let server: Prosody | null = null;
  let gw: GatewayProcess | null = null;
  let carol: LegacyPgpUser | null = null;
  let bob: PythonOmemoUser | null = null;
  try {
    server = await Prosody.start({ nagle: prosodyNagle });
    gw = await GatewayProcess.create(server, { bridge: { allowed_domains: [server.domain], pgp_key_type: 'curve25519' }, extra: { limits: THROUGHPUT_LIMITS } });
    await gw.start();
    const gwPid = pidOf(gw.configFile);
    const cpu: Record<'p2oPaced' | 'o2pPaced' | 'p2oBurst' | 'o2pBurst', number | null> = { p2oPaced: null, o2pPaced: null, p2oBurst: null, o2pBurst: null };
    const cpuSince = (c0: number | null) => {
      const c1 = cpuMs(gwPid);
      return c0 === null || c1 === null ? null : c1 - c0;
    };
    const domain = server.componentDomain;
    const addressing = new Addressing(domain, [], [server.domain]);
    [carol, bob] = await Promise.all([
      LegacyPgpUser.create(server, 'carol'),
      PythonOmemoUser.start(server, 'bob', { resource: 'phone', script: BENCH_USER_SCRIPT, autoReceipts: false, staleSeconds: 3600 }),
    ]);
    const bobBare = bob.jid;
    const proxyOfBob = addressing.proxyFor(bobBare);
    const proxyOfCarol = addressing.proxyFor(carol.bare);
    const arrivals = new Arrivals(carol);
    // Carol's client writes without Nagle's algorithm, as bob's does (asyncio's default): a client's
    // socket setting is not what is measured here, and it would stall baseline and bridged alike.
    (carol.xmpp.client as unknown as { socket: Socket }).socket.setNoDelay(true);
    const fromBare = (el: Element) => String(el.attrs.from ?? '').split('/')[0];

    // --- the clocks: bob's timestamps must fall between ours taken around each request
    let clockOk = 0;
    const brackets: number[] = [];
    for (let i = 0; i < 20; i++) {
      const a = nowMs();
      const e = await bob.command({ cmd: 'clock' });
      const b = nowMs();
      const t = nsToMs(e.t_ns);
      if (a <= t && t <= b) clockOk++;
      brackets.push(b - a);
    }
    if (clockOk < 20) throw new Error(`bench: bob's clock is not this process's CLOCK_MONOTONIC (${clockOk}/20 probes inside the bracket)`);

    // --- set-up: carol registers her key and fetches the key of bob's proxy
    const reg = await carol.register(domain);
    if (!reg.includes(carol.gpg.fingerprint)) throw new Error(`bench: carol's key was not registered: ${reg.slice(0, 200)}`);
    const proxyOfBobFpr = await carol.fetchKey(domain, proxyOfBob);

    // --- gpg ciphertexts for PGP -> OMEMO, made before any timing (the legacy client's cost)
    const warmBodies = bodies('warm-up', warm);
    const latBodies = bodies('paced', n);
    const burstBodies = bodies('burst', burst);
    const gpgEncrypt: number[] = [];
    const encryptAll = async (list: string[], record: boolean) => {
      const out: Element[] = [];
      for (const body of list) {
        const t = nowMs();
        out.push(await carol!.encryptedMessage(proxyOfBob, body, proxyOfBobFpr, { sign: true }));
        if (record) gpgEncrypt.push(nowMs() - t);
      }
      return out;
    };
    const warmStanzas = await encryptAll(warmBodies, false);
    const latStanzas = await encryptAll(latBodies, true);
    const burstStanzas = await encryptAll(burstBodies, false);

    // --- one message each way, timed the same way as below
    const bobGot = (body: string) => bob!.waitForMessage((m) => m.body === body, 20000, `message at bob`);
    const pgpToOmemo = async (el: Element, body: string) => {
      const t = nowMs();
      await carol!.xmpp.send(el);
      const m = await bobGot(body);
      if (!m.encrypted || m.from !== proxyOfCarol) throw new Error(`bench: the bridged message reached bob ${m.encrypted ? 'from ' + m.from : 'unencrypted'}, not OMEMO-encrypted from the proxy of carol`);
      return { m, t };
    };
    let plainIds = 0;
    const plainToBob = async (body: string) => {
      const t = nowMs();
      await carol!.xmpp.send(xml('message', { to: bobBare, type: 'chat', id: `plain-${++plainIds}` }, xml('body', {}, body)));
      const m = await bobGot(body);
      if (m.encrypted || m.from !== carol!.bare) throw new Error('bench: the plain message reached bob in an unexpected form');
      return { m, t };
    };
    const wrote = (id: string) => bob!.waitForEvent((e) => e.event === 'wrote' && e.id === id, 20000, `write of ${id}`);
    const omemoToPgp = async (body: string) => {
      const arrived = arrivals.next((el) => fromBare(el) === proxyOfBob && !!el.getChild('x', NS_ENC), 20000, 'bridged message from the proxy of bob');
      const sent = await bob!.send(proxyOfCarol, body);
      const w = await wrote(sent.id);
      const a = await arrived;
      return { t: nsToMs(w.t_ns), a };
    };
    const plainToCarol = async (body: string) => {
      const arrived = arrivals.next((el) => fromBare(el) === bobBare && el.getChildText('body') === body, 20000, 'plain message from bob');
      const sent = await bob!.sendPlain(carol!.bare, body);
      const w = await wrote(sent.id);
      const a = await arrived;
      return { t: nsToMs(w.t_ns), a };
    };

    // --- warm-up: the first messages build the OMEMO sessions (both ways) and warm the JITs
    for (let i = 0; i < warm; i++) {
      await pgpToOmemo(warmStanzas[i]!, warmBodies[i]!);
      await plainToBob(`warm-up plain ${i}: to bob`);
      await omemoToPgp(`warm-up ${i}: to carol`);
      await plainToCarol(`warm-up plain ${i}: to carol`);
    }

    // --- paced, one message in flight, bridged and baseline interleaved (order alternating)
    const crypto0 = await cryptoTotals(gw);
    let c0 = cpuMs(gwPid);
    const p2o = { arrive: [] as number[], done: [] as number[], decrypt: [] as number[] };
    const p2oBase = { arrive: [] as number[], done: [] as number[] };
    for (let i = 0; i < n; i++) {
      const bridged = async () => {
        const { m, t } = await pgpToOmemo(latStanzas[i]!, latBodies[i]!);
        p2o.arrive.push(nsToMs(m.recv_ns) - t);
        p2o.done.push(nsToMs(m.t_ns) - t);
        p2o.decrypt.push(nsToMs(m.t_ns) - nsToMs(m.handle_ns));
      };
      const base = async () => {
        const { m, t } = await plainToBob(`plain #${i}: to bob`);
        p2oBase.arrive.push(nsToMs(m.recv_ns) - t);
        p2oBase.done.push(nsToMs(m.t_ns) - t);
      };
      for (const f of i % 2 === 0 ? [base, bridged] : [bridged, base]) {
        await f();
        await sleep(gapMs);
      }
    }
    cpu.p2oPaced = cpuSince(c0);
    c0 = cpuMs(gwPid);
    const o2p: number[] = [];
    const o2pBase: number[] = [];
    const o2pStanzas: Element[] = [];
    for (let i = 0; i < n; i++) {
      const bridged = async () => {
        const { t, a } = await omemoToPgp(latBodies[i]!);
        o2p.push(a.t - t);
        o2pStanzas.push(a.el);
      };
      const base = async () => {
        const { t, a } = await plainToCarol(`plain #${i}: to carol`);
        o2pBase.push(a.t - t);
      };
      for (const f of i % 2 === 0 ? [base, bridged] : [bridged, base]) {
        await f();
        await sleep(gapMs);
      }
    }
    cpu.o2pPaced = cpuSince(c0);
    const crypto1 = await cryptoTotals(gw);

    // --- gpg decrypts what carol received (outside the timing above), checking every body
    const gpgDecrypt: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = nowMs();
      const d = await carol.gpg.decrypt(o2pStanzas[i]!.getChildText('x', NS_ENC)!);
      gpgDecrypt.push(nowMs() - t);
      if (d.text !== latBodies[i] || d.signature !== 'good' || d.signer !== proxyOfBobFpr) throw new Error(`bench: bridged message ${i} to carol did not decrypt to its body with a good signature by bob's proxy`);
    }

    // --- throughput: back to back
    await sleep(200);
    c0 = cpuMs(gwPid);
    const b1 = nowMs();
    await Promise.all(burstStanzas.map((el) => carol!.xmpp.send(el)));
    const burstP2o: ReceivedMessage[] = [];
    for (const body of burstBodies) burstP2o.push(await bob.waitForMessage((m) => m.body === body, 60000, 'burst message at bob'));
    cpu.p2oBurst = cpuSince(c0);
    const p2oBurstDone = Math.max(...burstP2o.map((m) => nsToMs(m.t_ns))) - b1;
    const p2oBurstArrive = Math.max(...burstP2o.map((m) => nsToMs(m.recv_ns))) - b1;

    await sleep(200);
    await bob.command({ cmd: 'prepare', to: proxyOfCarol, bodies: burstBodies }, 60000);
    const burstArrivals: Array<Promise<{ t: number; el: Element }>> = [];
    for (let i = 0; i < burst; i++) burstArrivals.push(arrivals.next((el) => fromBare(el) === proxyOfBob && !!el.getChild('x', NS_ENC), 60000, `burst message ${i} at carol`));
    c0 = cpuMs(gwPid);
    const ids = (await bob.command({ cmd: 'burst', to: proxyOfCarol }, 60000)).ids as string[];
    const writes: OmemoEvent[] = [];
    for (const id of ids) writes.push(await wrote(id));
    const got = await Promise.all(burstArrivals);
    cpu.o2pBurst = cpuSince(c0);
    const o2pBurst = Math.max(...got.map((a) => a.t)) - Math.min(...writes.map((w) => nsToMs(w.t_ns)));
    for (let i = 0; i < burst; i++) {
      const d = await carol.gpg.decrypt(got[i]!.el.getChildText('x', NS_ENC)!);
      if (d.text !== burstBodies[i]) throw new Error(`bench: burst message ${i} to carol arrived out of order or altered`);
    }
    if (process.env.BENCH_BRIDGE_DUMP) {
      writeFileSync(process.env.BENCH_BRIDGE_DUMP, JSON.stringify({ p2o, p2oBase, o2p, o2pBase, gpgEncrypt, gpgDecrypt }));
    }

    // --- report
    const qs = {
      p2oArrive: q(p2o.arrive),
      p2oDone: q(p2o.done),
      p2oDecrypt: q(p2o.decrypt),
      p2oBaseArrive: q(p2oBase.arrive),
      p2oBaseDone: q(p2oBase.done),
      o2p: q(o2p),
      o2pBase: q(o2pBase),
      gpgEnc: q(gpgEncrypt),
      gpgDec: q(gpgDecrypt),
      gpgBoth: q(gpgEncrypt.map((e, i) => e + gpgDecrypt[i]!)),
    };
    const row = (label: string, s: Q): string[] => [label, fmtMs(s.p50), fmtMs(s.p99), fmtMs(s.max)];
    const added = (label: string, b: Q, base: Q): string[] => [label, fmtDelta(b.p50 - base.p50), fmtDelta(b.p99 - base.p99), ''];
    const load = (l: number[]) => l.map((x) => x.toFixed(1)).join(' ');
    console.log(
      `  ${availableParallelism()} cores, load average ${load(load0)} at the start, ${load(loadavg())} at the end (other work on the machine included); ` +
        `Prosody ${prosodyVer}, Nagle's algorithm ${prosodyNagle ? 'on (its default)' : 'off (BENCH_BRIDGE_PROSODY_NAGLE=1: its default, on)'}`,
    );
    console.log(`  ${n} paced messages per direction and kind (one in flight, ${gapMs} ms apart, bridged and baseline alternating), after ${warm} warm-up each`);
    console.log(
      table(
        ['latency: from the sender\'s client to the receiver\'s', 'p50', 'p99', 'max'],
        [
          ['PGP -> OMEMO (carol -> proxy of bob -> bob)', '', '', ''],
          row('  A  baseline: plain carol -> bob, stanza at bob\'s client', qs.p2oBaseArrive),
          row('  B  bridged: XEP-0027 to the proxy, OMEMO stanza at bob\'s client', qs.p2oArrive),
          added('     added by the bridge (B - A)', qs.p2oArrive, qs.p2oBaseArrive),
          row('  C  baseline: plain message reported by bob\'s client', qs.p2oBaseDone),
          row('  D  bridged: decrypted body reported by bob\'s client', qs.p2oDone),
          added('     added incl. bob\'s own OMEMO decrypt (D - C)', qs.p2oDone, qs.p2oBaseDone),
          row('     bob\'s client alone: python-omemo parse + decrypt', qs.p2oDecrypt),
          ['OMEMO -> PGP (bob -> proxy of carol -> carol)', '', '', ''],
          row('  E  baseline: plain bob -> carol, stanza at carol\'s client', qs.o2pBase),
          row('  F  bridged: OMEMO to the proxy, XEP-0027 stanza at carol\'s client', qs.o2p),
          added('     added by the bridge (F - E)', qs.o2p, qs.o2pBase),
          row('     then carol\'s gpg decrypt + verify (not in F)', qs.gpgDec),
          ['Reference: GnuPG on the same bodies, one process per operation', '', '', ''],
          row('     gpg sign + encrypt (carol, the PGP -> OMEMO messages)', qs.gpgEnc),
          row('     gpg decrypt + verify (carol, the OMEMO -> PGP messages)', qs.gpgDec),
          row('     gpg encrypt + decrypt, per body', qs.gpgBoth),
        ],
      ),
    );
    const perOp = (k: string) => {
      const a = crypto0.get(k) ?? { sum: 0, count: 0 };
      const b = crypto1.get(k) ?? { sum: 0, count: 0 };
      return b.count > a.count ? fmtMs(((b.sum - a.sum) / (b.count - a.count)) * 1000) : 'n/a';
    };
    const cpuPer = (ms: number | null, count: number) => (ms === null ? 'n/a' : fmtMs(ms / count));
    console.log(
      table(
        ['gateway CPU per bridged message (user + system, /proc)', 'paced', 'back to back'],
        [
          ['PGP -> OMEMO', cpuPer(cpu.p2oPaced, n), cpuPer(cpu.p2oBurst, burst)],
          ['OMEMO -> PGP', cpuPer(cpu.o2pPaced, n), cpuPer(cpu.o2pBurst, burst)],
        ],
      ),
    );
    console.log(
      `  of which openpgp.js (the gateway's /metrics, paced run, means): decrypt ${perOp('pgp/decrypt')} + verify ${perOp('pgp/verify')} (PGP -> OMEMO); ` +
        `sign + encrypt ${perOp('pgp/encrypt')} (OMEMO -> PGP). OMEMO's own encrypt/decrypt are not in that histogram.`,
    );
    const rate = (ms: number) => (burst / (ms / 1000)).toFixed(0);
    console.log(
      table(
        [`throughput: ${burst} bridged messages sent back to back`, 'first sent -> last in', 'msg/s'],
        [
          ['PGP -> OMEMO, last stanza at bob\'s client', fmtMs(p2oBurstArrive), rate(p2oBurstArrive)],
          ['PGP -> OMEMO, last body decrypted by bob\'s client', fmtMs(p2oBurstDone), rate(p2oBurstDone)],
          ['OMEMO -> PGP, last stanza at carol\'s client', fmtMs(o2pBurst), rate(o2pBurst)],
        ],
      ),
    );

    const gatewayAdded = (qs.p2oArrive.p50 - qs.p2oBaseArrive.p50 + qs.o2p.p50 - qs.o2pBase.p50) / 2;
    console.log(`
What the figures include:
  Clock: every latency is one clock, CLOCK_MONOTONIC: process.hrtime in this process (carol's client),
    time.monotonic_ns() in bob's python process, which puts it in its events, so the pipe between the
    two adds nothing (checked: ${clockOk}/20 of bob's readings fell inside this process's bracket
    around the request, median bracket ${fmtMs(q(brackets).p50)}).
  Leaving carol: just before @xmpp/client's send() (serialisation included). Leaving bob: right after
    slixmpp's transport.write. At carol: @xmpp/client's 'stanza' event (parsed). At bob's client:
    slixmpp has parsed the stanza and handed it over, before any OMEMO work. "Reported": bob's client
    emits the message, after python-omemo's decrypt for bridged ones (bob's OMEMO state in memory).
  Baseline (A, C, E): user -> Prosody -> user. Bridged (B, D, F): user -> Prosody -> gateway
    (XEP-0114, its own node process, log level info, SQLite keystore in WAL mode on disk) -> Prosody
    -> user, with the gateway's decrypt and signature check, replay and trust checks, protocol choice,
    re-encryption, keystore writes, and the larger stanzas.
  Not in them: GnuPG (PGP -> OMEMO ciphertexts are made before timing; carol's decrypts are timed
    after, the gpg rows) and python-omemo's encrypt before bob sends (the CPU is busy with it before
    the clock starts). Both clients write without Nagle's algorithm (asyncio's default for bob, set
    for carol); Prosody as stated above.
  Everything (Prosody, the gateway, bob's python client, this driver with carol's client, gpg
    between the timed parts) shares ${availableParallelism()} cores with whatever else runs on the machine: the
    throughput rows are the whole system's, bob's python client included; the gateway's own cost is
    its CPU per message above.
  Ratio: at p50 the bridge adds ${fmtMs(gatewayAdded)} per message (mean of both directions), ${((gatewayAdded / qs.gpgBoth.p50) * 100).toFixed(0)}% of
    the ${fmtMs(qs.gpgBoth.p50)} one gpg encrypt + decrypt costs a legacy client.
  Wall time ${fmtMs(nowMs() - t0run)}.`);
    const verdicts = [
      { dir: 'PGP -> OMEMO (B - A)', v: qs.p2oArrive.p99 - qs.p2oBaseArrive.p99 },
      { dir: 'OMEMO -> PGP (F - E)', v: qs.o2p.p99 - qs.o2pBase.p99 },
    ];
    const met = verdicts.every((a) => a.v <= TARGET_ADDED_P99_MS);
    for (const a of verdicts) {
      const ok = a.v <= TARGET_ADDED_P99_MS;
      console.log(`  target: a bridged message adds <= ${TARGET_ADDED_P99_MS} ms at p99 over the server's own round trip, ${a.dir}: ${fmtDelta(a.v)} -> ${ok ? 'met' : `NOT met, ${fmtMs(a.v - TARGET_ADDED_P99_MS)} over`}`);
    }
    const withClient = qs.p2oDone.p99 - qs.p2oBaseDone.p99;
    if (prosodyNagle) console.log(`  (Prosody with Nagle's algorithm: its ~40 ms stalls land in baseline and bridged samples at random, so these p99 differences say little about the gateway)`);
    console.log(`  (PGP -> OMEMO including bob's own OMEMO decrypt, D - C: ${fmtDelta(withClient)} at p99, ${withClient <= TARGET_ADDED_P99_MS ? 'also within' : 'over'} the target)`);
    return met;
  } finally {
    await bob?.stop().catch(() => undefined);
    await carol?.stop().catch(() => undefined);
    if (gw) {
      await gw.stop().catch(() => undefined);
      await gw.destroy().catch(() => undefined);
    }
    await server?.destroy().catch(() => undefined);
  }
}
