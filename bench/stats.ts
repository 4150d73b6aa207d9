// Small timing helpers for the benchmarks: per-operation samples, medians and percentiles, a table.
import { performance } from 'node:perf_hooks';

export interface Stat {
  n: number;
  median: number;
  p90: number;
}

/** Summarizes samples in milliseconds (each sample optionally divided, e.g. per device). */
export function summarize(samples: number[], divide = 1): Stat {
  const s = samples.map((x) => x / divide).sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))]!;
  return { n: s.length, median: at(0.5), p90: at(0.9) };
}

/** Runs `fn` `n` times, timing each call (ms). */
export async function sample(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn(i);
    out.push(performance.now() - t);
  }
  return out;
}

export function fmtMs(ms: number): string {
  if (ms < 1) return `${(ms * 1000).toFixed(0)} us`;
  return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
}

export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(' | ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('-|-'), ...rows.map(line)].join('\n');
}

/**
 * Throughput benchmarks measure capacity, not the limits (README "Limits"): one sender and one
 * domain send far beyond the per-sender and per-domain defaults, and a saturated loop may lag.
 */
export const THROUGHPUT_LIMITS = {
  sender_stanzas_per_second: 1_000_000,
  sender_stanza_burst: 1_000_000,
  domain_stanzas_per_second: 1_000_000,
  domain_stanza_burst: 1_000_000,
  max_outbox_depth: 1_000_000,
  max_webhook_queue_depth: 1_000_000,
  max_event_loop_lag: '60s',
};
