// `npm run bench -- rooms`, OMEMO versions: the same room (20 occupants x 2 devices, every device in
// both versions' device lists) encrypted by each engine in the same run: legacy OMEMO (40 keys in one
// header), OMEMO 2 (40 keys grouped per JID, one SCE envelope), and the room service's planner
// (bridges/rooms/group-encrypt.ts: the device lists of both versions looked up per occupant, OMEMO 2
// chosen for every device) against OMEMO 2 alone. Sessions are complete first (every device read a
// first message and its completion went back), so no row pays for key exchanges.
import { performance } from 'node:perf_hooks';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { createLogger } from '../log.js';
import { FakeNetwork, reparse } from '../test/unit/helpers/omemo-net.js';
import { makeDual, type Dual } from '../test/unit/helpers/omemo2-net.js';
import { encryptForRoom } from '../bridges/rooms/group-encrypt.js';
import type { GroupEngine } from '../bridges/engine.js';
import { fmtMs, summarize } from './stats.js';

const OCCUPANTS = 20;
const DEVICES = 2;
const BOT = 'alerts@gw.example.org';
const ROOM = 'ops@conference.example.org';

const fromRoom = (children: Element[]) => reparse(xml('message', { from: `${ROOM}/alerts`, to: 'x@example.org', type: 'groupchat', id: 'g' }, ...children));

/** Every device reads `children` with its engine of `kind`; the protocol replies (completions) go back to the bot. */
async function readAll(bot: Dual, devices: Dual[], kind: 'legacy' | 'omemo2', children: Element[], body: string): Promise<number> {
  let read = 0;
  for (const d of devices) {
    const r = await d[kind].decryptFrom(d.jid, fromRoom(children), BOT);
    if (r.ok && r.body === body) read++;
    for (const reply of r.replies) await bot[kind].decrypt(BOT, reparse(xml('message', { ...reply.attrs, from: `${d.jid}/gw` }, ...reply.getChildElements())));
  }
  return read;
}

export async function versionsBench(): Promise<string[][]> {
  const net = new FakeNetwork();
  const bot = await makeDual(net, BOT, { name: 'bot' });
  const users: string[] = [];
  const devices: Dual[] = [];
  for (let u = 0; u < OCCUPANTS; u++) {
    const jid = `user${u}@example.org`;
    users.push(jid);
    for (let d = 0; d < DEVICES; d++) devices.push(await makeDual(net, jid, { name: `${jid}#${d}` }));
  }
  const n = devices.length;
  for (const kind of ['legacy', 'omemo2'] as const) {
    const first = await bot[kind].encryptGroup(BOT, users, 'first', { room: ROOM });
    if (first.undelivered.length) throw new Error(`bench: ${kind} undelivered ${first.undelivered.join()}`);
    const read = await readAll(bot, devices, kind, first.children, 'first');
    if (read !== n) throw new Error(`bench: ${read}/${n} devices read the first ${kind} room message`);
  }
  const planner: readonly GroupEngine[] = [bot.omemo2, bot.legacy];
  const log = createLogger('silent');
  const N = 40;
  const t = { legacy: [] as number[], omemo2: [] as number[], planned: [] as number[] };
  const last: Record<'legacy' | 'omemo2', Element[]> = { legacy: [], omemo2: [] };
  let plannedStanzas = 0;
  for (let i = 0; i < N; i++) {
    // Interleaved, so that load from other processes falls on every row alike.
    let s = performance.now();
    last.legacy = (await bot.legacy.encryptGroup(BOT, users, `m${i}`, { room: ROOM })).children;
    t.legacy.push(performance.now() - s);
    s = performance.now();
    last.omemo2 = (await bot.omemo2.encryptGroup(BOT, users, `m${i}`, { room: ROOM })).children;
    t.omemo2.push(performance.now() - s);
    s = performance.now();
    const p = await encryptForRoom(planner, BOT, ROOM, users, `m${i}`, log);
    t.planned.push(performance.now() - s);
    plannedStanzas = p.stanzas.length;
  }
  // The last messages still read on every device (each ratchet moved on by all of them).
  const readLegacy = await readAll(bot, devices, 'legacy', last.legacy, `m${N - 1}`);
  const readOmemo2 = await readAll(bot, devices, 'omemo2', last.omemo2, `m${N - 1}`);
  const [l, o, p] = [summarize(t.legacy), summarize(t.omemo2), summarize(t.planned)];
  return [
    [`legacy OMEMO, ${n} keys (read by ${readLegacy}/${n})`, fmtMs(l.median), fmtMs(l.p90), '1.00x'],
    [`OMEMO 2, ${n} keys (read by ${readOmemo2}/${n})`, fmtMs(o.median), fmtMs(o.p90), `${(o.median / l.median).toFixed(2)}x`],
    [`room service planner, both versions listed (${plannedStanzas} stanza)`, fmtMs(p.median), fmtMs(p.p90), `${(p.median / l.median).toFixed(2)}x (${(p.median / o.median).toFixed(2)}x of OMEMO 2 alone)`],
  ];
}
