// The regression line of the bots benchmark: each run's same-run ratios are kept in
// .bench-history/bots.json (not in git; BENCH_BOTS_HISTORY=PATH elsewhere, =0 not at all), and the next
// run prints them beside its own, with the commit they were measured at. Ratios (gateway CPU per
// message over the engine's own encrypt) rather than milliseconds: they mean the same on a loaded machine.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface RunFigures {
  /** Gateway CPU per delivered message over the floor. */
  ratio: number;
  cpuMsPerMsg: number;
  achieved: number;
  p99Ms: number;
}

interface History {
  commit: string;
  at: string;
  floorMs: number;
  runs: Record<string, RunFigures>;
}

const path = (): string | null => {
  const env = process.env.BENCH_BOTS_HISTORY;
  if (env === '0') return null;
  return env ?? fileURLToPath(new URL('../../.bench-history/bots.json', import.meta.url));
};

function commitNow(): string {
  try {
    const id = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${id}+changes` : id;
  } catch {
    return 'unknown';
  }
}

/** Lines comparing `runs` with the previous run's figures (if kept), then keeps these for the next run. */
export function regressionLines(floorMs: number, runs: Record<string, RunFigures>): string[] {
  const file = path();
  if (!file) return [];
  let prev: History | null = null;
  try {
    prev = JSON.parse(readFileSync(file, 'utf8')) as History;
  } catch {
    prev = null;
  }
  const now: History = { commit: commitNow(), at: new Date().toISOString(), floorMs, runs };
  const out: string[] = [];
  if (prev) {
    out.push(`Regression line: this run (${now.commit}) vs the previous one kept (${prev.commit}, ${prev.at}; floor ${prev.floorMs.toFixed(3)} -> ${floorMs.toFixed(3)} ms):`);
    for (const [label, r] of Object.entries(runs)) {
      const p = prev.runs[label];
      if (!p) continue;
      const change = (r.ratio / p.ratio - 1) * 100;
      out.push(
        `  ${label}: gateway CPU per message ${p.ratio.toFixed(1)}x -> ${r.ratio.toFixed(1)}x the floor (${change >= 0 ? '+' : ''}${change.toFixed(0)}%), ` +
          `${p.cpuMsPerMsg.toFixed(2)} -> ${r.cpuMsPerMsg.toFixed(2)} ms; p99 ${p.p99Ms.toFixed(0)} -> ${r.p99Ms.toFixed(0)} ms; achieved ${p.achieved.toFixed(0)} -> ${r.achieved.toFixed(0)}/s`,
      );
    }
  } else {
    out.push(`Regression line: no earlier figures in ${file}; this run's are kept there for the next one.`);
  }
  try {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(now, null, 2));
  } catch {
    out.push(`  (could not keep the figures in ${file})`);
  }
  return out;
}
