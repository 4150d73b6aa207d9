// `npm run bench [-- NAME ...]`: runs every benchmark in turn (or the named ones): omemo, pgp,
// ox, bridge (PGP <-> OMEMO, then OX <-> OMEMO), bridge-ox (only the latter), otr, bots (SQLite, then PostgreSQL), failover (keystore.url takeover time), rooms, storm (hostile traffic and
// first-contact bursts; only when named). Each prints its figures and whether its targets were met.
import { runOmemoBench } from './omemo.js';
import { runPgpBench } from './pgp.js';
import { runBridgeBench } from './bridge.js';
import { runOxBench } from './ox.js';
import { runOxBridgeBench } from './bridge-ox.js';
import { runOtrBench } from './otr.js';

const benches: Array<{ name: string; run: () => Promise<boolean> }> = [
  { name: 'omemo', run: () => runOmemoBench() },
  { name: 'pgp', run: async () => (await runPgpBench(), true) },
  { name: 'ox', run: () => runOxBench() },
  { name: 'bridge', run: async () => (await runBridgeBench()) && (await runOxBridgeBench()) },
  { name: 'bridge-ox', run: () => runOxBridgeBench() },
  { name: 'otr', run: () => runOtrBench() },
  // Imported on use (they load what only they need).
  { name: 'bots', run: async () => (await import('./bots.js')).runBotsBench() },
  { name: 'failover', run: async () => (await import('./failover.js')).runFailoverBench() },
  { name: 'rooms', run: async () => (await import('./rooms.js')).runRoomsBench() },
  // Only when named (about four minutes): `npm run bench -- storm`.
  { name: 'storm', run: async () => (await import('./storm.js')).runStormBench() },
];

const only = process.argv.slice(2);
let ok = true;
for (const b of benches) {
  if (only.length > 0 ? !only.includes(b.name) : b.name === 'storm') continue;
  ok = (await b.run()) && ok;
}
// Targets missed are reported, not fatal: timing depends on the machine.
if (!ok) console.log('\n(some targets missed on this machine)');
