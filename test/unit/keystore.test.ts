import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore } from '../../keystore/keystore.js';
import { FALLBACK_PAGES, JOURNAL_LIMIT_BYTES } from '../../keystore/checkpointer.js';
import { Sealer } from '../../keystore/seal.js';
import { MIGRATIONS } from '../../keystore/migrations.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { TrustStore } from '../../keystore/trust-store.js';
import { GatewayError } from '../../errors.js';

const KDF = { kdf: { N: 1024, r: 8, p: 1 } };

test('sealed values open only with the same key and the same location (AAD)', () => {
  const s = new Sealer(Buffer.alloc(32, 7));
  const sealed = s.seal('secret body', 'kv:a');
  assert.equal(s.open(sealed, 'kv:a').toString(), 'secret body');
  assert.throws(() => s.open(sealed, 'kv:b'));
  assert.throws(() => new Sealer(Buffer.alloc(32, 8)).open(sealed, 'kv:a'));
  const tampered = Buffer.from(sealed);
  tampered[tampered.length - 1]! ^= 1;
  assert.throws(() => s.open(tampered, 'kv:a'));
});

test('the keystore file is created 0600, secrets are not readable in it, a wrong passphrase is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ks-'));
  try {
    const path = join(dir, 'sub', 'gw.db');
    const ks = Keystore.open(path, 'correct horse battery', KDF);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const store = createProtocolStore(ks, 'omemo');
    store.put('alerts@gw', 'identity', 'current', 'PRIVATE-KEY-MATERIAL-CANARY');
    assert.equal(store.get('alerts@gw', 'identity', 'current')!.toString(), 'PRIVATE-KEY-MATERIAL-CANARY');
    ks.close();
    const raw = readFileSync(path);
    assert.ok(!raw.includes(Buffer.from('PRIVATE-KEY-MATERIAL-CANARY')), 'plaintext found in the database file');
    assert.throws(
      () => Keystore.open(path, 'wrong passphrase!!', KDF),
      (e: unknown) => e instanceof GatewayError && e.code === 'keystore_passphrase_wrong' && /keystore.passphrase/.test(e.message),
    );
    const again = Keystore.open(path, 'correct horse battery', KDF);
    assert.equal(createProtocolStore(again, 'omemo').get('alerts@gw', 'identity', 'current')!.toString(), 'PRIVATE-KEY-MATERIAL-CANARY');
    assert.equal(again.db.pragma('user_version', { simple: true }), MIGRATIONS.length);
    again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a row copied to another key does not open (values are bound to their place)', () => {
  const ks = Keystore.open(':memory:', 'passphrase-for-tests', KDF);
  const store = createProtocolStore(ks, 'omemo');
  store.put('a@gw', 'session', 'bob.1', 'state-a');
  ks.db.prepare("INSERT INTO kv SELECT protocol, owner, kind, 'bob.2', value, updated_at FROM kv WHERE key = 'bob.1'").run();
  assert.throws(() => store.get('a@gw', 'session', 'bob.2'));
  ks.close();
});

test('trust policies: btbv trusts new keys until one is verified; tofu; manual; a changed key under a known device id is untrusted', () => {
  const ks = Keystore.open(':memory:', 'passphrase-for-tests', KDF);
  const btbv = new TrustStore(ks, 'btbv');
  assert.equal(btbv.observe('bob@x', 'omemo', '1', 'fp1'), 'trusted');
  assert.equal(btbv.observe('bob@x', 'omemo', '2', 'fp2'), 'trusted');
  assert.equal(btbv.observe('bob@x', 'omemo', '1', 'fp1'), 'trusted');
  assert.equal(btbv.observe('bob@x', 'omemo', '1', 'fp1-changed'), 'untrusted');
  assert.ok(btbv.set('bob@x', 'omemo', 'fp1', 'verified'));
  assert.equal(btbv.observe('bob@x', 'omemo', '3', 'fp3'), 'untrusted');
  assert.equal(btbv.observe('carol@x', 'omemo', '9', 'fpc'), 'trusted');
  btbv.syncActive('bob@x', 'omemo', ['1', '3']);
  assert.deepEqual(btbv.list('bob@x', 'omemo').filter((d) => !d.active).map((d) => d.deviceId), ['2']);

  const tofu = new TrustStore(ks, 'tofu');
  assert.equal(tofu.observe('dave@x', 'omemo', '1', 'fd1'), 'trusted');
  assert.equal(tofu.observe('dave@x', 'omemo', '2', 'fd2'), 'untrusted');
  const manual = new TrustStore(ks, 'manual');
  assert.equal(manual.observe('erin@x', 'pgp', 'k', 'fe'), 'untrusted');
  assert.equal(manual.set('erin@x', 'pgp', 'unknown-fp', 'trusted'), false);
  ks.close();
});

test('WAL checkpoints run on a worker: committed pages reach the database file without a checkpoint in the writer, and close stops the worker', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ks-'));
  try {
    const path = join(dir, 'gw.db');
    const ks = Keystore.open(path, 'pass', KDF);
    assert.equal(ks.startCheckpointWorker(), true);
    // The writer's own automatic checkpoint is only a fallback now, far above what is written here.
    assert.equal(ks.db.pragma('wal_autocheckpoint', { simple: true }), FALLBACK_PAGES);
    assert.ok(FALLBACK_PAGES * 4096 > 600 * 3000 * 2);
    const store = createProtocolStore(ks, 'omemo');
    const before = statSync(path).size;
    for (let i = 0; i < 600; i++) store.put('alerts@gw', 'session', `c${i}`, Buffer.alloc(3000, i & 0xff));
    const deadline = Date.now() + 10_000;
    while (statSync(path).size < before + 600 * 3000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(statSync(path).size >= before + 600 * 3000, 'the worker did not checkpoint the WAL into the database file');
    ks.close();
    // The worker's connection is closed with the keystore: the final TRUNCATE checkpoint emptied the WAL.
    assert.equal(statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0, 0);
    const again = Keystore.open(path, 'pass', KDF);
    assert.equal(createProtocolStore(again, 'omemo').get('alerts@gw', 'session', 'c599')![0], 599 & 0xff);
    again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('under writes without a pause the WAL file stays within the fallback threshold, and is cut back to journal_size_limit once it starts over', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ks-'));
  try {
    const path = join(dir, 'gw.db');
    const ks = Keystore.open(path, 'pass', KDF);
    assert.equal(ks.startCheckpointWorker(), true);
    assert.equal(ks.db.pragma('journal_size_limit', { simple: true }), JOURNAL_LIMIT_BYTES);
    const store = createProtocolStore(ks, 'omemo');
    const walSize = () => statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0;
    // Commits back to back with no turn of the event loop (the worker's rounds may or may not land
    // in between: either way the writer's own checkpoint bounds the file), until well past the
    // fallback threshold of pages written.
    let max = 0;
    let cutBack = false;
    let commits = 0;
    for (let written = 0; written < FALLBACK_PAGES * 4096 * 2.5; written += 6000, commits++) {
      store.put('alerts@gw', 'session', `c${commits % 500}`, Buffer.alloc(6000, commits & 0xff));
      const size = walSize();
      if (max > JOURNAL_LIMIT_BYTES && size <= JOURNAL_LIMIT_BYTES + 64 * 4120) cutBack = true;
      max = Math.max(max, size);
    }
    // Over the threshold by at most what was committed during one worker round (the writer's own
    // passive checkpoint gives way while the worker's runs): not by what was written in all.
    assert.ok(max < FALLBACK_PAGES * 4096 * 2, `WAL grew to ${max} bytes`);
    // The WAL started over, and the first commit after that cut the file back to the limit.
    assert.ok(cutBack, 'the WAL file was never cut back');
    ks.close();
    const again = Keystore.open(path, 'pass', KDF);
    assert.equal(createProtocolStore(again, 'omemo').get('alerts@gw', 'session', `c${(commits - 1) % 500}`)![0], (commits - 1) & 0xff);
    again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a keystore opened without the checkpoint worker keeps SQLite\'s own checkpoints', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ks-'));
  try {
    const ks = Keystore.open(join(dir, 'gw.db'), 'pass', { ...KDF, checkpointWorker: false });
    assert.equal(ks.startCheckpointWorker(), false);
    assert.equal(ks.db.pragma('wal_autocheckpoint', { simple: true }), 1000);
    ks.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
