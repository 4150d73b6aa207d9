import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Keystore } from '../../keystore/keystore.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { withRowCache } from '../../bridges/omemo/row-cache.js';

const KDF = { kdf: { N: 1024, r: 8, p: 1 } };

test('keyring row cache: reads come from memory, writes and deletes are seen at once, a rolled-back write leaves no stale row', () => {
  const ks = Keystore.open(':memory:', 'p', KDF);
  try {
    const raw = createProtocolStore(ks, 'omemo');
    const store = withRowCache(raw, ['prekey'], 100);
    store.putJson('a@gw', 'prekey', '1', { pub: 'x', n: 1 });
    assert.deepEqual(store.getJson('a@gw', 'prekey', '1'), { pub: 'x', n: 1 });
    // A second read is the cached (frozen) object.
    const r = store.getJson<{ n: number }>('a@gw', 'prekey', '1')!;
    assert.equal(r, store.getJson('a@gw', 'prekey', '1'));
    assert.throws(() => ((r as { n: number }).n = 2));
    store.putJson('a@gw', 'prekey', '1', { pub: 'x', n: 2 });
    assert.deepEqual(store.getJson('a@gw', 'prekey', '1'), { pub: 'x', n: 2 });
    // Written then read inside a transaction that fails: the store and the cache keep the old row.
    assert.throws(() =>
      store.transaction(() => {
        store.putJson('a@gw', 'prekey', '1', { pub: 'x', n: 3 });
        assert.deepEqual(store.getJson('a@gw', 'prekey', '1'), { pub: 'x', n: 3 });
        throw new Error('rollback');
      }),
    );
    assert.deepEqual(store.getJson('a@gw', 'prekey', '1'), { pub: 'x', n: 2 });
    assert.deepEqual(raw.getJson('a@gw', 'prekey', '1'), { pub: 'x', n: 2 });
    store.delete('a@gw', 'prekey', '1');
    assert.equal(store.getJson('a@gw', 'prekey', '1'), undefined);
    // Kinds not listed are not cached.
    store.putJson('a@gw', 'session', 's', { v: 1 });
    assert.notEqual(store.getJson('a@gw', 'session', 's'), store.getJson('a@gw', 'session', 's'));
  } finally {
    ks.close();
  }
});
