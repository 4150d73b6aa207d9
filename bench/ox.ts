// OX benchmark (XEP-0373/0374): the engine's signcrypt (sign+encrypt) and decrypt+verify with every
// inbound check, per message, against GnuPG 2.2 doing the same work on the same <signcrypt>
// elements in the same run (one gpg process per encrypt and per decrypt, as a client or gateway
// driving the gpg binary would). Every round trip is checked (same body, signature good).
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { Keystore } from '../keystore/keystore.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { TrustStore } from '../keystore/trust-store.js';
import { ContactStore } from '../keystore/contact-store.js';
import { ReplayStore } from '../keystore/replay-store.js';
import { Metrics } from '../http/metrics.js';
import { parseXml, xml, type Element } from '../component/xml.js';
import type { EnginePorts } from '../bridges/engine.js';
import { ReplayGuard } from '../bridges/pgp/replay-guard.js';
import { createOxEngine } from '../bridges/ox/engine.js';
import { signcrypt, NS_OX } from '../bridges/ox/wire.js';
import { GpgUser, gpgAvailable } from '../test/harness/gpg.js';
import { row, stats } from './pgp.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';

function bodies(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `alert #${i}: disk ${50 + (i % 50)}% full on db-${i % 7} — Grüße`);
}

async function engineRoundTrips(texts: string[]): Promise<{ enc: number[]; dec: number[]; both: number[] }> {
  const ks = Keystore.open(':memory:', 'bench-passphrase', { kdf: { N: 1024, r: 8, p: 1 } });
  try {
    // Both hosted JIDs live in this engine; a "remote" read of one of them is answered from its nodes.
    const nodes = new Map<string, Array<{ id: string; payload: Element }>>();
    const ports: EnginePorts = {
      store: createProtocolStore(ks, 'ox'),
      trust: new TrustStore(ks, 'btbv'),
      contacts: new ContactStore(ks),
      keystore: ks,
      pubsub: {
        publish: (owner, node, id, payload) => void nodes.set(`${owner}\0${node}`, [{ id, payload }]),
        retract: () => undefined,
        localItems: (owner, node) => nodes.get(`${owner}\0${node}`) ?? [],
        fetch: async (_from, to, node) => (nodes.get(`${to}\0${node}`) ?? []).map((i) => parseXml(xml('item', { id: i.id }, i.payload).toString())),
      },
      metrics: new Metrics({ processMetrics: false }),
      log: pino({ level: 'silent' }),
      now: () => Date.now(),
      resource: 'gw',
    };
    const replay = new ReplayGuard(new ReplayStore(ks), 'pgp', 30, () => Date.now());
    const engine = createOxEngine(ports, { replay, maxClockSkewMs: 600_000, plaintextAllowed: () => false });
    await engine.ensureIdentity(A);
    await engine.ensureIdentity(B);
    const enc: number[] = [];
    const dec: number[] = [];
    const both: number[] = [];
    const one = async (body: string, record: boolean) => {
      const t0 = performance.now();
      const out = await engine.encrypt(A, B, body);
      const t1 = performance.now();
      const stanza = xml('message', { from: `${A}/gw`, to: B, type: 'chat' }, ...out.children);
      const r = await engine.decrypt(B, stanza);
      const t2 = performance.now();
      if (!r.ok || r.body !== body || r.sender.fingerprint === undefined) throw new Error(`engine round trip failed: ${r.ok ? 'wrong body' : r.reason}`);
      if (record) {
        enc.push(t1 - t0);
        dec.push(t2 - t1);
        both.push(t2 - t0);
      }
    };
    for (let i = 0; i < 10; i++) await one(`warm-up ${i}`, false);
    for (const body of texts) await one(body, true);
    return { enc, dec, both };
  } finally {
    ks.close();
  }
}

async function gpgRoundTrips(sender: GpgUser, receiver: GpgUser, texts: string[]): Promise<{ enc: number[]; dec: number[]; both: number[] }> {
  const enc: number[] = [];
  const dec: number[] = [];
  const both: number[] = [];
  for (const body of texts) {
    const content = signcrypt('receiver@ox.example', Date.now(), body).toString();
    const t0 = performance.now();
    const e = await sender.run(['--recipient', receiver.fingerprint, '--recipient', sender.fingerprint, '--encrypt', '--sign', '--local-user', sender.fingerprint], content);
    const b64 = e.stdout.toString('base64');
    const t1 = performance.now();
    const d = await receiver.run(['--decrypt'], Buffer.from(b64, 'base64'));
    const got = parseXml(d.stdout.toString('utf8'));
    const t2 = performance.now();
    if (e.code !== 0 || !d.status.some((l) => l.startsWith('GOODSIG ')) || got.getChild('payload')?.getChildText('body') !== body || got.getNS() !== NS_OX) {
      throw new Error('gpg round trip failed');
    }
    enc.push(t1 - t0);
    dec.push(t2 - t1);
    both.push(t2 - t0);
  }
  return { enc, dec, both };
}

/** Prints the figures; true when the engine's round trip is at least 5x faster than gpg's (medians). */
export async function runOxBench(opts: { n?: number } = {}): Promise<boolean> {
  const n = opts.n ?? 200;
  const texts = bodies(n);
  console.log(`\nOX (XEP-0373/0374), ${n} short bodies in <signcrypt>, curve25519 keys, sign+encrypt then decrypt+verify; ms per message`);
  console.log(`  ${''.padEnd(44)} ${'median'.padStart(8)} ${'p99'.padStart(8)} ${'mean'.padStart(8)}`);
  const eng = await engineRoundTrips(texts);
  console.log(row('engine encrypt (signcrypt)', stats(eng.enc)));
  console.log(row('engine decrypt (verify, to/time, replay)', stats(eng.dec)));
  console.log(row('engine round trip', stats(eng.both)));
  if (!gpgAvailable()) {
    console.log('  gpg not found: GnuPG reference skipped (apt-get install gnupg)');
    return false;
  }
  const [sender, receiver] = await Promise.all([GpgUser.create('xmpp:sender@ox.example'), GpgUser.create('xmpp:receiver@ox.example')]);
  try {
    await sender.importKey(await receiver.exportPublic());
    await receiver.importKey(await sender.exportPublic());
    await gpgRoundTrips(sender, receiver, texts.slice(0, 5)); // start the agents
    const g = await gpgRoundTrips(sender, receiver, texts);
    console.log(row('gpg per message: encrypt (process each)', stats(g.enc)));
    console.log(row('gpg per message: decrypt (process each)', stats(g.dec)));
    console.log(row('gpg per message: round trip', stats(g.both)));
    const ratio = stats(g.both).median / stats(eng.both).median;
    const ok = ratio >= 5;
    console.log(`  engine round trip is ${ratio.toFixed(1)}x faster than gpg per message (medians; target >= 5x: ${ok ? 'met' : 'MISSED'})`);
    return ok;
  } finally {
    sender.destroy();
    receiver.destroy();
  }
}
