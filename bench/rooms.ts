// `npm run bench -- rooms`: a bot in an OMEMO group chat of 20 occupants with 2 devices each.
//  1. Engine (in memory, no network): the time to encrypt one room message (one payload, 40 keys),
//     against a one-to-one message to one occupant (2 keys) measured in the same run.
//  1b. The same room in each OMEMO version (rooms-versions.ts).
//  2. Through Prosody's MUC with the gateway as its own process: room messages per second with every
//     occupant device (40 Node clients on our engine, bench/omemo-client.ts) decrypting each one,
//     against one-to-one messages to one occupant in the same run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { FakeNetwork, makePeer, openTestKeystore, reparse, type Peer } from '../test/unit/helpers/omemo-net.js';
import { Prosody, prosodyAvailable } from '../test/harness/prosody.js';
import { GatewayProcess } from '../test/harness/gateway-process.js';
import { waitUntil } from '../test/harness/gateway.js';
import { BenchOmemoClient } from './omemo-client.js';
import { Poster, histDiff, histogram, histQuantile, scrape } from './bots-support.js';
import { fmtMs, summarize, table } from './stats.js';
import { versionsBench } from './rooms-versions.js';

const OCCUPANTS = 20;
const progress = (what: string) => process.stderr.write(`  rooms bench: ${what}\n`);
const DEVICES = 2;
const BOT = 'alerts@gw.example.org';
const TOKEN = 'rooms-bench-bot-token-1';

function groupStanza(room: string, children: Element[]): Element {
  return reparse(xml('message', { from: `${room}/alerts`, to: `x@example.org`, type: 'groupchat', id: `g${Math.random().toString(36).slice(2)}` }, ...children));
}

async function engineBench(): Promise<string[][]> {
  const dir = mkdtempSync(join(tmpdir(), 'rooms-bench-'));
  const ks = openTestKeystore(join(dir, 'bot.db'));
  try {
    const net = new FakeNetwork();
    const bot = await makePeer(net, BOT, { ks, name: 'bot' });
    const users: string[] = [];
    const devices: Peer[] = [];
    for (let u = 0; u < OCCUPANTS; u++) {
      const jid = `user${u}@example.org`;
      users.push(jid);
      for (let d = 0; d < DEVICES; d++) devices.push(await makePeer(net, jid, { name: `${jid}#${d}` }));
    }
    const room = 'ops@conference.example.org';
    const t0 = performance.now();
    const first = await bot.engine.encryptGroup(BOT, users, 'first');
    const firstMs = performance.now() - t0;
    if (first.undelivered.length) throw new Error(`bench: undelivered ${first.undelivered.join()}`);
    // Every device reads the first (PreKey) message: sessions are complete on both sides.
    for (const p of devices) {
      const d = await p.engine.decryptFrom(p.jid, groupStanza(room, first.children), BOT);
      if (!d.ok || d.body !== 'first') throw new Error(`bench: ${p.name} could not read the first room message (${d.ok ? 'body' : d.reason})`);
    }
    const N = 40;
    const group: number[] = [];
    const single: number[] = [];
    let last: Element[] = [];
    for (let i = 0; i < N; i++) {
      let t = performance.now();
      const g = await bot.engine.encryptGroup(BOT, users, `room message ${i}`);
      group.push(performance.now() - t);
      last = g.children;
      t = performance.now();
      await bot.engine.encrypt(BOT, users[0]!, `one-to-one ${i}`);
      single.push(performance.now() - t);
    }
    const keys = last[0]!.getChild('header')!.getChildren('key').length;
    // Each device still reads the newest (each ratchet advanced by all N messages on the sending side).
    let read = 0;
    for (const p of devices) {
      const d = await p.engine.decryptFrom(p.jid, groupStanza(room, last), BOT);
      if (d.ok && d.body === `room message ${N - 1}`) read++;
    }
    const g = summarize(group);
    const s = summarize(single);
    return [
      ['first room message (40 session builds, PreKey)', fmtMs(firstMs), '', ''],
      [`room message, ${keys} keys (read by ${read}/${devices.length} devices)`, fmtMs(g.median), fmtMs(g.p90), `${(g.median / s.median).toFixed(1)}x`],
      ['reference: one-to-one, 2 keys (same run)', fmtMs(s.median), fmtMs(s.p90), '1.0x'],
      ['room message per key', fmtMs(g.median / keys), '', `${(g.median / keys / (s.median / 2)).toFixed(2)}x of 1:1 per key`],
    ];
  } finally {
    ks.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function serverBench(): Promise<string[][]> {
  const server = await Prosody.start({ nagle: false });
  const clients: BenchOmemoClient[] = [];
  let gw: GatewayProcess | null = null;
  let poster: Poster | null = null;
  const room = `ops@${server.mucDomain}`;
  try {
    for (let u = 0; u < OCCUPANTS; u++) {
      const pair: BenchOmemoClient[] = [];
      for (let d = 0; d < DEVICES; d++) pair.push(await BenchOmemoClient.start(server, `user${u}`, { receipts: false, resource: `dev${d}` }));
      // One account, two devices: one device list with both.
      await pair[0]!.publishDeviceList(await Promise.all(pair.map((c) => c.deviceId())));
      clients.push(...pair);
    }
    const owner = clients[0]!;
    await owner.joinRoom(room, 'user0-dev0');
    const bot = `alerts@${server.componentDomain}`;
    for (const jid of [bot, ...Array.from({ length: OCCUPANTS - 1 }, (_, u) => `user${u + 1}@${server.domain}`)]) await owner.setAffiliation(room, jid, 'member');
    for (let i = 1; i < clients.length; i++) await clients[i]!.joinRoom(room, `user${Math.floor(i / DEVICES)}-dev${i % DEVICES}`);

    progress('occupants joined; starting the gateway');
    gw = await GatewayProcess.create(server, {
      bots: [{ localpart: 'alerts', token: TOKEN, rate_limit: { per_second: 100000, burst: 100000 }, rooms: [room] }],
    });
    await gw.start();
    const g = gw;
    await waitUntil(async () => {
      const r = (await g.get('/v1/bots/alerts/rooms', TOKEN)).body.rooms as Array<{ state: string; devices: number }>;
      return r[0]?.state === 'joined' && r[0].devices === OCCUPANTS * DEVICES;
    }, 60000, 'the bot in the room with every occupant device known');
    poster = new Poster(gw.url);
    const p = poster;
    const received = new Map<BenchOmemoClient, number>();
    for (const c of clients) c.onMessage = (m) => received.set(c, (received.get(c) ?? 0) + (m.from === room ? 1 : 0));
    const direct = new Map<BenchOmemoClient, number>();

    const run = async (to: string, n: number, tag: string, readers: BenchOmemoClient[], counter: Map<BenchOmemoClient, number>) => {
      const base = new Map(readers.map((c) => [c, counter.get(c) ?? 0]));
      const sentMetric = (x: Map<string, number>) => [...x].filter(([k]) => k.startsWith('gateway_messages_total{') && k.includes('direction="out"') && k.includes('result="sent"')).reduce((a, [, v]) => a + v, 0);
      const sent0 = sentMetric(await scrape(g.url));
      const t0 = performance.now();
      let sentSecs = NaN;
      const watchUntil = Date.now() + 180_000;
      const watcher = (async () => {
        while (Number.isNaN(sentSecs)) {
          if (Date.now() > watchUntil) throw new Error(`bench: ${tag}: the gateway's sent counter did not reach ${n} (now ${sentMetric(await scrape(g.url)) - sent0})`);
          if (sentMetric(await scrape(g.url)) - sent0 >= n) sentSecs = (performance.now() - t0) / 1000;
          else await new Promise((r) => setTimeout(r, 25));
        }
      })();
      watcher.catch(() => undefined); // awaited below; a failure meanwhile must not go unhandled
      const statuses = await Promise.all(Array.from({ length: n }, (_, i) => p.post('/v1/messages', TOKEN, JSON.stringify({ to, body: `${tag} ${i}` }))));
      if (statuses.some((st) => st !== 202)) throw new Error(`bench: POST answered ${statuses.find((st) => st !== 202)}`);
      await waitUntil(() => readers.every((c) => (counter.get(c) ?? 0) - base.get(c)! >= n), 120000, `${tag}: every device read ${n}`);
      const readSecs = (performance.now() - t0) / 1000;
      await watcher;
      return { readSecs, sentSecs };
    };

    progress('the bot is in the room; warm-up');
    // Warm-up: the first room message builds 40 sessions (PreKey); one-to-one reuses them.
    await run(room, 1, 'warm-up', clients, received);
    for (const c of clients.slice(0, DEVICES)) c.onMessage = (m) => {
      if (m.from === room) received.set(c, (received.get(c) ?? 0) + 1);
      else direct.set(c, (direct.get(c) ?? 0) + 1);
    };
    const M = 100;
    progress(`${M} room messages`);
    const encBefore = await scrape(g.url);
    const roomSecs = await run(room, M, 'room', clients, received);
    const encAfter = await scrape(g.url);
    progress(`${M} one-to-one messages`);
    const oneSecs = await run(`user0@${server.domain}`, M, 'direct', clients.slice(0, DEVICES), direct);
    const enc = histDiff(encryptHist(encAfter), encryptHist(encBefore));
    const roomRate = M / roomSecs.readSecs;
    const oneRate = M / oneSecs.readSecs;
    const roomSent = M / roomSecs.sentSecs;
    const oneSent = M / oneSecs.sentSecs;
    return [
      [`room: ${M} messages, ${OCCUPANTS} occupants x ${DEVICES} devices all reading`, `${roomRate.toFixed(1)} msg/s read`, `${(roomRate * OCCUPANTS * DEVICES).toFixed(0)} device reads/s`, `${(roomRate / oneRate).toFixed(2)}x`],
      [`reference: ${M} one-to-one messages to one occupant (2 devices), same run`, `${oneRate.toFixed(1)} msg/s read`, `${(oneRate * DEVICES).toFixed(0)} device reads/s`, '1.00x'],
      ['room: sent by the gateway (POST -> stanza written)', `${roomSent.toFixed(1)} msg/s`, `${(roomSent * OCCUPANTS * DEVICES).toFixed(0)} keys/s`, `${(roomSent / oneSent).toFixed(2)}x`],
      ['reference: one-to-one sent by the gateway', `${oneSent.toFixed(1)} msg/s`, `${(oneSent * DEVICES).toFixed(0)} keys/s`, '1.00x'],
      ['gateway: encrypt of a room message (40 keys), from its metrics', `median ${fmtMs(histQuantile(enc, 0.5) * 1000)}`, `p90 ${fmtMs(histQuantile(enc, 0.9) * 1000)}`, `${enc.count} samples`],
    ];
  } catch (e) {
    if (gw) process.stderr.write(`  rooms bench: gateway output (last lines):\n${gw.output.split('\n').slice(-40).join('\n')}\n`);
    throw e;
  } finally {
    poster?.close();
    await gw?.destroy();
    await Promise.all(clients.map((c) => c.stop()));
    await server.destroy();
  }
}

/** The gateway's OMEMO 'encrypt' histogram (the sealing and per-device key encryption of one message). */
function encryptHist(s: Map<string, number>) {
  const sub = new Map<string, number>();
  const sel = 'protocol="omemo",operation="encrypt"';
  for (const [k, v] of s) {
    if (!k.startsWith('gateway_crypto_operation_seconds') || !k.includes(sel)) continue;
    sub.set(k.replace(sel, '').replace(',,', ',').replace('{,', '{').replace(',}', '}').replace('{}', ''), v);
  }
  return histogram(sub, 'gateway_crypto_operation_seconds');
}

export async function runRoomsBench(): Promise<boolean> {
  console.log(`\nRooms: one OMEMO group message for ${OCCUPANTS} occupants x ${DEVICES} devices (engine, in memory)`);
  console.log(table(['operation', 'median', 'p90', 'vs one-to-one'], await engineBench()));
  console.log(`\nRooms: the same room message in each OMEMO version (${OCCUPANTS} occupants x ${DEVICES} devices in both lists, engine, in memory, same run)`);
  console.log(table(['encrypt one room message', 'median', 'p90', 'vs legacy'], await versionsBench()));
  if (!prosodyAvailable()) {
    console.log('\nRooms through Prosody: skipped (Prosody is not installed; apt-get install prosody)');
    return true;
  }
  console.log(`\nRooms: POST /v1/messages to a room -> read by every occupant device, through Prosody MUC, gateway as its own process`);
  console.log(table(['run', 'rate', 'deliveries', 'vs one-to-one'], await serverBench()));
  console.log('(the 40 reading devices share this process and the machine with Prosody and the gateway: the read rate is bounded by them)');
  return true;
}
