// libsignal sessions of the hosted JIDs with their contacts' devices, run through the library's own
// SessionBuilder/SessionCipher on a storage adapter over the ProtocolStore.
//
// Speed: parsed session records stay in an LRU (see session-record.ts); each library operation
// mutates the cached record in place and its new state is written back in one sealed row. Writes of
// one engine operation (e.g. a message to three devices) are flushed together in one SQLite
// transaction before the engine returns ciphertext or plaintext, so nothing leaves that is not on disk.
// Safety: the library mutates a record before it knows whether the message authenticates. Every
// library call therefore runs under our own per-address lock, and on failure the cached record is
// rebuilt from its last good serialized state, so a forged or corrupted message never changes state.
import { LRUCache } from 'lru-cache';
import {
  SessionBuilder,
  SessionCipher,
  SignalProtocolAddress,
  type KeyPairType,
  type SessionType,
  type StorageType,
} from '@privacyresearch/libsignal-protocol-typescript';
import type { SessionRecord } from '@privacyresearch/libsignal-protocol-typescript/lib/session-record.js';
import { SessionLock } from '@privacyresearch/libsignal-protocol-typescript/lib/session-lock.js';
import type { ProtocolStore } from '../../keystore/protocol-store.js';
import type { DecryptFailure } from '../engine.js';
import { ab, equalBytes } from './bytes.js';
import type { Keyring, LocalIdentity } from './keyring.js';
import { LiveRecord } from './session-record.js';
import type { Bundle } from './wire.js';

const K_SESSION = 'session';

interface Entry {
  record: LiveRecord;
  /** The last state known good, encoded (persisted or about to be): what a failed operation rolls back to. */
  saved: Buffer;
}

export const addressOf = (contact: string, deviceId: number): string => `${contact}.${deviceId}`;

/** libsignal's StorageType for one hosted JID. Trust is not decided here (see engine: per JID and key). */
class SignalStore implements StorageType {
  readonly #s: Sessions;
  readonly #keyring: Keyring;
  readonly #id: LocalIdentity;

  constructor(s: Sessions, keyring: Keyring, id: LocalIdentity) {
    this.#s = s;
    this.#keyring = keyring;
    this.#id = id;
  }
  getIdentityKeyPair = (): Promise<KeyPairType> => Promise.resolve(this.#id.keyPair);
  getLocalRegistrationId = (): Promise<number> => Promise.resolve(this.#id.registrationId);
  // The engine checks the TrustStore (per bare JID and identity key) before every library call.
  isTrustedIdentity = (): Promise<boolean> => Promise.resolve(true);
  saveIdentity = (): Promise<boolean> => Promise.resolve(false);
  loadPreKey = (id: string | number): Promise<KeyPairType | undefined> => Promise.resolve(this.#keyring.loadPreKey(this.#id.local, Number(id)));
  storePreKey = (): Promise<void> => Promise.reject(new Error('prekeys are managed by the keyring'));
  removePreKey = (id: string | number): Promise<void> => this.#keyring.consumePreKey(this.#id.local, Number(id));
  loadSignedPreKey = (id: string | number): Promise<KeyPairType | undefined> =>
    Promise.resolve(this.#keyring.loadSignedPreKey(this.#id.local, Number(id)));
  storeSignedPreKey = (): Promise<void> => Promise.reject(new Error('signed prekeys are managed by the keyring'));
  removeSignedPreKey = (): Promise<void> => Promise.reject(new Error('signed prekeys are managed by the keyring'));
  storeSession = (address: string, record: string): Promise<void> => {
    this.#s.storeSerialized(this.#id.local, address, record);
    return Promise.resolve();
  };
  // Only SessionBuilder reads this (and parses it with SessionRecord.deserialize): the library's JSON.
  loadSession = (address: string): Promise<string | undefined> => Promise.resolve(this.#s.entry(this.#id.local, address)?.record.toLibraryJson());
}

/** SessionCipher reading the live cached record instead of parsing JSON from storage. */
class CachedCipher extends SessionCipher {
  readonly #load: () => LiveRecord | undefined;
  constructor(storage: StorageType, address: SignalProtocolAddress, load: () => LiveRecord | undefined) {
    super(storage, address);
    this.#load = load;
  }
  override getRecord(): Promise<SessionRecord | undefined> {
    return Promise.resolve(this.#load());
  }

  /**
   * The library's version tries each session of the record in turn and steps a session's ratchet
   * before it knows the MAC is right, leaving every session it failed on changed. A message in
   * flight on an older session (e.g. sent just before a session repair) then corrupts the newer
   * one, and the contact's next messages on it fail with bad-mac (found by the fuzz test, issue 15).
   * Here a session that does not decrypt the message is put back as it was. With one session the
   * whole operation's rollback (Sessions.#locked) does that already, at no cost.
   */
  override async decryptWithSessionList(buffer: ArrayBuffer, sessionList: SessionType[], errors: unknown[]): Promise<{ plaintext: ArrayBuffer; session: SessionType }> {
    if (sessionList.length <= 1) return super.decryptWithSessionList(buffer, sessionList, errors);
    for (let i = sessionList.length - 1; i >= 0; i--) {
      const session = sessionList[i]!;
      const before = structuredClone(session);
      try {
        return { plaintext: await this.doDecryptWhisperMessage(buffer, session), session };
      } catch (e) {
        for (const k of Object.keys(session)) delete (session as unknown as Record<string, unknown>)[k];
        Object.assign(session, before);
        if ((e as { name?: string }).name === 'MessageCounterError') throw e;
        errors.push(e);
      }
    }
    throw errors[0];
  }
}

/** Maps a library exception to the failure reason reported for the message. */
export function classifyLibraryError(e: unknown): DecryptFailure {
  const err = e as { name?: string; message?: string };
  const m = String(err?.message ?? '');
  if (err?.name === 'MessageCounterError') return 'duplicate';
  if (/Bad MAC/.test(m)) return 'bad-mac';
  if (/No record for|No session/.test(m)) return 'no-session';
  if (/Missing Signed PreKey/.test(m)) return 'unknown-prekey';
  if (/Incompatible version|Invalid public key|Over 2000 messages|index out of range|invalid wire type/i.test(m)) return 'malformed';
  return 'internal';
}

export class Sessions {
  readonly #store: ProtocolStore;
  readonly #keyring: Keyring;
  readonly #cache: LRUCache<string, Entry>;
  readonly #dirty = new Set<string>();
  /** Session records in the store (for the gauge): counted once, then kept up to date. */
  #count: number | undefined;
  readonly #locks = new Map<string, Promise<void>>();
  /** Adapters and ciphers are stateless wrappers: reused instead of rebuilt per message. */
  readonly #adapters = new LRUCache<string, SignalStore>({ max: 10_000 });
  readonly #ciphers: LRUCache<string, CachedCipher>;

  constructor(store: ProtocolStore, keyring: Keyring, max: number) {
    this.#store = store;
    this.#keyring = keyring;
    this.#ciphers = new LRUCache<string, CachedCipher>({ max });
    this.#cache = new LRUCache<string, Entry>({
      max,
      // An entry evicted before its operation's flush is written at once.
      dispose: (entry, key, reason) => {
        if (reason === 'evict' && this.#dirty.delete(key)) this.#write(key, entry.saved);
      },
    });
  }

  // ---- cache ----

  /** The cached entry for an address, loaded from the store on a miss. */
  entry(local: string, address: string): Entry | undefined {
    const key = `${local}\0${address}`;
    let e = this.#cache.get(key);
    if (e) return e;
    const saved = this.#store.get(local, K_SESSION, address);
    if (!saved) return undefined;
    e = { record: LiveRecord.fromStored(saved), saved };
    this.#cache.set(key, e);
    return e;
  }

  /** Called by the library (through the adapter) with the record it just changed. */
  storeSerialized(local: string, address: string, serialized: string): void {
    const key = `${local}\0${address}`;
    // Our live record hands the library a token (see LiveRecord.serialize); a record the library
    // built itself (a new session) arrives as its JSON and is adopted.
    const claimed = LiveRecord.claim(serialized);
    const record = claimed ?? LiveRecord.fromLibraryJson(serialized);
    const saved = record.toBinary();
    const e = this.#cache.get(key);
    if (!claimed && !e && this.#count !== undefined && !this.#store.get(local, K_SESSION, address)) this.#count++;
    if (e && e.record === record) e.saved = saved;
    else this.#cache.set(key, { record, saved });
    this.#dirty.add(key);
  }

  /** Writes every changed record in one transaction. */
  flush(): void {
    if (this.#dirty.size === 0) return;
    const keys = [...this.#dirty];
    this.#dirty.clear();
    const writeAll = () => {
      for (const key of keys) {
        const e = this.#cache.peek(key);
        if (e) this.#write(key, e.saved);
      }
    };
    try {
      // One row commits on its own; several (a message to many devices) share one transaction.
      if (keys.length === 1) writeAll();
      else this.#store.transaction(writeAll);
    } catch (e) {
      for (const k of keys) this.#dirty.add(k);
      throw e;
    }
  }

  #write(key: string, saved: Buffer): void {
    const i = key.indexOf('\0');
    this.#store.put(key.slice(0, i), K_SESSION, key.slice(i + 1), saved);
  }

  #rollback(key: string): void {
    const e = this.#cache.peek(key);
    if (e) e.record = LiveRecord.fromStored(e.saved);
  }

  async #locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(key);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev ? prev.then(() => mine) : mine;
    this.#locks.set(key, tail);
    if (prev) await prev;
    try {
      return await fn();
    } catch (e) {
      this.#rollback(key);
      throw e;
    } finally {
      release();
      if (this.#locks.get(key) === tail) this.#locks.delete(key);
      // libsignal's SessionLock keeps every job promise and error in static arrays that only its
      // (unused) clearQueue reads: a leak in a long-running process.
      if (SessionLock._promises.length > 256) SessionLock._promises.length = 0;
      if (SessionLock.errors.length > 0) SessionLock.errors.length = 0;
    }
  }

  #adapter(id: LocalIdentity): SignalStore {
    let a = this.#adapters.get(id.local);
    if (!a) this.#adapters.set(id.local, (a = new SignalStore(this, this.#keyring, id)));
    return a;
  }

  #cipher(id: LocalIdentity, contact: string, deviceId: number): CachedCipher {
    const address = addressOf(contact, deviceId);
    const key = `${id.local}\0${address}`;
    let c = this.#ciphers.get(key);
    if (!c) {
      c = new CachedCipher(this.#adapter(id), new SignalProtocolAddress(contact, deviceId), () => this.entry(id.local, address)?.record);
      this.#ciphers.set(key, c);
    }
    return c;
  }

  // ---- queries ----

  openSession(local: string, contact: string, deviceId: number): SessionType | undefined {
    return this.entry(local, addressOf(contact, deviceId))?.record.getOpenSession();
  }

  /** Whether any session (open or archived) with the device exists. */
  hasAnySession(local: string, contact: string, deviceId: number): boolean {
    const rec = this.entry(local, addressOf(contact, deviceId))?.record;
    return rec !== undefined && Object.keys(rec.sessions).length > 0;
  }

  /** Whether a session (open or archived) was started by this PreKey message's base key. */
  hasBaseKey(local: string, contact: string, deviceId: number, baseKey: Uint8Array): boolean {
    const rec = this.entry(local, addressOf(contact, deviceId))?.record;
    if (!rec) return false;
    return Object.values(rec.sessions).some((s) => s.indexInfo.baseKey !== undefined && equalBytes(s.indexInfo.baseKey, baseKey));
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
    const address = new SignalProtocolAddress(contact, deviceId);
    return this.#locked(`${id.local}\0${address.toString()}`, async () => {
      const builder = new SessionBuilder(this.#adapter(id), address);
      await builder.processPreKey({
        identityKey: ab(bundle.identityKey),
        registrationId: 0,
        signedPreKey: { keyId: bundle.signedPreKey.id, publicKey: ab(bundle.signedPreKey.publicKey), signature: ab(bundle.signedPreKey.signature) },
        preKey: { keyId: preKey.id, publicKey: ab(preKey.publicKey) },
      });
    });
  }

  /** Encrypts for one device; `prekey` is true while the session is not yet confirmed by the contact. */
  encrypt(id: LocalIdentity, contact: string, deviceId: number, plaintext: Buffer): Promise<{ prekey: boolean; data: Buffer }> {
    const cipher = this.#cipher(id, contact, deviceId);
    return this.#locked(`${id.local}\0${addressOf(contact, deviceId)}`, async () => {
      const res = await cipher.encrypt(new Uint8Array(plaintext).buffer);
      return { prekey: res.type === 3, data: Buffer.from(res.body ?? '', 'latin1') };
    });
  }

  decrypt(id: LocalIdentity, contact: string, deviceId: number, data: Buffer, prekey: boolean): Promise<Buffer> {
    const cipher = this.#cipher(id, contact, deviceId);
    return this.#locked(`${id.local}\0${addressOf(contact, deviceId)}`, async () => {
      const copy = new Uint8Array(data).buffer;
      const out = prekey ? await cipher.decryptPreKeyWhisperMessage(copy, 'binary') : await cipher.decryptWhisperMessage(copy, 'binary');
      return Buffer.from(out);
    });
  }

  /** Serializes with other operations on the address (for tests and maintenance). */
  withRecord<T>(local: string, contact: string, deviceId: number, fn: (r: LiveRecord | undefined) => T): Promise<T> {
    const address = addressOf(contact, deviceId);
    return this.#locked(`${local}\0${address}`, async () => fn(this.entry(local, address)?.record));
  }

  /** Deletes every session with one device (e.g. an admin reset); the next message builds a new one. */
  delete(local: string, contact: string, deviceId: number): Promise<void> {
    const address = addressOf(contact, deviceId);
    const key = `${local}\0${address}`;
    return this.#locked(key, async () => {
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
