// The hosted JIDs' own OMEMO keys (XEP-0384 v0.3.0 §"Bundles"): per hosted JID an identity key pair,
// device id, registration id, signed prekeys and one-time prekeys, kept as sealed rows of the
// ProtocolStore, and the device list and bundle published for them.
//   kind 'identity'/'self'  identity, ids and counters       kind 'prekey'/<id>  one-time prekeys
//   kind 'spk'/<id>         signed prekeys                   owner '' kind 'locals'/<jid>  index
import { randomInt } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { ProtocolStore } from '../../keystore/protocol-store.js';
import type { PubsubPort } from '../engine.js';
import { generateX25519, xeddsaSign, type X25519KeyPair } from '../ratchet/primitives.js';
import { ab, b64, buf, fromB64, hex } from './bytes.js';
import { ITEM_CURRENT, MAX_DEVICE_ID, NODE_DEVICELIST, bundleNode, type OmemoOptions } from './constants.js';
import { with05, without05, type OwnIdentity, type PreKeyLookups } from './legacy-protocol.js';
import { BundleCache } from './bundle-cache.js';
import { withRowCache } from './row-cache.js';
import { INDEX_OWNER, K_LOCALS, K_PREKEY, K_SPK, SELF, preKeyIds, pruneRetiredSignedPreKeys, pruneUsedPreKeys, unusedPreKeys, type PreKeyRow, type SignedPreKeyRow } from './prekey-rows.js';
import { buildBundle, buildDeviceList, type Bundle } from './wire.js';

/** A key pair as the rows hold it: pubKey is the 33-byte 0x05-prefixed form, privKey the 32-byte scalar. */
export interface KeyPairType {
  pubKey: ArrayBuffer;
  privKey: ArrayBuffer;
}

export interface LocalIdentity {
  local: string;
  deviceId: number;
  registrationId: number;
  keyPair: KeyPairType;
  /** The same identity as the session layer takes it. */
  own: OwnIdentity;
  fingerprint: string;
}

/** A new key pair in the rows' form (the X25519 scalar is stored clamped, as libsignal stored it). */
function newKeyPair(): KeyPairType {
  const k = generateX25519();
  return { pubKey: ab(with05(k.pub)), privKey: ab(k.priv) };
}

/** A new signed prekey: its public key (0x05-prefixed) signed with the identity key (XEdDSA). */
function newSignedPreKey(identity: KeyPairType, keyId: number): { keyId: number; keyPair: KeyPairType; signature: ArrayBuffer } {
  const keyPair = newKeyPair();
  return { keyId, keyPair, signature: ab(xeddsaSign(buf(identity.privKey), buf(keyPair.pubKey))) };
}

const rawPair = (r: { pub: string; priv: string }): X25519KeyPair => ({ priv: Buffer.from(r.priv, 'base64'), pub: without05(Buffer.from(r.pub, 'base64')) });

interface IdentityRow {
  v: 1;
  deviceId: number;
  registrationId: number;
  pub: string;
  priv: string;
  createdAt: number;
  nextPreKeyId: number;
  signedPreKeyId: number;
  nextSignedPreKeyId: number;
  /**
   * Created lazily: true until the signed prekey and the one-time prekeys exist (signedPreKeyId is
   * then 0 and no bundle is published). Absent on rows written complete.
   */
  pending?: true;
}
const K_IDENTITY = 'identity';

/** Fingerprint shown to users: hex of the Curve25519 public key without the 0x05 type byte. */
export const fingerprintOf = (pub33: ArrayBuffer | Uint8Array): string => hex(buf(pub33).subarray(1));

/** Completions of lazily created bundles running at once, and one-time prekeys made between yields. */
const COMPLETE_AT_ONCE = 2;
const PREKEY_SLICE = 10;
const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

const keyPairOf = (r: { pub: string; priv: string }): KeyPairType => ({ pubKey: fromB64(r.pub), privKey: fromB64(r.priv) });

export class Keyring {
  readonly #store: ProtocolStore;
  readonly #pubsub: PubsubPort;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #opts: OmemoOptions;
  readonly #cache: LRUCache<string, LocalIdentity>;
  readonly #creating = new Map<string, Promise<LocalIdentity>>();
  /** Bundles being completed (signed prekey + one-time prekeys), per hosted JID. */
  readonly #completing = new Map<string, Promise<void>>();
  /** Completions waiting for a slot: at most COMPLETE_AT_ONCE run at a time. */
  readonly #completeQueue: Array<() => void> = [];
  #completeRunning = 0;
  /** Hosted JIDs whose published items were checked by this process (bounded: a miss only re-checks). */
  readonly #checked: LRUCache<string, true>;
  /** The bundle last built per hosted JID (bundle-cache.ts). */
  readonly #bundles: BundleCache<Bundle>;
  /** Identities created / bundles completed by this process (tests, bench). */
  readonly created = { identities: 0, bundles: 0 };

  readonly #admit: (local: string) => void;

  constructor(store: ProtocolStore, pubsub: PubsubPort, log: Logger, now: () => number, opts: OmemoOptions, admit: (local: string) => void = () => undefined) {
    this.#admit = admit;
    // Identity, prekey and signed prekey rows parsed once (row-cache.ts).
    this.#store = withRowCache(store, [K_IDENTITY, K_PREKEY, K_SPK], 4096);
    this.#pubsub = pubsub;
    this.#log = log;
    this.#now = now;
    this.#opts = opts;
    this.#cache = new LRUCache({ max: opts.identityCacheSize });
    this.#checked = new LRUCache({ max: opts.identityCacheSize });
    this.#bundles = new BundleCache(opts.identityCacheSize);
  }

  /**
   * The hosted JID's identity, created and its device list published on first use. Cheap: only the
   * identity key and ids (~1 ms); the bundle (signed prekey, one-time prekeys) is made by
   * ensureBundle(), on the first bundle read or for a JID that must be ready at once (bots).
   */
  async ensure(local: string): Promise<LocalIdentity> {
    const hit = this.#cache.get(local);
    if (hit && this.#checked.has(local)) return hit;
    let p = this.#creating.get(local);
    if (!p) {
      p = this.#loadOrCreate(local).finally(() => this.#creating.delete(local));
      this.#creating.set(local, p);
    }
    return p;
  }

  /** ensure()'s answer without the promise when the identity is loaded and checked already, else undefined. */
  ready(local: string): LocalIdentity | undefined {
    const hit = this.#cache.get(local);
    return hit && this.#checked.has(local) ? hit : undefined;
  }

  /** Identities held in memory (bounded by identityCacheSize). */
  get cachedCount(): number {
    return Math.max(this.#cache.size, this.#checked.size);
  }

  /** Cached identity only (no store access). */
  peek(local: string): LocalIdentity | undefined {
    return this.#cache.get(local);
  }

  /** Every hosted JID with an OMEMO identity. */
  locals(): string[] {
    return this.#store.list(INDEX_OWNER, K_LOCALS).map((r) => r.key);
  }

  async #loadOrCreate(local: string): Promise<LocalIdentity> {
    let row = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF);
    if (!row) row = await this.#create(local);
    const keyPair = keyPairOf(row);
    const id: LocalIdentity = {
      local,
      deviceId: row.deviceId,
      registrationId: row.registrationId,
      keyPair,
      own: { priv: Buffer.from(row.priv, 'base64'), pub: Buffer.from(row.pub, 'base64'), registrationId: row.registrationId },
      fingerprint: fingerprintOf(fromB64(row.pub)),
    };
    this.#cache.set(local, id);
    if (!this.#checked.has(local)) {
      this.#publishIfChanged(local, row);
      this.#checked.set(local, true);
    }
    return id;
  }

  async #create(local: string): Promise<IdentityRow> {
    this.#admit(local);
    const keyPair = newKeyPair();
    const row: IdentityRow = {
      v: 1,
      deviceId: randomInt(1, MAX_DEVICE_ID + 1),
      registrationId: randomInt(1, 16381),
      pub: b64(keyPair.pubKey),
      priv: b64(keyPair.privKey),
      createdAt: this.#now(),
      nextPreKeyId: 1,
      signedPreKeyId: 0,
      nextSignedPreKeyId: 1,
      pending: true,
    };
    let created = false;
    this.#store.transaction(() => {
      // Another task may have created it while we generated keys: keep the first.
      if (this.#store.get(local, K_IDENTITY, SELF)) return;
      this.#store.putJson(local, K_IDENTITY, SELF, row);
      this.#store.put(INDEX_OWNER, K_LOCALS, local, '1');
      created = true;
    });
    if (created) {
      this.created.identities++;
      this.#log.info({ local, deviceId: row.deviceId }, 'omemo identity created');
    }
    return this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF)!;
  }

  /** Whether the hosted JID's bundle exists (false for a lazily created identity not yet read). */
  hasBundle(local: string): boolean {
    const row = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF);
    return row !== undefined && row.pending !== true;
  }

  /**
   * Creates the identity if needed, then its signed prekey and one-time prekeys, and publishes the
   * bundle. The prekeys are made in slices with a yield to the event loop between them, and at most
   * COMPLETE_AT_ONCE hosted JIDs are completed at a time, so a burst of first bundle reads never
   * holds the loop for long. Coalesced per hosted JID.
   */
  async ensureBundle(local: string): Promise<LocalIdentity> {
    const id = await this.ensure(local);
    if (!this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF)?.pending) return id;
    let p = this.#completing.get(local);
    if (!p) {
      p = this.#slot(() => this.#complete(local)).finally(() => this.#completing.delete(local));
      this.#completing.set(local, p);
    }
    await p;
    return id;
  }

  async #slot<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#completeRunning >= COMPLETE_AT_ONCE) await new Promise<void>((r) => this.#completeQueue.push(r));
    this.#completeRunning++;
    try {
      return await fn();
    } finally {
      this.#completeRunning--;
      this.#completeQueue.shift()?.();
    }
  }

  async #complete(local: string): Promise<void> {
    const row = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF);
    if (!row?.pending) return;
    const spk = newSignedPreKey(keyPairOf(row), row.nextSignedPreKeyId);
    await yieldToLoop();
    const preKeys: Array<{ keyId: number; keyPair: KeyPairType }> = [];
    for (let i = 0; i < this.#opts.preKeyCount; i++) {
      preKeys.push({ keyId: row.nextPreKeyId + i, keyPair: newKeyPair() });
      if ((i + 1) % PREKEY_SLICE === 0) await yieldToLoop();
    }
    const now = this.#now();
    const done = this.#store.transaction(() => {
      const cur = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF);
      if (!cur?.pending) return false;
      this.#store.putJson(local, K_SPK, String(spk.keyId), signedPreKeyRow(spk, now));
      for (const p of preKeys) this.#store.putJson(local, K_PREKEY, String(p.keyId), { pub: b64(p.keyPair.pubKey), priv: b64(p.keyPair.privKey) } satisfies PreKeyRow);
      const { pending: _, ...rest } = cur;
      this.#store.putJson(local, K_IDENTITY, SELF, {
        ...rest,
        signedPreKeyId: spk.keyId,
        nextSignedPreKeyId: spk.keyId + 1,
        nextPreKeyId: cur.nextPreKeyId + preKeys.length,
      } satisfies IdentityRow);
      return true;
    });
    if (!done) return;
    this.created.bundles++;
    this.#log.debug({ local, deviceId: row.deviceId }, 'omemo bundle created');
    this.publishBundle(local);
  }

  // ---- what the session layer asks for ----

  /** The hosted JID's signed and one-time prekeys (used ones too, for their grace period), as X25519 pairs. */
  preKeyLookups(local: string): PreKeyLookups {
    return {
      signedPreKey: (id) => {
        const r = this.#store.getJson<SignedPreKeyRow>(local, K_SPK, String(id));
        return r ? rawPair(r) : undefined;
      },
      preKey: (id) => {
        const r = this.#store.getJson<PreKeyRow>(local, K_PREKEY, String(id));
        return r ? rawPair(r) : undefined;
      },
    };
  }

  hasPreKey(local: string, id: number): boolean {
    return this.#store.getJson<PreKeyRow>(local, K_PREKEY, String(id)) !== undefined;
  }

  hasSignedPreKey(local: string, id: number): boolean {
    return this.#store.getJson<SignedPreKeyRow>(local, K_SPK, String(id)) !== undefined;
  }

  /**
   * A PreKey message consumed prekey `id`: keep its private key for the grace period (deleted by
   * prune()), take it out of the bundle, add a replacement under a new id and republish.
   */
  async consumePreKey(local: string, id: number): Promise<void> {
    if (this.consumePreKeyRows(local, id)) this.publishBundle(local);
  }

  /**
   * The rows of consumePreKey, in one transaction (joining the caller's: the session layer writes
   * them with the message's session row and replay digest, one commit). True when the prekey was
   * consumed now: the caller then publishes the bundle once that commit is done.
   */
  consumePreKeyRows(local: string, id: number): boolean {
    const r = this.#store.getJson<PreKeyRow>(local, K_PREKEY, String(id));
    if (!r || r.usedAt !== undefined) return false;
    if (!this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF)) return false;
    // Its id is assigned in the transaction below.
    const fresh = newKeyPair();
    const replaced = this.#store.transaction(() => {
      // Re-read: a concurrent call may have consumed it while we generated the replacement.
      const now = this.#store.getJson<PreKeyRow>(local, K_PREKEY, String(id));
      if (!now || now.usedAt !== undefined) return null;
      const cur = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF)!;
      const newId = cur.nextPreKeyId;
      this.#store.putJson(local, K_PREKEY, String(id), { ...now, usedAt: this.#now() } satisfies PreKeyRow);
      this.#store.putJson(local, K_PREKEY, String(newId), { pub: b64(fresh.pubKey), priv: b64(fresh.privKey) } satisfies PreKeyRow);
      this.#store.putJson(local, K_IDENTITY, SELF, { ...cur, nextPreKeyId: newId + 1 });
      return cur;
    });
    if (!replaced) return false;
    this.#bundles.replaced(local, replaced, id, { id: replaced.nextPreKeyId, publicKey: buf(fresh.pubKey) });
    this.#log.debug({ local, preKeyId: id }, 'omemo prekey consumed and replaced');
    return true;
  }

  // ---- publishing ----

  /** publishBundle after consumePreKeyRows' commit (from a microtask: a failure is logged, not thrown). */
  republishAfterConsume(local: string): void {
    try {
      this.publishBundle(local);
    } catch (e) {
      this.#log.warn({ local, err: e instanceof Error ? { type: e.name, message: e.message } : 'non-error' }, 'omemo bundle not republished after a consumed prekey (republished on the next start)');
    }
  }

  /** The bundle as published: identity, current signed prekey, unused one-time prekeys. */
  bundle(local: string): Bundle {
    const row = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF);
    if (!row) throw new Error('no identity');
    if (row.pending) throw new Error('no bundle yet');
    const cached = this.#bundles.get(local, row);
    if (cached) return cached;
    const spk = this.#store.getJson<SignedPreKeyRow>(local, K_SPK, String(row.signedPreKeyId))!;
    const preKeys = unusedPreKeys(this.#store, local).map((p) => ({ id: p.id, publicKey: p.pub }));
    const bundle: Bundle = {
      identityKey: Buffer.from(row.pub, 'base64'),
      signedPreKey: { id: row.signedPreKeyId, publicKey: Buffer.from(spk.pub, 'base64'), signature: Buffer.from(spk.sig, 'base64') },
      preKeys,
    };
    this.#bundles.set(local, bundle, row);
    return bundle;
  }

  /** Drops the bundles kept in memory (the next read rebuilds them from the store); for tests. */
  forgetBundles(): void {
    this.#bundles.clear();
  }

  publishBundle(local: string): void {
    const row = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF);
    if (!row || row.pending) return;
    this.#pubsub.publish(local, bundleNode(row.deviceId), ITEM_CURRENT, buildBundle(this.bundle(local)), { accessModel: 'open' });
  }

  /** After a restart, republish only what differs from the items the pubsub service holds. */
  #publishIfChanged(local: string, row: IdentityRow): void {
    const list = buildDeviceList([row.deviceId]);
    const haveList = this.#pubsub.localItems(local, NODE_DEVICELIST)[0]?.payload.toString();
    if (haveList !== list.toString()) this.#pubsub.publish(local, NODE_DEVICELIST, ITEM_CURRENT, list, { accessModel: 'open' });
    if (row.pending) return;
    const bundle = buildBundle(this.bundle(local));
    const haveBundle = this.#pubsub.localItems(local, bundleNode(row.deviceId))[0]?.payload.toString();
    if (haveBundle !== bundle.toString()) this.#pubsub.publish(local, bundleNode(row.deviceId), ITEM_CURRENT, bundle, { accessModel: 'open' });
  }

  // ---- upkeep ----

  /** Rotates the signed prekey when it is older than the period; drops those retired a period ago. */
  async rotateSignedPreKey(local: string, force = false): Promise<boolean> {
    const row = this.#store.getJson<IdentityRow>(local, K_IDENTITY, SELF);
    // A lazily created identity gets its first signed prekey with its bundle, not here.
    if (!row || row.pending) return false;
    const now = this.#now();
    const period = this.#opts.signedPreKeyRotationMs;
    let changed = false;
    for (const signedPreKeyId of pruneRetiredSignedPreKeys(this.#store, local, now, period)) this.#log.debug({ local, signedPreKeyId }, 'omemo old signed prekey deleted');
    const cur = this.#store.getJson<SignedPreKeyRow>(local, K_SPK, String(row.signedPreKeyId));
    if (force || !cur || now - cur.createdAt >= period) {
      const identity = keyPairOf(row);
      const spk = newSignedPreKey(identity, row.nextSignedPreKeyId);
      this.#store.transaction(() => {
        if (cur) this.#store.putJson(local, K_SPK, String(row.signedPreKeyId), { ...cur, retiredAt: now });
        this.#store.putJson(local, K_SPK, String(spk.keyId), signedPreKeyRow(spk, now));
        this.#store.putJson(local, K_IDENTITY, SELF, { ...row, signedPreKeyId: spk.keyId, nextSignedPreKeyId: spk.keyId + 1 });
      });
      this.#log.info({ local, signedPreKeyId: spk.keyId }, 'omemo signed prekey rotated');
      this.publishBundle(local);
      changed = true;
    }
    return changed;
  }

  /** Deletes used one-time prekeys whose grace period is over; returns how many. */
  prunePreKeys(local: string, deletableBefore: number): number {
    const n = pruneUsedPreKeys(this.#store, local, deletableBefore);
    if (n > 0) this.#log.debug({ local, count: n }, 'omemo used prekeys deleted');
    return n;
  }

  /** Ids of one-time prekeys held (used or not), for tests and diagnostics. */
  preKeyIds(local: string): { unused: number[]; used: number[] } {
    return preKeyIds(this.#store, local);
  }
}

function signedPreKeyRow(spk: { keyPair: KeyPairType; signature: ArrayBuffer }, now: number): SignedPreKeyRow {
  return { pub: b64(spk.keyPair.pubKey), priv: b64(spk.keyPair.privKey), sig: b64(spk.signature), createdAt: now };
}
