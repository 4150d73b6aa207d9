// One keystore under test on either backend, with what the store tests need: reopen (is it durable?)
// and the raw bytes at rest (is anything readable?).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore } from '../../keystore/keystore.js';
import { PgBackend, WriteThrough } from '../../keystore/pg/backend.js';
import { Lease } from '../../keystore/pg/lease.js';

export const TEST_KDF = { N: 1024, r: 8, p: 1 };

export interface TestKeystore {
  kind: 'sqlite' | 'postgresql';
  ks: Keystore;
  /** Makes everything durable (the commit barrier on PostgreSQL). */
  commit(): Promise<void>;
  /** Closes and opens again from what is at rest. */
  reopen(): Promise<Keystore>;
  /** Every byte at rest. */
  raw(): Promise<Buffer>;
  close(): Promise<void>;
}

export function sqliteKeystore(passphrase: string): TestKeystore {
  const dir = mkdtempSync(join(tmpdir(), 'gw-ks-'));
  const path = join(dir, 'gw.db');
  const t: TestKeystore = {
    kind: 'sqlite',
    ks: Keystore.open(path, passphrase, { kdf: TEST_KDF }),
    commit: async () => undefined,
    reopen: async () => {
      t.ks.close();
      t.ks = Keystore.open(path, passphrase, { kdf: TEST_KDF });
      return t.ks;
    },
    raw: async () => readFileSync(path),
    close: async () => {
      t.ks.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}

/** A PostgreSQL keystore held by one lease holder, as the active instance holds it. */
export async function pgKeystore(url: string, passphrase: string): Promise<TestKeystore & { backend: PgBackend; wt: WriteThrough; lease: Lease }> {
  const backend = await PgBackend.open(url, passphrase, { kdf: TEST_KDF });
  const lease = new Lease(backend.pool, `test-${process.pid}`, 30_000);
  if (!(await lease.tryAcquire())) throw new Error('lease not free');
  const load = async () => {
    const wc = await backend.loadWorkingCopy();
    return new WriteThrough(backend, wc.db, { holder: lease.holder, epoch: lease.epoch! }, { shipEverything: wc.migrated });
  };
  const wt = await load();
  const t = {
    kind: 'postgresql' as const,
    backend,
    lease,
    wt,
    ks: wt.keystore,
    commit: () => t.wt.barrier(),
    reopen: async () => {
      await t.wt.barrier();
      t.ks.close();
      await t.wt.drain();
      t.wt = await load();
      t.ks = t.wt.keystore;
      return t.ks;
    },
    raw: async () => {
      const r = await backend.pool.query<{ b: Buffer }>(
        `SELECT convert_to(tbl || pk, 'UTF8') || data AS b FROM gw_rows UNION ALL SELECT convert_to(key, 'UTF8') || value FROM gw_meta
         UNION ALL SELECT convert_to(id || coalesce(idem, ''), 'UTF8') || data FROM gw_accepted`,
      );
      return Buffer.concat(r.rows.map((x) => x.b));
    },
    close: async () => {
      if (t.ks.isOpen) {
        await t.wt.barrier().catch(() => undefined);
        t.ks.close();
        await t.wt.drain().catch(() => undefined);
      }
      await backend.close();
    },
  };
  return t;
}
