// Hosted JIDs' XEP-0027 keys: created on first use, kept in the ProtocolStore (which seals every value
// at rest, so the armored private key carries no passphrase of its own), parsed once and cached.
// Concurrent first uses of one JID share one generation: RSA-3072 takes seconds, and two keys for one
// JID would leave peers with a key the gateway no longer holds.
import * as openpgp from 'openpgp';
import { LRUCache } from 'lru-cache';
import type { ProtocolStore } from '../../keystore/protocol-store.js';
import { FULL_CONFIG, PGP_CONFIG } from './openpgp-config.js';
import { fingerprintOf, generateLocalKey, keyIdsOf, type PgpKeyType } from './keys.js';

const KIND = 'identity';
const KEY = 'current';
const MAX_GENERATING = 2;

interface StoredIdentity {
  v: 1;
  type: PgpKeyType;
  fingerprint: string;
  /** Armored private key without passphrase; the store seals it. */
  privateKey: string;
  createdAt: number;
}

export interface LocalKey {
  jid: string;
  fingerprint: string;
  privateKey: openpgp.PrivateKey;
  publicKey: openpgp.PublicKey;
  publicArmored: string;
  /** Ids of the primary key and subkeys, uppercase hex. */
  keyIds: ReadonlySet<string>;
}

export class LocalKeys {
  readonly #store: ProtocolStore;
  readonly #type: PgpKeyType;
  readonly #now: () => number;
  readonly #cache = new LRUCache<string, LocalKey>({ max: 2000 });
  readonly #pending = new Map<string, Promise<LocalKey>>();
  readonly #waiting: Array<() => void> = [];
  #generating = 0;
  /** Generations started (for tests of coalescing and for logs). */
  generated = 0;

  readonly #admit: (jid: string) => void;

  constructor(store: ProtocolStore, type: PgpKeyType, now: () => number, admit: (jid: string) => void = () => undefined) {
    this.#admit = admit;
    this.#store = store;
    this.#type = type;
    this.#now = now;
  }

  /** The key of hosted JID `jid`, created on first use. */
  get(jid: string): Promise<LocalKey> {
    const hit = this.#cache.get(jid);
    if (hit) return Promise.resolve(hit);
    const pending = this.#pending.get(jid);
    if (pending) return pending;
    const p = this.#loadOrCreate(jid).finally(() => this.#pending.delete(jid));
    this.#pending.set(jid, p);
    return p;
  }

  /** The key if one exists already; never generates. */
  async peek(jid: string): Promise<LocalKey | undefined> {
    const hit = this.#cache.get(jid);
    if (hit) return hit;
    const stored = this.#store.getJson<StoredIdentity>(jid, KIND, KEY);
    return stored ? this.#remember(jid, await this.#parse(jid, stored)) : undefined;
  }

  async #loadOrCreate(jid: string): Promise<LocalKey> {
    const stored = this.#store.getJson<StoredIdentity>(jid, KIND, KEY);
    if (stored) return this.#remember(jid, await this.#parse(jid, stored));
    this.#admit(jid);
    this.generated++;
    const privateKey = await this.#limited(() => generateLocalKey(jid, this.#type, new Date(this.#now())));
    const record: StoredIdentity = {
      v: 1,
      type: this.#type,
      fingerprint: fingerprintOf(privateKey),
      privateKey: privateKey.armor(FULL_CONFIG),
      createdAt: this.#now(),
    };
    // Written only if still absent, so a key stored meanwhile (another process) wins over ours.
    const winner = this.#store.transaction(() => {
      const again = this.#store.getJson<StoredIdentity>(jid, KIND, KEY);
      if (again) return again;
      this.#store.putJson(jid, KIND, KEY, record);
      return record;
    });
    return this.#remember(jid, winner === record ? this.#build(jid, privateKey) : await this.#parse(jid, winner));
  }

  /**
   * At most MAX_GENERATING key generations at once: RSA generation runs on libuv's thread pool (4
   * threads by default), which file and crypto I/O of everything else share.
   */
  async #limited<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#generating >= MAX_GENERATING) await new Promise<void>((r) => this.#waiting.push(r));
    this.#generating++;
    try {
      return await fn();
    } finally {
      this.#generating--;
      this.#waiting.shift()?.();
    }
  }

  async #parse(jid: string, stored: StoredIdentity): Promise<LocalKey> {
    const privateKey = await openpgp.readPrivateKey({ armoredKey: stored.privateKey, config: PGP_CONFIG });
    return this.#build(jid, privateKey);
  }

  #build(jid: string, privateKey: openpgp.PrivateKey): LocalKey {
    const publicKey = privateKey.toPublic();
    return {
      jid,
      fingerprint: fingerprintOf(privateKey),
      privateKey,
      publicKey,
      publicArmored: publicKey.armor(FULL_CONFIG),
      keyIds: new Set(keyIdsOf(privateKey)),
    };
  }

  #remember(jid: string, k: LocalKey): LocalKey {
    this.#cache.set(jid, k);
    return k;
  }
}
