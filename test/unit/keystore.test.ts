import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore } from '../../keystore/keystore.js';
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
