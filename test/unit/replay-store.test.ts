import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore } from '../../keystore/keystore.js';
import { PRUNE_SLICES, ReplayStore } from '../../keystore/replay-store.js';
import { ReplayGuard } from '../../bridges/pgp/replay-guard.js';

const KDF = { kdf: { N: 1024, r: 8, p: 1 } };
const digest = (i: number): Buffer => createHash('sha256').update(`message ${i}`).digest();

test('replay digests: every digest added through any store on the keystore is found, short ones too; other protocols are apart', () => {
  const ks = Keystore.open(':memory:', 'p', KDF);
  try {
    const a = new ReplayStore(ks);
    assert.equal(a.has('omemo', digest(0)), false); // builds the (empty) filter
    const b = new ReplayStore(ks);
    for (let i = 0; i < 500; i++) assert.equal(b.add('omemo', digest(i), 1000), true);
    assert.equal(b.add('omemo', digest(7), 1000), false);
    assert.ok(a.add('omemo', Buffer.from('00ff10', 'hex'), 1000));
    for (let i = 0; i < 500; i++) assert.equal(a.has('omemo', digest(i)), true, `digest ${i}`);
    assert.equal(b.has('omemo', Buffer.from('00ff10', 'hex')), true);
    let found = 0;
    for (let i = 500; i < 5500; i++) if (a.has('omemo', digest(i))) found++;
    assert.equal(found, 0);
    assert.equal(a.has('pgp', digest(1)), false);
  } finally {
    ks.close();
  }
});

test('replay digests: rows already in the table when the keystore is opened again are found', () => {
  const dir = mkdtempSync(join(tmpdir(), 'replay-'));
  try {
    const ks = Keystore.open(join(dir, 'ks.db'), 'p', KDF);
    for (let i = 0; i < 300; i++) new ReplayStore(ks).add('omemo', digest(i), 1000);
    ks.close();
    const again = Keystore.open(join(dir, 'ks.db'), 'p', KDF);
    try {
      const s = new ReplayStore(again);
      for (let i = 0; i < 300; i++) assert.equal(s.has('omemo', digest(i)), true, `digest ${i}`);
      assert.equal(s.has('omemo', digest(300)), false);
    } finally {
      again.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('replay digests: pruning reaches every digest range, slice by slice or all at once, and keeps the recent ones', () => {
  const ks = Keystore.open(':memory:', 'p', KDF);
  try {
    const s = new ReplayStore(ks);
    // Digests starting with every byte value, old and new.
    for (let b = 0; b < 256; b++) {
      s.add('omemo', Buffer.concat([Buffer.of(b), digest(b).subarray(1)]), 100);
      s.add('omemo', Buffer.concat([Buffer.of(b), digest(1000 + b).subarray(1)]), 5000);
    }
    s.add('omemo', Buffer.alloc(0), 100);
    assert.equal(s.count('omemo'), 513);
    let pruned = 0;
    for (let i = 0; i < PRUNE_SLICES; i++) pruned += s.prune('omemo', 1000, i);
    assert.equal(pruned, 256 + 1);
    assert.equal(s.count('omemo'), 256);
    for (let b = 0; b < 256; b++) assert.ok(s.has('omemo', Buffer.concat([Buffer.of(b), digest(1000 + b).subarray(1)])));
    assert.equal(s.prune('omemo', 6000), 256);
    assert.equal(s.count('omemo'), 0);
  } finally {
    ks.close();
  }
});

test('replay guard: digests committed before a restart are refused after it; the periodic prune goes slice by slice', () => {
  const ks = Keystore.open(':memory:', 'p', KDF);
  try {
    let now = 10 * 86_400_000;
    const g = new ReplayGuard(new ReplayStore(ks), 'omemo', 1, () => now);
    assert.ok(g.claim(digest(1)));
    g.commit(digest(1));
    assert.equal(g.claim(digest(1)), false);
    const after = new ReplayGuard(new ReplayStore(ks), 'omemo', 1, () => now);
    assert.equal(after.claim(digest(1)), false);
    assert.ok(after.claim(digest(2)));
    after.release(digest(2));
    // Two days later, a commit every slice period: within an hour every slice was pruned once.
    now += 2 * 86_400_000;
    const store = new ReplayStore(ks);
    for (let b = 0; b < 256; b += 8) store.add('omemo', Buffer.concat([Buffer.of(b), digest(b).subarray(1)]), now - 2 * 86_400_000);
    const before = store.count('omemo');
    for (let i = 0; i <= PRUNE_SLICES; i++) {
      now += 3_600_000 / PRUNE_SLICES + 1;
      assert.ok(after.claim(digest(100 + i)));
      after.commit(digest(100 + i));
    }
    assert.equal(store.count('omemo'), PRUNE_SLICES + 1, `all ${before} old digests pruned, the new ones kept`);
  } finally {
    ks.close();
  }
});
