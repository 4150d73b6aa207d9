// `npm run bench`: runs every benchmark in turn (bounded: each well under a minute on 2 cores).
import { runOmemoBench } from './omemo.js';

const benches: Array<{ name: string; run: () => Promise<boolean> }> = [{ name: 'omemo', run: () => runOmemoBench() }, { name: 'bots', run: async () => (await import('./bots.js')).runBotsBench() }];

const only = process.argv.slice(2);
let ok = true;
for (const b of benches) {
  if (only.length > 0 && !only.includes(b.name)) continue;
  ok = (await b.run()) && ok;
}
// Targets missed are reported, not fatal: timing depends on the machine.
if (!ok) console.log('\n(some targets missed on this machine)');
