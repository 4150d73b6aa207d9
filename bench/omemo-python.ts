// python-omemo's own figures (test/interop/omemo_bench.py, Debian's python3-omemo + oldmemo), run in
// the same `npm run bench` so the three columns come from one machine state.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export interface PythonResult {
  op: 'session_build' | 'encrypt' | 'decrypt';
  devices: number;
  mode: 'steady' | 'ping-pong' | '-';
  median_us: number;
  p90_us: number;
  n: number;
}

export interface PythonBench {
  implementation: string;
  notes?: string;
  results: PythonResult[];
}

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

/** Runs the python benchmark; null (with the reason) when python-omemo is not installed. */
export function runPythonBench(backend: 'oldmemo' | 'twomemo' = 'oldmemo'): { bench: PythonBench | null; why?: string } {
  const python = process.env.OMEMO_PYTHON ?? '/usr/bin/python3';
  const script = join(repoRoot(), 'test', 'interop', 'omemo_bench.py');
  const r = spawnSync(python, [script, '--budget', '20', '--backend', backend], { encoding: 'utf8', timeout: 180000 });
  if (r.status !== 0) return { bench: null, why: (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').slice(-1)[0] };
  try {
    return { bench: JSON.parse(r.stdout) as PythonBench };
  } catch {
    return { bench: null, why: 'unparsable output' };
  }
}

/** A python figure in ms (median, p90) for one of our rows, per device where the row is. */
export function pythonFigure(b: PythonBench, op: PythonResult['op'], devices: number, mode: PythonResult['mode'], perDevice: boolean): { median: number; p90: number } | null {
  const r = b.results.find((x) => x.op === op && x.devices === devices && x.mode === mode);
  if (!r) return null;
  const div = perDevice ? devices : 1;
  return { median: r.median_us / 1000 / div, p90: r.p90_us / 1000 / div };
}
