// Parsed JSON rows of a ProtocolStore kept in memory, for the OMEMO keyrings (both versions): a
// session build read the identity (or state) row and the prekey rows it uses up to four times each,
// every read a SQLite query, an unsealing and a JSON parse.
// Correctness: only reads outside a transaction fill the cache (they see committed rows); every write
// or delete through this store drops the row's entry before it is made, so a rolled-back write leaves
// nothing stale, and a hit inside a transaction is a row it has not written. Cached rows are frozen
// (shared objects).
// The keyring is the only writer of its rows in the process, as for its other caches.
import { LRUCache } from 'lru-cache';
import type { ProtocolStore } from '../../keystore/protocol-store.js';

export function withRowCache(store: ProtocolStore, kinds: readonly string[], max: number): ProtocolStore {
  const cached = new Set(kinds);
  const rows = new LRUCache<string, object>({ max });
  const id = (owner: string, kind: string, key: string): string => `${owner}\0${kind}\0${key}`;
  let depth = 0;
  const drop = (owner: string, kind: string, key: string): void => {
    if (cached.has(kind)) rows.delete(id(owner, kind, key));
  };
  const wrapped: ProtocolStore = {
    get: (owner, kind, key) => store.get(owner, kind, key),
    put(owner, kind, key, value) {
      drop(owner, kind, key);
      store.put(owner, kind, key, value);
    },
    delete(owner, kind, key) {
      drop(owner, kind, key);
      store.delete(owner, kind, key);
    },
    list: (owner, kind) => store.list(owner, kind),
    deleteKind(owner, kind) {
      if (cached.has(kind)) rows.clear();
      store.deleteKind(owner, kind);
    },
    getJson<T>(owner: string, kind: string, key: string): T | undefined {
      if (!cached.has(kind)) return store.getJson<T>(owner, kind, key);
      const k = id(owner, kind, key);
      // A hit inside a transaction is still the committed row: a write in it dropped the entry.
      const hit = rows.get(k);
      if (hit) return hit as T;
      const v = store.getJson<T>(owner, kind, key);
      if (depth > 0) return v;
      if (v !== undefined && v !== null && typeof v === 'object') rows.set(k, Object.freeze(v));
      return v;
    },
    putJson(owner, kind, key, value) {
      drop(owner, kind, key);
      store.putJson(owner, kind, key, value);
    },
    transaction<T>(fn: () => T): T {
      depth++;
      try {
        return store.transaction(fn);
      } finally {
        depth--;
      }
    },
  };
  return wrapped;
}
