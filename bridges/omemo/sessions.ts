// Legacy OMEMO sessions of the hosted JIDs with their contacts' devices, on the gateway's own X3DH and
// Double Ratchet (legacy-protocol.ts over bridges/ratchet/), stored as sealed rows of the ProtocolStore.
//
// Records: one per (hosted JID, contact device), in legacy-record.ts's form. Rows the engine wrote
// while it ran on libsignal-protocol-typescript (its JSON or our binary form of its sessions) are
// converted when first read and written back in the new form with their next change.
// Speed: parsed records stay in an LRU; each operation's new state is encoded once and written in
// one sealed row. Writes of one engine operation (e.g. a message to three devices) are flushed
// together in one SQLite transaction before the engine returns ciphertext or plaintext, so nothing
// leaves that is not on disk.
// Safety: every operation is synchronous (no two interleave on an address); decryption computes a new record and keeps
// it only once the message authenticated, and any failure puts the cached record back to its last
// good encoded state, so a forged or corrupted message never changes state.
import { LRUCache } from 'lru-cache';
import type { ProtocolStore } from '../../keystore/protocol-store.js';
import type { DecryptFailure } from '../engine.js';
import type { Keyring, LocalIdentity } from './keyring.js';
import {
  decryptMessage,
  decryptPreKeyMessage,
  encryptMessage,
  initiateSession,
  LegacySessionError,
  openSession,
  promote,
  type LegacyRecord,
  type LegacySession,
} from './legacy-protocol.js';
import { decodeRecord, encodeRecord, isLegacyRecord } from './legacy-record.js';
import type { OpenedMessage } from '../ratchet/double-ratchet.js';
import type { PreKeyInfo } from './signal-message.js';
import type { Bundle } from './wire.js';

const K_SESSION = 'session';

interface Entry {
  record: LegacyRecord;
  /** The last state known good, encoded (persisted or about to be): what a failed operation rolls back to. */
  saved: Buffer;
}

export const addressOf = (contact: string, deviceId: number): string => `${contact}.${deviceId}`;

/** Maps a session-layer exception to the failure reason reported for the message. */
export function classifySessionError(e: unknown): DecryptFailure {
  if (e instanceof LegacySessionError) {
    switch (e.reason) {
      case 'duplicate':
      case 'bad-mac':
      case 'no-session':
      case 'unknown-prekey':
      case 'malformed':
        return e.reason;
      case 'bad-signature':
        return 'bad-mac';
      case 'no-sending-chain':
        return 'malformed';
    }
  }
  // OpenSSL refuses a low-order ratchet or base key from the message: a message no client writes.
  if ((e as { code?: unknown })?.code === 'ERR_CRYPTO_OPERATION_FAILED' || /X25519/.test(String((e as Error)?.message ?? ''))) return 'malformed';
  return 'internal';
}

export class Sessions {
  readonly #store: ProtocolStore;
  readonly #keyring: Keyring;
  readonly #cache: LRUCache<string, Entry>;
  readonly #dirty = new Set<string>();
  /** One-time prekeys consumed by PreKey messages decrypted since the last flush: retired with it. */
  #consumed: Array<{ local: string; id: number }> = [];
  /** Session records in the store (for the gauge): counted once, then kept up to date. */
  #count: number | undefined;
  /** Archive timestamps: strictly increasing, so sessions archived in one millisecond keep their order. */
  #lastStamp = 0;

  constructor(store: ProtocolStore, keyring: Keyring, max: number) {
    this.#store = store;
    this.#keyring = keyring;
    this.#cache = new LRUCache<string, Entry>({
      max,
      // An entry evicted before its operation's flush is written at once.
      dispose: (entry, key, reason) => {
        if (reason === 'evict' && this.#dirty.delete(key)) this.#write(key, entry.saved);
      },
    });
  }

  #stamp(): number {
    this.#lastStamp = Math.max(Date.now(), this.#lastStamp + 1);
    return this.#lastStamp;
  }

  // ---- cache ----

  /** The cached entry for an address, loaded (and converted from an older form) from the store on a miss. */
  #entry(local: string, address: string): Entry | undefined {
    const key = `${local}\0${address}`;
    let e = this.#cache.get(key);
    if (e) return e;
    const stored = this.#store.get(local, K_SESSION, address);
    if (!stored) return undefined;
    const record = decodeRecord(stored);
    // A converted record is written back with its next change; until then it rolls back to its new form.
    e = { record, saved: isLegacyRecord(stored) ? stored : encodeRecord(record) };
    this.#cache.set(key, e);
    return e;
  }

  /** The record of an address (for tests and diagnostics). */
  record(local: string, contact: string, deviceId: number): LegacyRecord | undefined {
    return this.#entry(local, addressOf(contact, deviceId))?.record;
  }

  /** Keeps `record` as the address's new state (written with the next flush). */
  #keep(local: string, address: string, record: LegacyRecord): void {
    const key = `${local}\0${address}`;
    const saved = encodeRecord(record);
    const e = this.#cache.get(key);
    if (!e && this.#count !== undefined && !this.#store.get(local, K_SESSION, address)) this.#count++;
    if (e) {
      e.record = record;
      e.saved = saved;
    } else this.#cache.set(key, { record, saved });
    this.#dirty.add(key);
  }

  /**
   * Writes every changed record, and retires the one-time prekeys consumed since the last flush
   * (keyring.consumePreKeyRows: used mark, replacement, counter), in one transaction; inside the
   * caller's transaction if there is one (decrypt.ts: with the replay digest, one commit). The
   * bundles of the hosted JIDs whose prekeys changed are republished once that commit is done.
   */
  flush(): void {
    if (this.#dirty.size === 0 && this.#consumed.length === 0) return;
    // One changed record and nothing else (a steady message): one row, which commits on its own.
    if (this.#dirty.size === 1 && this.#consumed.length === 0) {
      const key = this.#dirty.values().next().value as string;
      const e = this.#cache.peek(key);
      if (e) this.#write(key, e.saved);
      this.#dirty.clear();
      return;
    }
    const keys = [...this.#dirty];
    this.#dirty.clear();
    const consumed = this.#consumed;
    this.#consumed = [];
    const republish = new Set<string>();
    const writeAll = () => {
      for (const key of keys) {
        const e = this.#cache.peek(key);
        if (e) this.#write(key, e.saved);
      }
      for (const c of consumed) if (this.#keyring.consumePreKeyRows(c.local, c.id)) republish.add(c.local);
    };
    try {
      // One row commits on its own; several (a message to many devices, a consumed prekey) share one transaction.
      if (keys.length === 1 && consumed.length === 0) writeAll();
      else this.#store.transaction(writeAll);
    } catch (e) {
      for (const k of keys) this.#dirty.add(k);
      this.#consumed.unshift(...consumed);
      throw e;
    }
    // After the commit of an outer transaction too: a microtask runs once the synchronous caller returned.
    if (republish.size > 0) queueMicrotask(() => {
      for (const local of republish) this.#keyring.republishAfterConsume(local);
    });
  }

  #write(key: string, saved: Buffer): void {
    const i = key.indexOf('\0');
    this.#store.put(key.slice(0, i), K_SESSION, key.slice(i + 1), saved);
  }

  #rollback(key: string): void {
    const e = this.#cache.peek(key);
    if (e) e.record = decodeRecord(e.saved);
  }

  /**
   * Runs one operation on an address, rolled back on failure. Every operation is synchronous (the
   * prekey a PreKey message consumed is retired by flush()), so two operations on one address can
   * never interleave and none needs a lock; the result is a promise for the callers' sake.
   */
  #locked<T>(key: string, fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (e) {
      this.#rollback(key);
      return Promise.reject(e);
    }
  }

  // ---- queries ----

  openSession(local: string, contact: string, deviceId: number): LegacySession | undefined {
    return openSession(this.#entry(local, addressOf(contact, deviceId))?.record);
  }

  /** Whether any session (open or archived) with the device exists. */
  hasAnySession(local: string, contact: string, deviceId: number): boolean {
    const rec = this.#entry(local, addressOf(contact, deviceId))?.record;
    return rec !== undefined && rec.sessions.length > 0;
  }

  /** Whether a session (open or archived) was started by the contact with this PreKey message's base key. */
  hasBaseKey(local: string, contact: string, deviceId: number, baseKey: Uint8Array): boolean {
    const rec = this.#entry(local, addressOf(contact, deviceId))?.record;
    return rec !== undefined && rec.sessions.some((s) => !s.ours && s.baseKey.equals(baseKey));
  }

  /** Device ids of `contact` we hold a session record with (reads the store). */
  deviceIds(local: string, contact: string): number[] {
    const prefix = `${contact}.`;
    const ids = new Set<number>();
    for (const { key } of this.#store.list(local, K_SESSION)) {
      if (key.startsWith(prefix) && /^\d+$/.test(key.slice(prefix.length))) ids.add(Number(key.slice(prefix.length)));
    }
    for (const key of this.#cache.keys()) {
      if (key.startsWith(`${local}\0${prefix}`)) ids.add(Number(key.slice(local.length + 1 + prefix.length)));
    }
    return [...ids].filter((n) => Number.isInteger(n) && n > 0);
  }

  // ---- operations (each under the address lock, rolled back on failure) ----

  /** X3DH as initiator from a contact's bundle, using one of its prekeys (chosen by the caller). */
  build(id: LocalIdentity, contact: string, deviceId: number, bundle: Bundle, preKey: Bundle['preKeys'][number]): Promise<void> {
    const address = addressOf(contact, deviceId);
    return this.#locked(`${id.local}\0${address}`, () => {
      const s = initiateSession(id.own, { identityKey: bundle.identityKey, signedPreKey: bundle.signedPreKey, preKey });
      const prev = this.#entry(id.local, address)?.record;
      const record: LegacyRecord = { sessions: [...(prev?.sessions ?? []), s] };
      promote(record, s, this.#stamp());
      this.#keep(id.local, address, record);
    });
  }

  /** Encrypts for one device; `prekey` is true while the session is not yet confirmed by the contact. */
  encrypt(id: LocalIdentity, contact: string, deviceId: number, plaintext: Buffer): Promise<{ prekey: boolean; data: Buffer }> {
    const address = addressOf(contact, deviceId);
    return this.#locked(`${id.local}\0${address}`, () => {
      const e = this.#entry(id.local, address);
      if (!e) throw new LegacySessionError('no-session');
      const out = encryptMessage(e.record, id.own, plaintext);
      this.#keep(id.local, address, e.record);
      return out;
    });
  }

  decrypt(id: LocalIdentity, contact: string, deviceId: number, data: Buffer, prekey: boolean): Promise<Buffer> {
    try {
      return Promise.resolve(this.decryptNow(id, contact, deviceId, prekey ? { prekey: true, data } : { prekey: false, data }));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * decrypt() without the promise, for a message read already (decrypt.ts: a WhisperMessage opened
   * by openWhisper, a PreKey message by inspectPreKey, so it is not read again); throws on failure,
   * after rolling the record back.
   */
  decryptNow(id: LocalIdentity, contact: string, deviceId: number, m: { prekey: false; data: Buffer; opened?: OpenedMessage } | { prekey: true; data: Buffer; info?: PreKeyInfo }): Buffer {
    const address = addressOf(contact, deviceId);
    const key = `${id.local}\0${address}`;
    try {
      const current = this.#entry(id.local, address)?.record;
      if (!m.prekey) {
        if (!current) throw new LegacySessionError('no-session');
        const out = decryptMessage(current, id.own, m.data, this.#stamp(), m.opened);
        this.#keep(id.local, address, out.record);
        return out.plaintext;
      }
      const out = decryptPreKeyMessage(current, id.own, m.data, this.#keyring.preKeyLookups(id.local), this.#stamp(), m.info);
      this.#keep(id.local, address, out.record);
      // Retired (kept for the grace period, replaced in the bundle) with the message's commit (flush).
      if (out.preKeyId !== undefined) this.#consumed.push({ local: id.local, id: out.preKeyId });
      return out.plaintext;
    } catch (e) {
      this.#rollback(key);
      throw e;
    }
  }

  /** Serializes with other operations on the address (for tests and maintenance). */
  withRecord<T>(local: string, contact: string, deviceId: number, fn: (r: LegacyRecord | undefined) => T): Promise<T> {
    const address = addressOf(contact, deviceId);
    return this.#locked(`${local}\0${address}`, () => fn(this.#entry(local, address)?.record));
  }

  /** Deletes every session with one device (e.g. an admin reset); the next message builds a new one. */
  delete(local: string, contact: string, deviceId: number): Promise<void> {
    const address = addressOf(contact, deviceId);
    const key = `${local}\0${address}`;
    return this.#locked(key, () => {
      this.#dirty.delete(key);
      const existed = this.#cache.has(key) || this.#store.get(local, K_SESSION, address) !== undefined;
      this.#cache.delete(key);
      this.#store.delete(local, K_SESSION, address);
      if (existed && this.#count !== undefined) this.#count--;
    });
  }

  /** How many session records the store holds; the first call counts them (`countAll`), later ones are tracked. */
  count(countAll: () => number): number {
    this.#count ??= countAll();
    return this.#count;
  }

  /** Forgets cached records (the next access reads the store), after flushing. */
  clearCache(): void {
    this.flush();
    this.#cache.clear();
  }
}
