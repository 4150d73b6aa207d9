// Summary of a CPU profile written by bench/cpu-profile.ts (or any .cpuprofile):
//   node dist/bench/profile-summary.js FILE [TOP]
// Shares of the busy time (samples that are not idle): by the innermost frame in this project's
// code (file and function: native and library work is charged to the project code that called it,
// so "outbox-store.js claim" includes its SQLite statements), then by self time of any function.
import { readFileSync } from 'node:fs';

interface Frame { functionName: string; url: string; lineNumber: number }
interface Node { id: number; callFrame: Frame; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[] }

const [file, topText] = process.argv.slice(2);
if (!file) {
  console.error('usage: node dist/bench/profile-summary.js FILE.cpuprofile [TOP]');
  process.exit(2);
}
const top = Number(topText ?? 40);
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map<number, Node>();
const parent = new Map<number, number>();
for (const n of p.nodes) {
  byId.set(n.id, n);
  for (const c of n.children ?? []) parent.set(c, n.id);
}
const own = (url: string) => url.includes('/dist/') && !url.includes('/node_modules/');
const short = (url: string) => url.slice(url.lastIndexOf('/dist/') + 6);
const label = (f: Frame) => `${f.functionName || '(anonymous)'} ${own(f.url) ? short(f.url) : f.url.replace(/^.*\/node_modules\//, '')}:${f.lineNumber + 1}`;
const projectKey = new Map<number, string>();
const projectOf = (id: number): string => {
  const hit = projectKey.get(id);
  if (hit !== undefined) return hit;
  const n = byId.get(id)!;
  const f = n.callFrame;
  let k: string;
  if (['(idle)', '(garbage collector)', '(program)'].includes(f.functionName)) k = f.functionName;
  else if (own(f.url)) k = `${short(f.url)} ${f.functionName || '(anonymous)'}`;
  else {
    const up = parent.get(id);
    k = up === undefined ? `(outside project code) ${label(f)}` : projectOf(up);
    if (k === '(root)') k = `(outside project code) ${label(f)}`;
  }
  if (f.functionName === '(root)') k = '(root)';
  projectKey.set(id, k);
  return k;
};
const selfUs = new Map<number, number>();
for (let i = 0; i < p.samples.length; i++) selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
let total = 0;
let idle = 0;
const byProject = new Map<string, number>();
const bySelf = new Map<string, number>();
for (const [id, us] of selfUs) {
  const f = byId.get(id)!.callFrame;
  total += us;
  if (f.functionName === '(idle)') {
    idle += us;
    continue;
  }
  const k = projectOf(id);
  byProject.set(k, (byProject.get(k) ?? 0) + us);
  const s = label(f);
  bySelf.set(s, (bySelf.get(s) ?? 0) + us);
}
const busy = total - idle;
const print = (title: string, m: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${((100 * us) / busy).toFixed(1).padStart(6)}%  ${k}`);
};
console.log(`${file}: ${(total / 1e6).toFixed(1)} s profiled, idle ${((100 * idle) / total).toFixed(1)}%, busy ${(busy / 1e6).toFixed(1)} s (shares below are of the busy time)`);
print('By the innermost project frame (library and native work charged to its project caller):', byProject);
print('By self time:', bySelf);
