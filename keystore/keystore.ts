// The keystore: one SQLite file (better-sqlite3, synchronous, WAL), created 0600, migrated on open,
// its secret fields sealed under a passphrase-derived key. A salt and a sealed check value live in
// `meta`, so a wrong passphrase is refused at open instead of failing later on some row.
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { GatewayError } from '../errors.js';
import { Checkpointer, FALLBACK_PAGES, JOURNAL_LIMIT_BYTES } from './checkpointer.js';
import { MIGRATIONS } from './migrations.js';
import { DEFAULT_KDF, deriveKey, Sealer, SealError, type KdfParams } from './seal.js';

const CHECK_PLAINTEXT = 'xmpp-e2ee-gateway keystore check v1';

export type Db = Database.Database;

export interface OpenOptions {
  /** scrypt cost; tests lower it to keep many keystores cheap. */
  kdf?: KdfParams;
  /** WAL checkpoints on a worker thread once the WAL grows (default); false: SQLite's own, in the committing call. */
  checkpointWorker?: boolean;
}

const DRIVER = createRequire(import.meta.url).resolve('better-sqlite3');

export class Keystore {
  readonly db: Db;
  readonly sealer: Sealer;
  #open = true;
  readonly #beforeClose: Array<() => void> = [];
  /**
   * One better-sqlite3 transaction function, made once, that runs its argument: making one per call
   * (db.transaction(fn)) builds four wrappers and their properties each time, several us per message.
   */
  #tx: ((fn: () => unknown) => unknown) | undefined;
  /** WAL checkpoints on a worker thread (checkpointer.ts); file keystores only. */
  #checkpointer: Checkpointer | undefined;

  private constructor(db: Db, sealer: Sealer) {
    this.db = db;
    this.sealer = sealer;
  }

  /** A keystore over a database someone else prepared (the PostgreSQL backend's working copy). */
  static adopt(db: Db, sealer: Sealer): Keystore {
    return new Keystore(db, sealer);
  }

  /** Runs `fn` (synchronously) just before the database closes. */
  beforeClose(fn: () => void): void {
    this.#beforeClose.push(fn);
  }

  /** Opens (creating if needed) the keystore at `path`; `:memory:` gives a throwaway one. */
  static open(path: string, passphrase: string, opts: OpenOptions = {}): Keystore {
    if (path !== ':memory:') {
      const dir = dirname(path);
      if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
      // Create the file ourselves so it is never world-readable, even for an instant.
      if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
      chmodSync(path, 0o600);
    }
    let db: Db;
    try {
      db = new Database(path);
    } catch (e) {
      throw new GatewayError('keystore_unavailable', `keystore.path: cannot open ${path} (${(e as Error).message})`, { cause: e });
    }
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
      migrate(db);
      const sealer = unlock(db, passphrase, opts.kdf ?? DEFAULT_KDF);
      const ks = new Keystore(db, sealer);
      if (path !== ':memory:' && opts.checkpointWorker !== false) {
        ks.#checkpointer = new Checkpointer(path, DRIVER, () => {
          if (!db.open) return;
          db.pragma(`wal_autocheckpoint = ${FALLBACK_PAGES}`);
          db.pragma(`journal_size_limit = ${JOURNAL_LIMIT_BYTES}`);
        });
      }
      return ks;
    } catch (e) {
      db.close();
      if (e instanceof GatewayError) throw e;
      throw new GatewayError('keystore_unavailable', `keystore.path: ${path} is not a usable keystore (${(e as Error).message})`, { cause: e });
    }
  }

  /** Starts the checkpoint worker now instead of once the WAL has grown (benchmarks; false for :memory:). */
  startCheckpointWorker(): boolean {
    this.#checkpointer?.start();
    return this.#checkpointer?.running ?? false;
  }

  get isOpen(): boolean {
    return this.#open && this.db.open;
  }

  /** Runs `fn` in one transaction; a nested call is a savepoint inside the outer one (better-sqlite3). */
  transaction<T>(fn: () => T): T {
    this.#tx ??= this.db.transaction((f: () => unknown) => f());
    return this.#tx(fn) as T;
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    try {
      for (const fn of this.#beforeClose) fn();
      this.#checkpointer?.stop();
      if (this.db.memory) return;
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } finally {
      this.db.close();
    }
  }
}

/** Applies the migrations after the database's version, up to `upTo`. */
export function migrate(db: Db, upTo = Infinity): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  for (const m of MIGRATIONS) {
    if (m.version <= current || m.version > upTo) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
}

function unlock(db: Db, passphrase: string, kdf: KdfParams): Sealer {
  const get = db.prepare<[string], { value: Buffer }>('SELECT value FROM meta WHERE key = ?');
  const saltRow = get.get('kdf_salt');
  if (!saltRow) {
    const salt = randomBytes(16);
    const sealer = new Sealer(deriveKey(passphrase, salt, kdf));
    const put = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)');
    db.transaction(() => {
      put.run('kdf_salt', salt);
      put.run('kdf_params', Buffer.from(JSON.stringify(kdf)));
      put.run('check', sealer.seal(CHECK_PLAINTEXT, 'meta:check'));
    })();
    return sealer;
  }
  const params = JSON.parse(get.get('kdf_params')!.value.toString('utf8')) as KdfParams;
  const sealer = new Sealer(deriveKey(passphrase, saltRow.value, params));
  try {
    const check = sealer.open(get.get('check')!.value, 'meta:check');
    if (check.toString('utf8') !== CHECK_PLAINTEXT) throw new SealError('check mismatch');
  } catch (e) {
    if (e instanceof SealError) {
      throw new GatewayError('keystore_passphrase_wrong', 'keystore.passphrase: does not open this keystore (wrong passphrase?)');
    }
    throw e;
  }
  return sealer;
}
