// The storm bench's monitor (bench/storm.ts): an account of another domain that pings the component
// and its own server every PING_EVERY_MS and records each round trip. By default it runs in its own
// process (forked from the bench, `node dist/bench/storm-monitor.js` with an IPC channel), so that
// the attackers' clients, which build and write thousands of stanzas a second in the bench's
// process, cannot delay its timers or its reading of the answers: a round trip measured here is the
// server's and the gateway's, not the clients'. STORM_MONITOR=inline runs it in the bench's process
// as before (for comparison). Its own event-loop lag is reported with the figures.
import { client, xml } from '@xmpp/client';
import type { Client } from '@xmpp/client';
import { quantile } from './bots-support.js';

export interface PingRecord {
  at: number;
  ms: number;
  answered: boolean;
  lateMs?: number;
}

export interface PingStats {
  n: number;
  p50: number;
  p99: number;
  max: number;
  unanswered: number;
  late: string;
}

/** Round trips recorded between `from` and `to` (Date.now() times, the same clock in every process). */
export function pingStats(rtts: readonly PingRecord[], from: number, to: number): PingStats {
  const xs = rtts.filter((r) => r.at >= from && r.at <= to);
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

/** The `k` slowest round trips between `from` and `to`, slowest first. */
export function slowest(rtts: readonly PingRecord[], from: number, to: number, k: number): PingRecord[] {
  return rtts
    .filter((r) => r.at >= from && r.at <= to)
    .sort((a, b) => b.ms - a.ms)
    .slice(0, k);
}

interface IqClient {
  on(ev: 'stanza', fn: (el: { name: string; attrs: Record<string, unknown> }) => void): unknown;
}

/**
 * Pings `to` from `c`; records each round trip (a timeout counts as timeoutMs), and when the answer
 * to a timed-out ping comes after all (late: it waited somewhere) or never (lost). `at` is when the
 * answer came (or the ping timed out).
 */
export class Pinger {
  readonly rtts: PingRecord[] = [];
  #stop = false;
  #loop: Promise<void> = Promise.resolve();
  #n = 0;
  /** Timed-out pings by id: when sent, and their record. */
  readonly #timedOut = new Map<string, { t0: number; rec: PingRecord }>();
  constructor(
    readonly iq: (el: ReturnType<typeof xml>, timeoutMs: number) => Promise<unknown>,
    events: IqClient,
    readonly to: string,
    readonly everyMs: number,
    readonly timeoutMs: number,
  ) {
    events.on('stanza', (el) => {
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
        const answered = await this.iq(xml('iq', { type: 'get', to: this.to, id }, xml('ping', { xmlns: 'urn:xmpp:ping' })), this.timeoutMs)
          .then(() => true)
          .catch(() => false);
        const ms = answered ? performance.now() - t0 : this.timeoutMs;
        const rec: PingRecord = { at: Date.now(), ms, answered };
        if (!answered) this.#timedOut.set(id, { t0, rec });
        this.rtts.push(rec);
        await new Promise((r) => setTimeout(r, Math.max(0, this.everyMs - ms)));
      }
    })();
  }
  async stop(): Promise<void> {
    this.#stop = true;
    await this.#loop;
  }
}

/** A timer every 100 ms notes how late it fires: the worst delay between `from` and `to`. */
export class OwnLag {
  readonly samples: Array<{ at: number; ms: number }> = [];
  #expected = performance.now() + 100;
  readonly #timer = setInterval(() => {
    const now = performance.now();
    this.samples.push({ at: Date.now(), ms: Math.max(0, now - this.#expected) });
    this.#expected = now + 100;
  }, 100);
  maxBetween(from: number, to: number): number {
    return Math.max(0, ...this.samples.filter((s) => s.at >= from && s.at <= to).map((s) => s.ms));
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

export interface MonitorArgs {
  service: string;
  domain: string;
  username: string;
  password: string;
  /** Ping targets: the component, the account's own server. */
  targets: string[];
  everyMs: number;
  timeoutMs: number;
}

/** What the monitor process answers to 'snapshot': each target's round trips and its own lag. */
export interface MonitorSnapshot {
  rtts: Record<string, PingRecord[]>;
  lag: Array<{ at: number; ms: number }>;
}

// ---- the monitor process ----
async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]!) as MonitorArgs;
  const c: Client = client({ service: args.service, domain: args.domain, username: args.username, password: args.password, resource: 'monitor' });
  c.on('error', () => {});
  await c.start();
  c.reconnect.stop();
  const lag = new OwnLag();
  const pingers = args.targets.map((t) => new Pinger((el, ms) => c.iqCaller.request(el, ms), c as unknown as IqClient, t, args.everyMs, args.timeoutMs));
  for (const p of pingers) p.start();
  const snapshot = (): MonitorSnapshot => ({ rtts: Object.fromEntries(pingers.map((p) => [p.to, p.rtts])), lag: lag.samples });
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'snapshot') process.send!({ snapshot: snapshot() });
    if (m.cmd === 'stop') {
      void (async () => {
        for (const p of pingers) await p.stop();
        lag.stop();
        process.send!({ snapshot: snapshot(), stopped: true }, () => {
          void c.stop().finally(() => process.exit(0));
        });
      })();
    }
  });
  process.send!({ ready: true });
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href && process.send) {
  main().catch((e: unknown) => {
    process.stderr.write(`storm monitor: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
