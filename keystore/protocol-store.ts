// A protocol engine's private state as sealed key-value rows, scoped to (protocol, owner, kind).
// Synchronous on purpose: better-sqlite3 answers in microseconds and engines stay free of awaits.
import type { Keystore } from './keystore.js';

export interface ProtocolStore {
  get(owner: string, kind: string, key: string): Buffer | undefined;
  put(owner: string, kind: string, key: string, value: Buffer | string): void;
  delete(owner: string, kind: string, key: string): void;
  list(owner: string, kind: string): Array<{ key: string; value: Buffer }>;
  deleteKind(owner: string, kind: string): void;
  getJson<T>(owner: string, kind: string, key: string): T | undefined;
  putJson(owner: string, kind: string, key: string, value: unknown): void;
  /** Runs `fn` in one SQLite transaction (nested calls join the outer one). */
  transaction<T>(fn: () => T): T;
}

export function createProtocolStore(ks: Keystore, protocol: string): ProtocolStore {
  const db = ks.db;
  const sel = db.prepare<[string, string, string, string], { value: Buffer }>(
    'SELECT value FROM kv WHERE protocol = ? AND owner = ? AND kind = ? AND key = ?',
  );
  const ins = db.prepare(
    'INSERT INTO kv (protocol, owner, kind, key, value, updated_at) VALUES (?, ?, ?, ?, ?, ?) ' +
      'ON CONFLICT (protocol, owner, kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at',
  );
  const del = db.prepare('DELETE FROM kv WHERE protocol = ? AND owner = ? AND kind = ? AND key = ?');
  const delKind = db.prepare('DELETE FROM kv WHERE protocol = ? AND owner = ? AND kind = ?');
  const all = db.prepare<[string, string, string], { key: string; value: Buffer }>(
    'SELECT key, value FROM kv WHERE protocol = ? AND owner = ? AND kind = ? ORDER BY key',
  );
  const aad = (owner: string, kind: string, key: string) => `kv\0${protocol}\0${owner}\0${kind}\0${key}`;

  const store: ProtocolStore = {
    get(owner, kind, key) {
      const row = sel.get(protocol, owner, kind, key);
      return row ? ks.sealer.open(row.value, aad(owner, kind, key)) : undefined;
    },
    put(owner, kind, key, value) {
      ins.run(protocol, owner, kind, key, ks.sealer.seal(value, aad(owner, kind, key)), Date.now());
    },
    delete(owner, kind, key) {
      del.run(protocol, owner, kind, key);
    },
    list(owner, kind) {
      return all.all(protocol, owner, kind).map((r) => ({ key: r.key, value: ks.sealer.open(r.value, aad(owner, kind, r.key)) }));
    },
    deleteKind(owner, kind) {
      delKind.run(protocol, owner, kind);
    },
    getJson<T>(owner: string, kind: string, key: string): T | undefined {
      const v = store.get(owner, kind, key);
      return v === undefined ? undefined : (JSON.parse(v.toString('utf8')) as T);
    },
    putJson(owner, kind, key, value) {
      store.put(owner, kind, key, JSON.stringify(value));
    },
    transaction(fn) {
      return ks.transaction(fn);
    },
  };
  return store;
}
