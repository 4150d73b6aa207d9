// XEP-0027 benchmark: the engine's sign+encrypt and decrypt+verify per message (curve25519 keys)
// against GnuPG 2.2 doing the same work on the same bodies, run in the same process run:
//   - gpg per message: one process per encrypt and per decrypt, as a legacy client or a naive
//     gateway driving the gpg binary would (the realistic reference);
//   - gpg batch: one process for all encryptions and one for all decryptions (--multifile), which
//     shows gpg's crypto without process start-up. gpg 2.2 refuses --sign --encrypt with
//     --multifile, so the batch rows are unsigned and not the same work.
// Every round trip is checked (same bytes out, signature good), so the figures come from working paths.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { Keystore } from '../keystore/keystore.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { TrustStore } from '../keystore/trust-store.js';
import { ContactStore } from '../keystore/contact-store.js';
import { Metrics } from '../http/metrics.js';
import { xml } from '../component/xml.js';
import type { EnginePorts } from '../bridges/engine.js';
import { createPgpEngine } from '../bridges/pgp/engine.js';
import { GpgUser, gpgAvailable } from '../test/harness/gpg.js';

const A = 'alerts@gw.example.org';
const B = 'bob\\40example.org@gw.example.org';

export interface Stats {
  n: number;
  median: number;
  p99: number;
  mean: number;
}

export function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
  return { n: s.length, median: q(0.5), p99: q(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

export const fmt = (x: number) => x.toFixed(2).padStart(8);
export const row = (name: string, s: Stats) => `  ${name.padEnd(44)} ${fmt(s.median)} ${fmt(s.p99)} ${fmt(s.mean)}`;

function bodies(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `alert #${i}: disk ${50 + (i % 50)}% full on db-${i % 7} — Grüße`);
}

async function engineRoundTrips(texts: string[]): Promise<{ enc: number[]; dec: number[]; both: number[] }> {
  const ks = Keystore.open(':memory:', 'bench-passphrase', { kdf: { N: 1024, r: 8, p: 1 } });
  try {
    const ports: EnginePorts = {
      store: createProtocolStore(ks, 'pgp'),
      trust: new TrustStore(ks, 'btbv'),
      contacts: new ContactStore(ks),
      keystore: ks,
      pubsub: { publish: () => undefined, retract: () => undefined, localItems: () => [], fetch: async () => null },
      metrics: new Metrics({ processMetrics: false }),
      log: pino({ level: 'silent' }),
      now: () => Date.now(),
      resource: 'gw',
    };
    const engine = createPgpEngine(ports, { keyType: 'curve25519', allowUnverifiedKeys: false, replayWindowDays: 30 });
    // Two hosted JIDs that know each other as contacts: A signs and encrypts, B decrypts and verifies.
    await engine.registerContactKey(A, await engine.publicKeyArmored(A), { viaAdmin: true });
    await engine.registerContactKey(B, await engine.publicKeyArmored(B), { viaAdmin: true });
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
    const t0 = performance.now();
    const stripped = await sender.encrypt(body, receiver.fingerprint, { sign: true });
    const t1 = performance.now();
    const got = await receiver.decrypt(stripped);
    const t2 = performance.now();
    if (got.text !== body || got.signature !== 'good') throw new Error('gpg round trip failed');
    enc.push(t1 - t0);
    dec.push(t2 - t1);
    both.push(t2 - t0);
  }
  return { enc, dec, both };
}

/** All messages in one gpg process per direction; returns ms per message. */
async function gpgBatch(sender: GpgUser, receiver: GpgUser, texts: string[]): Promise<{ enc: number; dec: number }> {
  const dir = join(sender.home, 'batch');
  mkdirSync(dir);
  const files = texts.map((t, i) => {
    const f = join(dir, `m${i}.txt`);
    writeFileSync(f, t);
    return f;
  });
  const t0 = performance.now();
  const e = await sender.run(['--armor', '--recipient', receiver.fingerprint, '--encrypt-files', ...files]);
  const t1 = performance.now();
  if (e.code !== 0) throw new Error(`gpg --encrypt-files failed: ${e.stderr.slice(0, 300)}`);
  // decrypt-files writes each output next to its input, without the .asc suffix: decrypt into a copy
  const outDir = join(receiver.home, 'batch');
  mkdirSync(outDir);
  const ascs = files.map((f, i) => {
    const to = join(outDir, `m${i}.txt.asc`);
    writeFileSync(to, readFileSync(`${f}.asc`));
    return to;
  });
  const t2 = performance.now();
  const d = await receiver.run(['--decrypt-files', ...ascs]);
  const t3 = performance.now();
  if (d.code !== 0) throw new Error(`gpg --decrypt-files failed: ${d.stderr.slice(0, 300)}`);
  texts.forEach((t, i) => {
    if (readFileSync(join(outDir, `m${i}.txt`), 'utf8') !== t) throw new Error('gpg batch round trip failed');
  });
  return { enc: (t1 - t0) / texts.length, dec: (t3 - t2) / texts.length };
}

export async function runPgpBench(opts: { n?: number } = {}): Promise<void> {
  const n = opts.n ?? 200;
  const texts = bodies(n);
  console.log(`\nXEP-0027 (legacy OpenPGP), ${n} short bodies, curve25519 keys, sign+encrypt then decrypt+verify; ms per message`);
  console.log(`  ${''.padEnd(44)} ${'median'.padStart(8)} ${'p99'.padStart(8)} ${'mean'.padStart(8)}`);
  const eng = await engineRoundTrips(texts);
  console.log(row('engine encrypt (sign+encrypt)', stats(eng.enc)));
  console.log(row('engine decrypt (incl. verify, replay check)', stats(eng.dec)));
  console.log(row('engine round trip', stats(eng.both)));
  if (!gpgAvailable()) {
    console.log('  gpg not found: GnuPG reference skipped (apt-get install gnupg)');
    return;
  }
  const [sender, receiver] = await Promise.all([GpgUser.create('xmpp:sender@legacy.example'), GpgUser.create('xmpp:receiver@legacy.example')]);
  try {
    await sender.importKey(await receiver.exportPublic());
    await receiver.importKey(await sender.exportPublic());
    await gpgRoundTrips(sender, receiver, texts.slice(0, 5)); // start the agents
    const g = await gpgRoundTrips(sender, receiver, texts);
    console.log(row('gpg per message: encrypt (process each)', stats(g.enc)));
    console.log(row('gpg per message: decrypt (process each)', stats(g.dec)));
    console.log(row('gpg per message: round trip', stats(g.both)));
    const b = await gpgBatch(sender, receiver, texts);
    console.log(`  ${'gpg batch, unsigned: encrypt (one process)'.padEnd(44)} ${''.padStart(8)} ${''.padStart(8)} ${fmt(b.enc)}`);
    console.log(`  ${'gpg batch, unsigned: decrypt (one process)'.padEnd(44)} ${''.padStart(8)} ${''.padStart(8)} ${fmt(b.dec)}`);
    const ratio = stats(g.both).median / stats(eng.both).median;
    console.log(`  engine round trip is ${ratio.toFixed(1)}x faster than gpg per message (medians)`);
    console.log(`  engine round trip vs gpg batch (unsigned, means): ${(stats(eng.both).mean / (b.enc + b.dec)).toFixed(2)}x the time`);
  } finally {
    sender.destroy();
    receiver.destroy();
  }
}
