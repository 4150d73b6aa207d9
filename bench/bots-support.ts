// Helpers for the bots benchmark: processes seen through /proc (pid, CPU time, RSS), the gateway's
// Prometheus text parsed into numbers, histogram quantiles, a least-squares slope, and a keep-alive
// HTTP poster for POST /v1/messages.
import { Agent, request } from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';

// ---- /proc ----

/** The pid of the first process whose command line contains `needle` (not this process), or null. */
export function findPid(needle: string): number | null {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(needle)) return Number(name);
    } catch {
      /* gone meanwhile */
    }
  }
  return null;
}

const CLK_TCK = 100; // USER_HZ on Linux

/** User + system CPU seconds used so far by `pid` (null if it is gone). */
export function cpuSeconds(pid: number | null): number | null {
  if (pid === null) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 (utime, stime)
  } catch {
    return null;
  }
}

/**
 * CPU seconds of `pid` and its children (PostgreSQL: the postmaster and its backends), counting the
 * children that already ended (cutime, cstime); null if `pid` is gone.
 */
export function treeCpuSeconds(pid: number | null): number | null {
  if (pid === null) return null;
  const fields = (p: number | string): string[] | null => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    } catch {
      return null;
    }
  };
  const own = fields(pid);
  if (!own) return null;
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = fields(name);
    if (f && Number(f[1]) === pid) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / CLK_TCK;
}

/** Busy and total CPU time of the whole machine so far (all cores, in USER_HZ ticks), from /proc/stat. */
export function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const sum = f.reduce((a, b) => a + b, 0);
  return { busy: (sum - idle) / CLK_TCK, total: sum / CLK_TCK };
}

/** Resident set size of `pid` in bytes (VmRSS), or null. */
export function rssBytes(pid: number | null): number | null {
  if (pid === null) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

// ---- Prometheus text ----

export type Samples = Map<string, number>;

/** `name{labels} value` lines into a map keyed by `name{labels}` exactly as written. */
export function parseProm(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

export async function scrape(baseUrl: string): Promise<Samples> {
  // Tried again after a network error: a kept-alive connection the gateway closed as idle (after a
  // pause between runs) fails the first request on it with "other side closed".
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await fetch(`${baseUrl}/metrics`);
      return parseProm(await r.text());
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

/** Sum of every series of metric `name` (any labels) that matches `labelFilter`. */
export function total(s: Samples, name: string, labelFilter = ''): number {
  let n = 0;
  for (const [k, v] of s) if ((k === name || k.startsWith(`${name}{`)) && k.includes(labelFilter)) n += v;
  return n;
}

export interface Histogram {
  /** Cumulative counts per upper bound, ascending (+Inf last). */
  buckets: Array<{ le: number; count: number }>;
  sum: number;
  count: number;
}

export function histogram(s: Samples, name: string): Histogram {
  const buckets: Array<{ le: number; count: number }> = [];
  for (const [k, v] of s) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}$`).exec(k);
    if (m) buckets.push({ le: m[1] === '+Inf' ? Infinity : Number(m[1]), count: v });
  }
  buckets.sort((a, b) => a.le - b.le);
  return { buckets, sum: s.get(`${name}_sum`) ?? 0, count: s.get(`${name}_count`) ?? 0 };
}

/** `after - before`, bucket by bucket: the observations made between two scrapes. */
export function histDiff(after: Histogram, before: Histogram): Histogram {
  return {
    buckets: after.buckets.map((b, i) => ({ le: b.le, count: b.count - (before.buckets[i]?.count ?? 0) })),
    sum: after.sum - before.sum,
    count: after.count - before.count,
  };
}

/** The q-quantile, interpolated linearly inside its bucket (as Prometheus' histogram_quantile). */
export function histQuantile(h: Histogram, q: number): number {
  if (h.count <= 0) return NaN;
  const rank = q * h.count;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of h.buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe;
      return prevLe + ((b.le - prevLe) * (rank - prevCount)) / Math.max(1, b.count - prevCount);
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

// ---- numbers ----

/** Least-squares slope of y over x. */
export function slope(points: Array<{ x: number; y: number }>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** The q-quantile of already sorted numbers (nearest rank). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

// ---- HTTP ----

/** The `error.code` of a gateway error body, or what the body was instead. */
function errorCode(text: string): string {
  try {
    const code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
    if (typeof code === 'string') return code;
  } catch {
    /* not JSON */
  }
  return text.length ? 'non-JSON body' : 'empty body';
}

/** POSTs JSON over kept-alive connections (node:http: lighter per request than fetch). */
export class Poster {
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 64 });
  readonly #host: string;
  readonly #port: number;

  /** POSTs not answered 202, counted by "status error-code" (0: no answer), since construction. */
  readonly refusals = new Map<string, number>();

  #refused(key: string): void {
    this.refusals.set(key, (this.refusals.get(key) ?? 0) + 1);
  }

  constructor(baseUrl: string) {
    const u = new URL(baseUrl);
    this.#host = u.hostname;
    this.#port = Number(u.port);
  }

  /** Resolves with the status code (0 on a network error). The answer's body is read and dropped. */
  post(path: string, token: string, json: string): Promise<number> {
    return new Promise((resolve) => {
      const req = request(
        {
          agent: this.#agent,
          host: this.#host,
          port: this.#port,
          method: 'POST',
          path,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) },
        },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status === 202) {
            res.resume();
            res.on('end', () => resolve(status));
          } else {
            // A refusal: its error code is kept, so a bench run can say what refused it.
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              this.#refused(`${status} ${errorCode(Buffer.concat(chunks).toString('utf8'))}`);
              resolve(status);
            });
          }
          res.on('error', () => {
            this.#refused('0 response error');
            resolve(0);
          });
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        this.#refused(`0 ${e.code ?? 'network error'}`);
        resolve(0);
      });
      req.end(json);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}
