// OMEMO 2 sessions per (hosted JID, contact, device), sealed in the 'omemo2' ProtocolStore
// (owner = hosted JID, kind 'session', key = contact NUL device id) with parsed copies in an LRU.
// Writes happen at once: the store is synchronous and a crash must not lose a ratchet step.
// Rows are session-record.ts's binary form; rows of the older JSON form are read and rewritten in the
// new form with their session's next change.
import { LRUCache } from 'lru-cache';
import type { ProtocolStore } from '../../keystore/protocol-store.js';
import type { Session } from './session.js';
import { decodeSession, encodeSession } from './session-record.js';

const K_SESSION = 'session';
const key = (contact: string, deviceId: number): string => `${contact}\0${deviceId}`;

export class Sessions {
  readonly #store: ProtocolStore;
  readonly #cache: LRUCache<string, Session>;

  constructor(store: ProtocolStore, cacheSize: number) {
    this.#store = store;
    this.#cache = new LRUCache({ max: cacheSize });
  }

  get(local: string, contact: string, deviceId: number): Session | undefined {
    const k = `${local}\0${key(contact, deviceId)}`;
    const hit = this.#cache.get(k);
    if (hit) return hit;
    const row = this.#store.get(local, K_SESSION, key(contact, deviceId));
    if (!row) return undefined;
    const s = decodeSession(row);
    this.#cache.set(k, s);
    return s;
  }

  put(local: string, contact: string, deviceId: number, s: Session): void {
    this.#store.put(local, K_SESSION, key(contact, deviceId), encodeSession(s));
    this.#cache.set(`${local}\0${key(contact, deviceId)}`, s);
  }

  /**
   * Keeps a session just built (outbound.ts buildOnce) in memory only: it is written by the put()
   * after its first encryption, before anything made with it leaves. Lost with the cache or a
   * restart, it is built again; nothing was sent on it.
   */
  stage(local: string, contact: string, deviceId: number, s: Session): void {
    this.#cache.set(`${local}\0${key(contact, deviceId)}`, s);
  }

  /** Drops the cached copy (the next get reads the store): after a failed transaction. */
  forget(local: string, contact: string, deviceId: number): void {
    this.#cache.delete(`${local}\0${key(contact, deviceId)}`);
  }

  delete(local: string, contact: string, deviceId: number): void {
    this.#store.delete(local, K_SESSION, key(contact, deviceId));
    this.#cache.delete(`${local}\0${key(contact, deviceId)}`);
  }

  /** Device ids of a contact we hold sessions with. */
  deviceIds(local: string, contact: string): number[] {
    return this.#store
      .list(local, K_SESSION)
      .map((r) => r.key.split('\0'))
      .filter(([c]) => c === contact)
      .map(([, d]) => Number(d));
  }
}
