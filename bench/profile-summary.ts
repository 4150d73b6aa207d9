// Summary of a CPU profile written by bench/cpu-profile.ts (or any .cpuprofile):
//   node dist/bench/profile-summary.js FILE [TOP]
// Shares of the busy time (samples that are not idle): by the stages of a bot message (each sample
// goes to the first stage, in the order listed, that one of its frames belongs to), by the innermost
// frame in this project's code (file and function: native and library work is charged to the
// project code that called it, so "outbox-store.js flush" includes its SQLite statements), then by
// self time of any function. Under CPU contention a sample taken while the process waited for a
// core lands where it was preempted (often a socket write that woke its reader), so compare shares
// of profiles taken in the same conditions.
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
const stages: Array<[string, (stack: Frame[]) => boolean]> = [
  ['GC', (st) => st[0]!.functionName === '(garbage collector)'],
  ['async hooks (AsyncLocalStorage)', (st) => /async_hooks/.test(st[0]!.url) || ['promiseInitHook', '_propagate', 'lookupPublicResource'].includes(st[0]!.functionName)],
  ['/metrics scrape', (st) => st.some((f) => /http\/metrics\.js$/.test(f.url) && f.functionName === 'render')],
  ['OMEMO session write (store + commit)', (st) => st.some((f) => (/omemo2?\/sessions\.js$/.test(f.url) && /flush|writeAll|#write/.test(f.functionName)) || /keystore\/protocol-store\.js$/.test(f.url))],
  ['OMEMO encrypt (engine)', (st) => st.some((f) => /bridges\/(omemo|omemo2|ratchet)\//.test(f.url))],
  ['outbox commit (insert, seal, marks, BEGIN/COMMIT)', (st) => st.some((f) => /keystore\/outbox-store\.js$/.test(f.url))],
  ['stanza socket write (uncork)', (st) => st.some((f) => /component\/connection\.js$/.test(f.url) && f.functionName === '') && !st.some((f) => /outbound|outbox-sender/.test(f.url))],
  ['HTTP in + 202 out', (st) => st.some((f) => /\/http\/|node:_http/.test(f.url) || f.functionName.startsWith('parserOn'))],
  ['stanza build + send (outbound, connection.send, ltx)', (st) => st.some((f) => /bridges\/(outbound|outbox-sender)\.js$|keyed-worker\.js$|component\/connection\.js$/.test(f.url))],
  ['inbound stanzas (parse, router, receipts)', (st) => st.some((f) => /component\/(stream-parser|inbound-queue|router|stanza-limits)\.js$|bridges\/core\.js$|dist\/context\.js$/.test(f.url))],
  ['other', () => true],
];
const byStage = new Map<string, number>(stages.map(([n]) => [n, 0]));
for (const [id, us] of selfUs) {
  if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
  const stack: Frame[] = [];
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) stack.push(byId.get(cur)!.callFrame);
  const name = stages.find(([, test]) => test(stack))![0];
  byStage.set(name, byStage.get(name)! + us);
}
const print = (title: string, m: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${((100 * us) / busy).toFixed(1).padStart(6)}%  ${k}`);
};
console.log(`${file}: ${(total / 1e6).toFixed(1)} s profiled, idle ${((100 * idle) / total).toFixed(1)}%, busy ${(busy / 1e6).toFixed(1)} s (shares below are of the busy time)`);
print('By stage of a bot message:', byStage);
print('By the innermost project frame (library and native work charged to its project caller):', byProject);
print('By self time:', bySelf);
