// The PostgreSQL keystore backend (keystore.url), for more than one instance.
//
// Design. The engines and the stores beside ../keystore.ts are synchronous on better-sqlite3 and stay
// exactly as they are. With keystore.url, the active instance runs them on a *working copy*: an
// in-memory SQLite database with the same migrations, loaded from PostgreSQL when it takes the lease.
// Temporary triggers on every table record the primary key of each changed row (in memory); a
// write-through (WriteThrough below) reads those rows back as they are now (their secret fields
// already sealed by the stores) and ships them to PostgreSQL in one transaction per batch (group
// commit); a batch is sent while the one before it is still in flight, and commits only after that
// one has (gw_ship_seq, schema.ts version 5), so PostgreSQL always holds the working copy as it was
// when one batch was taken. The commit barrier: before a stanza leaves, before a webhook is posted and before an HTTP
// answer is written, the gateway awaits barrier(), which resolves once every change made so far is
// committed in PostgreSQL. So nothing the outside world sees can depend on state a crash would lose:
// a ratchet step is durable before the message encrypted with it is sent, an outbox row before its 202.
//
// In PostgreSQL every SQLite row is one gw_rows row: (table, keyed digest of the primary key,
// the row image sealed with the keystore key, bound to its table and digest). So nothing in the
// database is readable without the passphrase (not even the JIDs, which SQLite keeps in the clear),
// and a migration of the SQLite schema needs no PostgreSQL counterpart: the working copy is migrated
// to the version the images were written at, loaded, then migrated on, and everything is shipped again.
//
// Fencing: every batch is one call of gw_ship() (schema.ts: one round trip, one transaction), which
// reads the lease row FOR SHARE and writes only while this instance still holds it under the same
// epoch and the lease has not expired by the database's clock. A taker (lease.ts) updates that row,
// so it waits for a batch in flight and every batch after it is refused:
// a paused or partitioned former leader can write nothing, and since every send waits on a barrier
// (and on the lease's local validity), it sends nothing either.
//
// Standbys hold no working copy: POST /v1/messages on a standby writes the sealed request into
// gw_accepted; the active instance polls it, moves each one into its outbox under the id the standby
// answered with, and deletes it from gw_accepted in the same transaction as the new outbox row.
import v8 from 'node:v8';
import Database from 'better-sqlite3';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { GatewayError } from '../../errors.js';
import { redactPassword as redactUrl } from '../../config.js';
import { Keystore, migrate, type Db } from '../keystore.js';
import { MIGRATIONS } from '../migrations.js';
import { DEFAULT_KDF, deriveKey, Sealer, SealError, type KdfParams } from '../seal.js';
import { PG_MIGRATIONS } from './schema.js';

const CHECK_PLAINTEXT = 'xmpp-e2ee-gateway keystore check v1';

export class FencedError extends Error {
  override name = 'FencedError';
}


export interface PgOpenOptions {
  kdf?: KdfParams;
  /** Bounds every query (a partitioned database must not hang a renewal or a barrier forever). */
  queryTimeoutMs?: number;
  /** Default 6: two write-through batches in flight, the LISTEN connection, lease renewals, imports. */
  poolSize?: number;
}

interface TableInfo {
  name: string;
  cols: string[];
  pk: Array<{ name: string; blob: boolean }>;
  /** The primary key of a row as json_array(...) text, from SQL expressions over `p` (NEW/OLD/t). */
  pkExpr(p: string): string;
  select: Database.Statement;
}

const q = (id: string) => `"${id.replace(/"/g, '""')}"`;

function tableInfos(db: Db): Map<string, TableInfo> {
  const names = db.prepare<[], { name: string }>("SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all();
  const out = new Map<string, TableInfo>();
  for (const { name } of names) {
    const info = db.pragma(`main.table_info(${q(name)})`) as Array<{ name: string; type: string; pk: number }>;
    const pkCols = info.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk);
    const pk = pkCols.length
      ? pkCols.map((c) => ({ name: c.name, blob: /BLOB/i.test(c.type) }))
      : [{ name: 'rowid', blob: false }];
    const cols = info.map((c) => c.name);
    const pkExpr = (p: string) => `json_array(${pk.map((c) => (c.blob ? `hex(${p}.${q(c.name)})` : `${p}.${q(c.name)}`)).join(', ')})`;
    const where = pk.map((c) => (c.blob ? `${q(c.name)} = unhex(?)` : `${q(c.name)} = ?`)).join(' AND ');
    const extra = pkCols.length ? '' : 'rowid AS rowid, ';
    out.set(name, { name, cols, pk, pkExpr, select: db.prepare(`SELECT ${extra}* FROM main.${q(name)} WHERE ${where}`) });
  }
  return out;
}

/** Row ids kept by the write-through (about 150 bytes each); forgotten all at once when full. */
const ROW_ID_CACHE = 20000;

export interface AcceptedMessage {
  id: string;
  bot: string;
  to: string;
  body: string;
  encryption: string | null;
  idempotencyKey: string | null;
  ttlMs: number;
  createdAt: number;
}

export class PgBackend {
  readonly pool: pg.Pool;
  readonly sealer: Sealer;
  readonly where: string;
  readonly queryTimeoutMs: number;

  private constructor(pool: pg.Pool, sealer: Sealer, where: string, queryTimeoutMs: number) {
    this.pool = pool;
    this.sealer = sealer;
    this.where = where;
    this.queryTimeoutMs = queryTimeoutMs;
  }

  /** Connects, migrates the PostgreSQL schema and checks the passphrase (creating the check on a new database). */
  static async open(url: string, passphrase: string, opts: PgOpenOptions = {}): Promise<PgBackend> {
    const where = redactUrl(url);
    const queryTimeoutMs = opts.queryTimeoutMs ?? 5000;
    const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 6, connectionTimeoutMillis: queryTimeoutMs, query_timeout: queryTimeoutMs });
    // An idle client's error (the server went away) must not be an unhandled 'error' event.
    pool.on('error', () => undefined);
    try {
      await migratePg(pool);
      const sealer = await unlockPg(pool, passphrase, opts.kdf ?? DEFAULT_KDF);
      return new PgBackend(pool, sealer, where, queryTimeoutMs);
    } catch (e) {
      await pool.end().catch(() => undefined);
      if (e instanceof GatewayError) throw e;
      throw new GatewayError('keystore_unavailable', `keystore.url: cannot use ${where} (${(e as Error).message})`, { cause: e });
    }
  }

  /**
   * The copy command's target: an empty PostgreSQL keystore (no rows, no live lease) takes the
   * source's passphrase check (salt, KDF parameters, check value), so the same passphrase opens it
   * and every sealed field copied over still opens.
   */
  static async openAsCopyOf(url: string, passphrase: string, source: Map<string, Buffer>): Promise<PgBackend> {
    const where = redactUrl(url);
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on('error', () => undefined);
    try {
      await migratePg(pool);
      const rows = await pool.query('SELECT 1 FROM gw_rows LIMIT 1');
      if (rows.rowCount) throw new GatewayError('keystore_unavailable', `${where} already holds a keystore; copy only into an empty one`);
      const lease = await pool.query('SELECT 1 FROM gw_lease WHERE holder IS NOT NULL AND expires_at > now()');
      if (lease.rowCount) throw new GatewayError('keystore_unavailable', `an instance is running on ${where}; stop every instance before copying`);
      await pool.query("DELETE FROM gw_meta WHERE key IN ('kdf_salt', 'kdf_params', 'check')");
      for (const k of ['kdf_salt', 'kdf_params', 'check']) await pool.query('INSERT INTO gw_meta (key, value) VALUES ($1, $2)', [k, source.get(k)!]);
    } finally {
      await pool.end().catch(() => undefined);
    }
    return PgBackend.open(url, passphrase);
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }

  /** Reaches the database (a standby's readiness). */
  async ping(): Promise<boolean> {
    try {
      await this.pool.query('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  rowId(tbl: string, pkJson: string): string {
    return this.sealer.digest(`${tbl}\0${pkJson}`);
  }

  sealRow(tbl: string, id: string, row: Record<string, unknown>): Buffer {
    return this.sealer.seal(v8.serialize(row), `row\0${tbl}\0${id}`);
  }

  openRow(tbl: string, id: string, data: Buffer): Record<string, unknown> {
    return v8.deserialize(this.sealer.open(data, `row\0${tbl}\0${id}`)) as Record<string, unknown>;
  }

  /** The SQLite schema version the row images were written at (0 for an empty keystore). */
  async imageVersion(): Promise<number> {
    const r = await this.pool.query<{ value: Buffer }>("SELECT value FROM gw_meta WHERE key = 'sqlite_version'");
    return r.rows[0] ? Number(r.rows[0].value.toString('utf8')) : 0;
  }

  /**
   * A working copy of the whole keystore: an in-memory SQLite database loaded from gw_rows and
   * migrated to the current schema. Call with the lease held (nobody else writes meanwhile).
   */
  async loadWorkingCopy(): Promise<{ db: Db; version: number; migrated: boolean }> {
    const version = await this.imageVersion();
    if (version > MIGRATIONS.length) {
      throw new GatewayError('keystore_unavailable', `keystore.url: ${this.where} was written by a newer gateway (schema ${version}, this one knows ${MIGRATIONS.length})`);
    }
    const { rows } = await this.pool.query<{ tbl: string; pk: string; data: Buffer }>('SELECT tbl, pk, data FROM gw_rows');
    const db = new Database(':memory:');
    try {
      db.pragma('foreign_keys = OFF');
      migrate(db, version);
      const inserts = new Map<string, Database.Statement>();
      db.transaction(() => {
        for (const r of rows) {
          const image = this.openRow(r.tbl, r.pk, r.data);
          const cols = Object.keys(image);
          const key = `${r.tbl}\0${cols.join('\0')}`;
          let ins = inserts.get(key);
          if (!ins) {
            ins = db.prepare(`INSERT INTO main.${q(r.tbl)} (${cols.map(q).join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`);
            inserts.set(key, ins);
          }
          ins.run(...cols.map((c) => image[c]));
        }
      })();
      migrate(db);
      const meta = await this.pool.query<{ key: string; value: Buffer }>("SELECT key, value FROM gw_meta WHERE key IN ('kdf_salt', 'kdf_params', 'check')");
      const putMeta = db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
      for (const m of meta.rows) putMeta.run(m.key, m.value);
      db.pragma('foreign_keys = ON');
      return { db, version, migrated: version !== MIGRATIONS.length };
    } catch (e) {
      db.close();
      if (e instanceof SealError) throw new GatewayError('keystore_unavailable', `keystore.url: a row in ${this.where} does not open under this passphrase`, { cause: e });
      throw e;
    }
  }

  /** A standby's POST /v1/messages: committed (sealed) before the 202. Replays an Idempotency-Key seen here. */
  async accept(m: AcceptedMessage): Promise<{ created: boolean; id: string; sameRequest: boolean; requestHash: string }> {
    const requestHash = this.sealer.digest(JSON.stringify([m.to, m.body, m.encryption]));
    const idem = m.idempotencyKey ? this.sealer.digest(`idem\0${m.bot}\0${m.idempotencyKey}`) : null;
    const data = this.sealer.seal(JSON.stringify({ ...m, requestHash }), `accepted\0${m.id}`);
    const r = await this.pool.query<{ id: string }>('INSERT INTO gw_accepted (id, idem, data) VALUES ($1, $2, $3) ON CONFLICT (idem) DO NOTHING RETURNING id', [m.id, idem, data]);
    if (r.rowCount) {
      await this.pool.query("NOTIFY gw_accepted");
      return { created: true, id: m.id, sameRequest: true, requestHash };
    }
    const prior = await this.pool.query<{ id: string; data: Buffer }>('SELECT id, data FROM gw_accepted WHERE idem = $1', [idem]);
    const p = prior.rows[0];
    if (!p) return this.accept(m); // moved into the outbox meanwhile: the key is free here again
    const old = JSON.parse(this.sealer.open(p.data, `accepted\0${p.id}`).toString('utf8')) as { requestHash: string };
    return { created: false, id: p.id, sameRequest: old.requestHash === requestHash, requestHash };
  }

  /** Messages standbys accepted, oldest first. */
  async acceptedBatch(limit: number): Promise<AcceptedMessage[]> {
    const r = await this.pool.query<{ id: string; data: Buffer }>('SELECT id, data FROM gw_accepted ORDER BY created_at, id LIMIT $1', [limit]);
    return r.rows.map((x) => JSON.parse(this.sealer.open(x.data, `accepted\0${x.id}`).toString('utf8')) as AcceptedMessage);
  }

  /**
   * A stanza read from the server by an instance without the lease, for the active one to handle
   * (not fenced: it is what the server already delivered to us, and only the active instance acts
   * on it). Sealed: it may carry a plaintext body.
   */
  async handOff(stanzaXml: string): Promise<void> {
    const id = `${Date.now().toString(36)}-${randomBytes(8).toString('hex')}`;
    await this.pool.query('INSERT INTO gw_handoff (id, data) VALUES ($1, $2)', [id, this.sealer.seal(stanzaXml, `handoff\0${id}`)]);
    await this.pool.query('NOTIFY gw_accepted');
  }

  /** Stanzas handed over, oldest first. */
  async handoffBatch(limit: number): Promise<Array<{ id: string; xml: string }>> {
    const r = await this.pool.query<{ id: string; data: Buffer }>('SELECT id, data FROM gw_handoff ORDER BY created_at, id LIMIT $1', [limit]);
    return r.rows.map((x) => ({ id: x.id, xml: this.sealer.open(x.data, `handoff\0${x.id}`).toString('utf8') }));
  }

  /** One SQLite row as the active instance last committed it (a standby's GET), or undefined. */
  async committedRow(tbl: string, pkJson: string): Promise<Record<string, unknown> | undefined> {
    const id = this.rowId(tbl, pkJson);
    const r = await this.pool.query<{ data: Buffer }>('SELECT data FROM gw_rows WHERE tbl = $1 AND pk = $2', [tbl, id]);
    return r.rows[0] ? this.openRow(tbl, id, r.rows[0].data) : undefined;
  }

  /** Whether a standby-accepted message is still waiting in gw_accepted. */
  async acceptedMessage(id: string): Promise<AcceptedMessage | undefined> {
    const r = await this.pool.query<{ data: Buffer }>('SELECT data FROM gw_accepted WHERE id = $1', [id]);
    return r.rows[0] ? (JSON.parse(this.sealer.open(r.rows[0].data, `accepted\0${id}`).toString('utf8')) as AcceptedMessage) : undefined;
  }

  /** Writes every row of `db` (a whole keystore) as row images, under `epoch` (the copy command). */
  async writeAll(db: Db, epoch: string): Promise<number> {
    const tables = tableInfos(db);
    const c = await this.pool.connect();
    let n = 0;
    try {
      await c.query('BEGIN');
      for (const t of tables.values()) {
        const extra = t.pk[0]!.name === 'rowid' && !t.cols.includes('rowid') ? 'rowid AS rowid, ' : '';
        const rows = db.prepare(`SELECT ${t.pkExpr(q(t.name))} AS "__pk", ${extra}* FROM main.${q(t.name)}`).all() as Array<Record<string, unknown>>;
        for (let i = 0; i < rows.length; i += 500) {
          const part = rows.slice(i, i + 500).map((r) => {
            const { __pk, ...image } = r;
            const id = this.rowId(t.name, __pk as string);
            return { id, data: this.sealRow(t.name, id, image) };
          });
          await upsertRows(c, part.map(() => t.name), part.map((p) => p.id), part.map((p) => p.data), epoch);
          n += part.length;
        }
      }
      await c.query("INSERT INTO gw_meta (key, value) VALUES ('sqlite_version', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [
        Buffer.from(String(db.pragma('user_version', { simple: true }))),
      ]);
      await c.query('COMMIT');
      return n;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      c.release();
    }
  }
}

async function upsertRows(c: pg.PoolClient, tbls: string[], pks: string[], data: Buffer[], epoch: string): Promise<void> {
  await c.query(
    `INSERT INTO gw_rows (tbl, pk, data, rev, epoch)
       SELECT u.tbl, u.pk, u.data, nextval('gw_rev'), $4 FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(tbl, pk, data)
     ON CONFLICT (tbl, pk) DO UPDATE SET data = excluded.data, rev = excluded.rev, epoch = excluded.epoch`,
    [tbls, pks, data, epoch],
  );
}

async function migratePg(pool: pg.Pool): Promise<void> {
  const c = await pool.connect();
  try {
    // One migrator at a time (two instances starting together).
    await c.query('SELECT pg_advisory_lock(727465)');
    try {
      const exists = await c.query("SELECT to_regclass('gw_meta') AS t");
      let current = 0;
      if (exists.rows[0].t) {
        const r = await c.query<{ value: Buffer }>("SELECT value FROM gw_meta WHERE key = 'pg_schema'");
        current = r.rows[0] ? Number(r.rows[0].value.toString('utf8')) : 0;
      }
      for (const m of PG_MIGRATIONS) {
        if (m.version <= current) continue;
        await c.query('BEGIN');
        try {
          await c.query(m.sql);
          await c.query("INSERT INTO gw_meta (key, value) VALUES ('pg_schema', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [Buffer.from(String(m.version))]);
          await c.query('COMMIT');
        } catch (e) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw e;
        }
      }
    } finally {
      await c.query('SELECT pg_advisory_unlock(727465)');
    }
  } finally {
    c.release();
  }
}

async function unlockPg(pool: pg.Pool, passphrase: string, kdf: KdfParams): Promise<Sealer> {
  const read = async () => {
    const r = await pool.query<{ key: string; value: Buffer }>("SELECT key, value FROM gw_meta WHERE key IN ('kdf_salt', 'kdf_params', 'check')");
    return new Map(r.rows.map((x) => [x.key, x.value]));
  };
  let meta = await read();
  if (!meta.has('kdf_salt')) {
    const salt = randomBytes(16);
    const sealer = new Sealer(deriveKey(passphrase, salt, kdf));
    // Two instances creating the keystore together: the first insert wins, the other reads it.
    await pool.query(
      `INSERT INTO gw_meta (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) WHERE NOT EXISTS (SELECT 1 FROM gw_meta WHERE key = 'kdf_salt')`,
      [['kdf_salt', 'kdf_params', 'check'], [salt, Buffer.from(JSON.stringify(kdf)), sealer.seal(CHECK_PLAINTEXT, 'meta:check')]],
    );
    meta = await read();
  }
  const params = JSON.parse(meta.get('kdf_params')!.toString('utf8')) as KdfParams;
  const sealer = new Sealer(deriveKey(passphrase, meta.get('kdf_salt')!, params));
  try {
    if (sealer.open(meta.get('check')!, 'meta:check').toString('utf8') !== CHECK_PLAINTEXT) throw new SealError('check mismatch');
  } catch (e) {
    if (e instanceof SealError) throw new GatewayError('keystore_passphrase_wrong', 'keystore.passphrase: does not open this keystore (wrong passphrase?)');
    throw e;
  }
  return sealer;
}

/**
 * A batch with an earlier, failed one folded in: a row in both keeps the newer image (or
 * deletion); a row only in the earlier one is shipped as it had it.
 */
function mergeOlder(newer: Batch, older: Batch): Batch {
  const seen = new Set([...newer.upserts.map((u) => `${u.tbl}\0${u.id}`), ...newer.deletes.map((d) => `${d.tbl}\0${d.id}`)]);
  return {
    keys: [...newer.keys, ...older.keys],
    upserts: [...newer.upserts, ...older.upserts.filter((u) => !seen.has(`${u.tbl}\0${u.id}`))],
    deletes: [...newer.deletes, ...older.deletes.filter((d) => !seen.has(`${d.tbl}\0${d.id}`))],
    accepted: [...older.accepted, ...newer.accepted],
    handoff: [...older.handoff, ...newer.handoff],
    version: newer.version ?? older.version,
  };
}

/** Whose writes are accepted: the lease holder under one epoch. */
export interface Fence {
  holder: string;
  epoch: string;
}

interface Batch {
  keys: Array<{ tbl: string; pk: string }>;
  upserts: Array<{ tbl: string; id: string; data: Buffer }>;
  deletes: Array<{ tbl: string; id: string }>;
  accepted: string[];
  handoff: string[];
  version: number | null;
}

/**
 * Ships the working copy's committed changes to PostgreSQL (see the top of this file). barrier()
 * resolves once every change made before the call is committed there; it rejects (FencedError) when
 * the lease has moved on, after which nothing is shipped any more.
 */
export class WriteThrough {
  readonly #b: PgBackend;
  readonly #db: Db;
  readonly #fence: Fence;
  readonly #tables: Map<string, TableInfo>;
  /**
   * The primary keys (json_array text) of the rows changed since the last batch was taken, per
   * table, recorded by temporary triggers through a function (no temporary table: its inserts, the
   * lookups that keep it distinct and its deletion cost several times the write itself). A change
   * rolled back stays recorded: its row is then shipped as it is (unchanged) or deleted where it
   * does not exist, which PostgreSQL already holds.
   */
  #dirty = new Map<string, Set<string>>();
  #dirtyCount = 0;
  /** Row ids (keyed digests) of rows shipped lately: a row shipped again needs no new digest. */
  #ids = new Map<string, string>();
  #accepted: string[] = [];
  #handoff: string[] = [];
  #version: number | null;
  /** Batches sent and not settled yet, oldest first (at most #depth). */
  #inFlight: Array<Promise<void>> = [];
  readonly #depth: number;
  /** Lease renewals under way: while one is, batches go one at a time (see whileRenewing). */
  #renewing = 0;
  #next: Promise<void> | null = null;
  /** The number of the last batch sent (its successor's p_prev); null: read it from gw_ship_seq first. */
  #tail: number | null = null;
  /** The highest batch number used in this epoch (numbers are never reused). */
  #counter = 0;
  #fenced: FencedError | null = null;
  #closedBatch: Batch | null = null;
  /** Batches that failed after the keystore closed: drain() ships them with the close hook's. */
  #failedAfterClose: Array<{ seq: number; batch: Batch }> = [];
  #timer: NodeJS.Timeout | null = null;
  #onFenced: (e: FencedError) => void = () => undefined;
  #onError: (e: unknown) => void = () => undefined;
  #onShipped: (seconds: number, rows: number) => void = () => undefined;
  readonly keystore: Keystore;

  /**
   * depth: how many batches may be in flight together (1: one at a time, each sent once the one
   * before it has committed; 2: the next one is sent while one is in flight). Either way they commit
   * in the order they were taken.
   */
  constructor(backend: PgBackend, db: Db, fence: Fence, opts: { shipEverything: boolean; depth?: number }) {
    this.#b = backend;
    this.#depth = Math.max(1, opts.depth ?? 2);
    this.#db = db;
    this.#fence = fence;
    this.#tables = tableInfos(db);
    db.function('_wt_mark', { varargs: true, deterministic: false }, (tbl: unknown, ...pks: unknown[]) => {
      for (const pk of pks) this.#mark(tbl as string, pk as string);
      return null;
    });
    for (const t of this.#tables.values()) {
      const n = t.name.replace(/[^A-Za-z0-9_]/g, '_');
      const lit = `'${t.name.replace(/'/g, "''")}'`;
      db.exec(`
        CREATE TEMP TRIGGER _wt_${n}_i AFTER INSERT ON main.${q(t.name)} BEGIN SELECT _wt_mark(${lit}, ${t.pkExpr('NEW')}); END;
        CREATE TEMP TRIGGER _wt_${n}_u AFTER UPDATE ON main.${q(t.name)} BEGIN SELECT _wt_mark(${lit}, ${t.pkExpr('OLD')}, ${t.pkExpr('NEW')}); END;
        CREATE TEMP TRIGGER _wt_${n}_d AFTER DELETE ON main.${q(t.name)} BEGIN SELECT _wt_mark(${lit}, ${t.pkExpr('OLD')}); END;
      `);
    }
    this.#version = opts.shipEverything ? (db.pragma('user_version', { simple: true }) as number) : null;
    if (opts.shipEverything) {
      // A migrated (or first) working copy: every row is shipped again, at the new schema version.
      for (const t of this.#tables.values()) {
        for (const pk of db.prepare(`SELECT ${t.pkExpr('t')} FROM main.${q(t.name)} AS t`).pluck().all() as string[]) this.#mark(t.name, pk);
      }
    }
    this.keystore = Keystore.adopt(db, backend.sealer);
    // Changes made while the keystore closes (the gateway's last writes) are taken then and
    // shipped by drain().
    this.keystore.beforeClose(() => {
      if (!this.#fenced) this.#closedBatch = this.#collect();
    });
  }

  get fenced(): boolean {
    return this.#fenced !== null;
  }

  onFenced(fn: (e: FencedError) => void): void {
    this.#onFenced = fn;
  }

  onError(fn: (e: unknown) => void): void {
    this.#onError = fn;
  }

  /** Called after each batch a barrier shipped: its time (taking the rows to the commit) and rows. */
  onShipped(fn: (seconds: number, rows: number) => void): void {
    this.#onShipped = fn;
  }

  /**
   * Ships what no barrier waits on (a message marked sent, a receipt recorded) within `everyMs`. A
   * batch already due takes it along (barrier() joins it), so under load the timer adds none.
   */
  start(everyMs = 50): void {
    this.#timer = setInterval(() => {
      if (this.#fenced || !this.#db.open) return;
      this.barrier().catch((e: unknown) => this.#onError(e));
    }, everyMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** A standby-accepted message moved into the outbox: removed from gw_accepted with the next batch. */
  dropAccepted(id: string): void {
    this.#accepted.push(id);
  }

  /**
   * A handed-over stanza (gw_handoff) has been handled: its row is deleted with the next batch, the
   * one that carries what handling it changed in the working copy.
   */
  dropHandoff(id: string): void {
    this.#handoff.push(id);
  }

  #mark(tbl: string, pk: string): void {
    let set = this.#dirty.get(tbl);
    if (!set) this.#dirty.set(tbl, (set = new Set()));
    const before = set.size;
    set.add(pk);
    this.#dirtyCount += set.size - before;
  }

  #rowId(tbl: string, pk: string): string {
    const key = `${tbl}\0${pk}`;
    let id = this.#ids.get(key);
    if (id === undefined) {
      if (this.#ids.size >= ROW_ID_CACHE) this.#ids.clear();
      id = this.#b.rowId(tbl, pk);
      this.#ids.set(key, id);
    }
    return id;
  }

  #pending(): boolean {
    return this.#accepted.length > 0 || this.#handoff.length > 0 || this.#version !== null || (this.#db.open && this.#dirtyCount > 0);
  }

  /**
   * Resolves once every change made before the call is committed in PostgreSQL. A batch is taken at
   * the end of the event-loop turn of the first call that needs it: every stanza, answer and outbox
   * mark of that turn rides on it. It is sent at once, even while the batch before it is in flight
   * (up to `depth` together, on separate connections), and it commits only after that one has
   * committed (gw_ship's p_prev/p_seq, schema.ts version 5): the same row in two batches in flight
   * ends as the later one wrote it, and a batch whose predecessor failed fails too. So a caller waits
   * for about one round trip, whether or not a batch is in flight; the promise of the newest batch
   * stands for all before it.
   */
  barrier(): Promise<void> {
    if (this.#fenced) return Promise.reject(this.#fenced);
    // Not taken yet: it will hold everything changed so far.
    if (this.#next) return this.#next;
    // Nothing changed since the newest batch in flight was taken: it is the one to wait for.
    if (!this.#pending()) return this.#inFlight[this.#inFlight.length - 1] ?? Promise.resolve();
    const next = this.#slot().then(() => {
      this.#next = null;
      if (this.#fenced) throw this.#fenced;
      // Closed meanwhile: its last changes were taken by the close hook and go with drain().
      if (!this.#db.open) throw new GatewayError('keystore_unavailable', 'The keystore closed before these changes were shipped.');
      return this.#flush();
    }, (e: unknown) => {
      // The last committed number could not be read: the next barrier tries again.
      this.#next = null;
      throw e;
    });
    this.#next = next;
    return next;
  }

  /**
   * Resolves at the end of this event-loop turn once a batch may be sent: fewer than `depth` in
   * flight, and the number of the last committed batch known (after a failure: every batch in
   * flight settled, then read from gw_ship_seq).
   */
  async #slot(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    for (;;) {
      if (this.#fenced) return;
      if (this.#tail === null) {
        if (this.#inFlight.length) {
          await Promise.allSettled(this.#inFlight);
          continue;
        }
        const r = await this.#b.pool.query<{ epoch: string; seq: string }>('SELECT epoch, seq FROM gw_ship_seq WHERE id = 1');
        const row = r.rows[0];
        const last = row && row.epoch === String(this.#fence.epoch) ? Number(row.seq) : 0;
        if (this.#tail !== null || this.#inFlight.length) continue;
        this.#tail = last;
        this.#counter = Math.max(this.#counter, last);
        return;
      }
      if (this.#inFlight.length < (this.#renewing > 0 ? 1 : this.#depth)) return;
      await Promise.race(this.#inFlight.map((p) => p.catch(() => undefined)));
      // Let the batch that just settled remove itself from #inFlight.
      await Promise.resolve();
    }
  }

  /**
   * Runs a lease renewal with batches going one at a time meanwhile. Each batch holds the lease row
   * FOR SHARE, and PostgreSQL lets a new FOR SHARE in while an UPDATE of the row waits: with two
   * batches in flight back to back there may be no moment without a share holder, so the renewal
   * could wait until the lease ran out and the instance stepped down. One at a time leaves a gap
   * (a round trip) between batches, where the renewal gets the row.
   */
  async whileRenewing<T>(renew: () => Promise<T>): Promise<T> {
    this.#renewing++;
    try {
      return await renew();
    } finally {
      this.#renewing--;
    }
  }

  /** After the keystore closed: ships its last changes. */
  async drain(): Promise<void> {
    await this.#next?.catch(() => undefined);
    await Promise.allSettled(this.#inFlight);
    // The newest image of each row wins: the close hook's batch, then the failed ones, newest first.
    let batch = this.#closedBatch;
    for (const f of this.#failedAfterClose.sort((a, b) => b.seq - a.seq)) batch = batch ? mergeOlder(batch, f.batch) : f.batch;
    this.#failedAfterClose = [];
    this.#closedBatch = null;
    if (batch && !this.#fenced && (batch.keys.length || batch.accepted.length || batch.handoff.length || batch.version !== null)) {
      if (this.#tail === null) {
        const r = await this.#b.pool.query<{ epoch: string; seq: string }>('SELECT epoch, seq FROM gw_ship_seq WHERE id = 1');
        const row = r.rows[0];
        const last = row && row.epoch === String(this.#fence.epoch) ? Number(row.seq) : 0;
        this.#tail = last;
        this.#counter = Math.max(this.#counter, last);
      }
      await this.#send(batch);
    }
  }

  #collect(): Batch {
    const keys: Array<{ tbl: string; pk: string }> = [];
    for (const [tbl, pks] of this.#dirty) for (const pk of pks) keys.push({ tbl, pk });
    this.#dirty = new Map();
    this.#dirtyCount = 0;
    const batch: Batch = { keys, upserts: [], deletes: [], accepted: this.#accepted, handoff: this.#handoff, version: this.#version };
    this.#accepted = [];
    this.#handoff = [];
    this.#version = null;
    for (const { tbl, pk } of keys) {
      const t = this.#tables.get(tbl);
      if (!t) continue;
      const id = this.#rowId(tbl, pk);
      const vals = JSON.parse(pk) as unknown[];
      const row = t.select.get(...vals) as Record<string, unknown> | undefined;
      if (row) batch.upserts.push({ tbl, id, data: this.#b.sealRow(tbl, id, row) });
      else batch.deletes.push({ tbl, id });
    }
    return batch;
  }

  #flush(): Promise<void> {
    const t0 = performance.now();
    const batch = this.#collect();
    return this.#send(batch).then(() => this.#onShipped((performance.now() - t0) / 1000, batch.upserts.length + batch.deletes.length));
  }

  /** Sends a batch after the last one sent (#tail known) and tracks it in #inFlight until it settles. */
  #send(batch: Batch): Promise<void> {
    const prev = this.#tail!;
    const seq = ++this.#counter;
    this.#tail = seq;
    const p = this.#ship(batch, prev, seq);
    this.#inFlight.push(p);
    const done = () => {
      const i = this.#inFlight.indexOf(p);
      if (i >= 0) this.#inFlight.splice(i, 1);
    };
    p.then(done, done);
    return p;
  }

  async #ship(batch: Batch, prev: number, seq: number): Promise<void> {
    try {
      const r = await this.#b.pool.query<{ ok: boolean }>('SELECT gw_ship($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) AS ok', [
        this.#fence.holder,
        this.#fence.epoch,
        batch.upserts.map((u) => u.tbl),
        batch.upserts.map((u) => u.id),
        batch.upserts.map((u) => u.data),
        batch.deletes.map((d) => d.tbl),
        batch.deletes.map((d) => d.id),
        batch.accepted,
        batch.handoff,
        batch.version === null ? null : Buffer.from(String(batch.version)),
        prev,
        seq,
      ]);
      if (!r.rows[0]?.ok) throw new FencedError(`the lease has moved on (this instance held epoch ${this.#fence.epoch})`);
    } catch (e) {
      if (e instanceof FencedError) {
        this.#fenced = e;
        this.stop();
        this.#onFenced(e);
        throw e;
      }
      // Not shipped: the rows are read again (as they are then) by the next batch, which first waits
      // for every batch in flight to settle (they fail too) and reads the last committed number.
      this.#tail = null;
      if (this.#db.open) for (const k of batch.keys) this.#mark(k.tbl, k.pk);
      else this.#failedAfterClose.push({ seq, batch });
      this.#accepted.unshift(...batch.accepted);
      this.#handoff.unshift(...batch.handoff);
      if (batch.version !== null && this.#version === null) this.#version = batch.version;
      throw e;
    }
  }
}
