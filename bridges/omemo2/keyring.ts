// The hosted JIDs' own OMEMO 2 keys. Identity and device id are the hosted JID's legacy OMEMO ones
// (one device, one identity key, in both device lists: python-omemo and the XEP treat a device id
// found in both lists as one device with one key): the X25519 identity scalar is published in its
// Ed25519 form and signs with XEdDSA. Signed prekeys and one-time prekeys are OMEMO 2's own, sealed
// rows of the 'omemo2' ProtocolStore, with the same upkeep as legacy OMEMO: a used prekey is replaced
// at once and its private key deleted after a grace period; the signed prekey rotates each period.
//   kind 'state'/'self'  counters   kind 'prekey'/<id>   kind 'spk'/<id>   owner '' kind 'locals'/<jid>
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { ProtocolStore } from '../../keystore/protocol-store.js';
import type { PubsubPort } from '../engine.js';
import { generateX25519, xeddsaPublic, xeddsaSign, type X25519KeyPair } from '../ratchet/primitives.js';
import { ITEM_CURRENT, NODE_BUNDLES, NODE_DEVICES, type Omemo2Options } from './constants.js';
import type { OwnIdentity, PeerBundle } from './session.js';
import { BundleCache } from '../omemo/bundle-cache.js';
import { INDEX_OWNER, K_LOCALS, K_PREKEY, K_SPK, SELF, preKeyIds, pruneRetiredSignedPreKeys, pruneUsedPreKeys, unusedPreKeys, type PreKeyRow, type SignedPreKeyRow } from '../omemo/prekey-rows.js';
import { withRowCache } from '../omemo/row-cache.js';
import { buildBundle, buildDeviceList } from './wire.js';

/** Where a hosted JID's identity comes from: the legacy OMEMO keyring (same device id and key). */
export type IdentitySource = (local: string) => Promise<{ deviceId: number; priv: Buffer }>;

export interface LocalIdentity extends OwnIdentity {
  local: string;
  deviceId: number;
  fingerprint: string;
}

interface StateRow {
  v: 1;
  nextPreKeyId: number;
  signedPreKeyId: number;
  nextSignedPreKeyId: number;
}
const K_STATE = 'state';

/** Fingerprint shown to users: hex of the Ed25519 identity key. */
export const fingerprintOf = (ik: Uint8Array): string => Buffer.from(ik).toString('hex');

const pair = (r: PreKeyRow): X25519KeyPair => ({ pub: Buffer.from(r.pub, 'base64'), priv: Buffer.from(r.priv, 'base64') });
const row = (k: X25519KeyPair): PreKeyRow => ({ pub: k.pub.toString('base64'), priv: k.priv.toString('base64') });

export class Keyring {
  readonly #store: ProtocolStore;
  readonly #pubsub: PubsubPort;
  readonly #identity: IdentitySource;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #opts: Omemo2Options;
  readonly #label: (local: string) => string | null;
  readonly #cache = new LRUCache<string, LocalIdentity>({ max: 10_000 });
  readonly #creating = new Map<string, Promise<LocalIdentity>>();
  readonly #completing = new Map<string, Promise<void>>();
  /** The bundle last built per hosted JID, updated in place when a prekey is consumed (bundle-cache.ts). */
  readonly #bundles = new BundleCache<PeerBundle>(10_000);
  /** Hosted JIDs whose bundle is to be republished (#republishSoon). */
  readonly #republish = new Set<string>();

  /** `label`: the device label a hosted JID publishes (signed with its identity key), null for none. */
  constructor(store: ProtocolStore, pubsub: PubsubPort, identity: IdentitySource, log: Logger, now: () => number, opts: Omemo2Options, label: (local: string) => string | null = () => null) {
    // State, prekey and signed prekey rows parsed once (row-cache.ts).
    this.#store = withRowCache(store, [K_STATE, K_PREKEY, K_SPK], 4096);
    this.#pubsub = pubsub;
    this.#identity = identity;
    this.#log = log;
    this.#now = now;
    this.#opts = opts;
    this.#label = label;
  }

  /**
   * The hosted JID's OMEMO 2 identity (from legacy OMEMO) with its device list published. Cheap: the
   * prekeys and signed prekey are made by ensureBundle(), on the first read of the bundle or for a JID
   * that must be ready at once (bots), as for legacy OMEMO.
   */
  async ensure(local: string): Promise<LocalIdentity> {
    const hit = this.#cache.get(local);
    if (hit) return hit;
    let p = this.#creating.get(local);
    if (!p) {
      p = this.#load(local).finally(() => this.#creating.delete(local));
      this.#creating.set(local, p);
    }
    return p;
  }

  locals(): string[] {
    return this.#store.list(INDEX_OWNER, K_LOCALS).map((r) => r.key);
  }

  async #load(local: string): Promise<LocalIdentity> {
    const src = await this.#identity(local);
    const ik = xeddsaPublic(src.priv);
    const id: LocalIdentity = { local, deviceId: src.deviceId, priv: src.priv, ik, fingerprint: fingerprintOf(ik) };
    this.#cache.set(local, id);
    this.#publishIfChanged(id);
    return id;
  }

  /** Whether the hosted JID has its OMEMO 2 prekeys (and so a bundle). */
  hasBundle(local: string): boolean {
    return this.#store.getJson<StateRow>(local, K_STATE, SELF) !== undefined;
  }

  /** The identity with its prekeys and signed prekey made and the bundle published. */
  async ensureBundle(local: string): Promise<LocalIdentity> {
    const id = await this.ensure(local);
    if (this.hasBundle(local)) return id;
    let p = this.#completing.get(local);
    if (!p) {
      p = (async () => {
        // Key generation in slices, yielding between them, so a burst of first reads does not stall the loop.
        const keys: X25519KeyPair[] = [];
        while (keys.length < this.#opts.preKeyCount) {
          for (let i = 0; i < 10 && keys.length < this.#opts.preKeyCount; i++) keys.push(generateX25519());
          await new Promise((r) => setImmediate(r));
        }
        this.#create(id, keys);
        this.publishBundle(id);
      })().finally(() => this.#completing.delete(local));
      this.#completing.set(local, p);
    }
    await p;
    return id;
  }

  #create(id: LocalIdentity, preKeys: X25519KeyPair[]): void {
    const spk = this.#newSignedPreKey(id);
    this.#store.transaction(() => {
      if (this.#store.getJson<StateRow>(id.local, K_STATE, SELF)) return;
      this.#store.putJson(id.local, K_SPK, '1', spk);
      preKeys.forEach((k, i) => this.#store.putJson(id.local, K_PREKEY, String(i + 1), row(k)));
      this.#store.putJson(id.local, K_STATE, SELF, { v: 1, nextPreKeyId: preKeys.length + 1, signedPreKeyId: 1, nextSignedPreKeyId: 2 } satisfies StateRow);
      this.#store.put(INDEX_OWNER, K_LOCALS, id.local, '1');
    });
    this.#log.info({ local: id.local, deviceId: id.deviceId }, 'omemo2 keys created');
  }

  #newSignedPreKey(id: OwnIdentity): SignedPreKeyRow {
    const k = generateX25519();
    return { ...row(k), sig: xeddsaSign(id.priv, k.pub).toString('base64'), createdAt: this.#now() };
  }

  // ---- lookups for key exchanges ----

  preKey(local: string, id: number): X25519KeyPair | undefined {
    const r = this.#store.getJson<PreKeyRow>(local, K_PREKEY, String(id));
    return r ? pair(r) : undefined;
  }

  signedPreKey(local: string, id: number): X25519KeyPair | undefined {
    const r = this.#store.getJson<SignedPreKeyRow>(local, K_SPK, String(id));
    return r ? pair(r) : undefined;
  }

  /** A key exchange used prekey `id`: out of the bundle, replaced under a new id, private key kept for the grace period. */
  consumePreKey(local: string, id: number): void {
    const fresh = generateX25519();
    const replaced = this.#store.transaction(() => {
      const r = this.#store.getJson<PreKeyRow>(local, K_PREKEY, String(id));
      const st = this.#store.getJson<StateRow>(local, K_STATE, SELF);
      if (!r || r.usedAt !== undefined || !st) return null;
      this.#store.putJson(local, K_PREKEY, String(id), { ...r, usedAt: this.#now() } satisfies PreKeyRow);
      this.#store.putJson(local, K_PREKEY, String(st.nextPreKeyId), row(fresh));
      this.#store.putJson(local, K_STATE, SELF, { ...st, nextPreKeyId: st.nextPreKeyId + 1 });
      return st;
    });
    if (!replaced) return;
    this.#bundles.replaced(local, replaced, id, { id: replaced.nextPreKeyId, pub: fresh.pub });
    this.#log.debug({ local, preKeyId: id }, 'omemo2 prekey consumed and replaced');
    this.#republishSoon(local);
  }

  /**
   * The bundle is published again once the current work is done (after the commit that consumed the
   * prekey, and not on the message's path), once for a burst of key exchanges to the same JID. A
   * crash before it leaves the old bundle published: the next start compares and republishes
   * (#publishIfChanged), and the consumed prekey still works for its grace period meanwhile.
   */
  #republishSoon(local: string): void {
    if (this.#republish.has(local)) return;
    this.#republish.add(local);
    if (this.#republish.size === 1) setImmediate(() => this.#republishNow());
  }

  #republishNow(): void {
    const locals = [...this.#republish];
    this.#republish.clear();
    for (const local of locals) {
      const id = this.#cache.get(local);
      if (!id) continue;
      try {
        this.publishBundle(id);
      } catch (e) {
        this.#log.warn({ local, err: e instanceof Error ? { type: e.name, message: e.message } : 'non-error' }, 'omemo2 bundle not republished');
      }
    }
  }

  // ---- publishing ----

  bundle(id: LocalIdentity): PeerBundle {
    const st = this.#store.getJson<StateRow>(id.local, K_STATE, SELF)!;
    const cached = this.#bundles.get(id.local, st);
    if (cached) return cached;
    const spk = this.#store.getJson<SignedPreKeyRow>(id.local, K_SPK, String(st.signedPreKeyId))!;
    const preKeys = unusedPreKeys(this.#store, id.local);
    const bundle: PeerBundle = { ik: id.ik, spk: { id: st.signedPreKeyId, pub: Buffer.from(spk.pub, 'base64'), sig: Buffer.from(spk.sig, 'base64') }, preKeys };
    this.#bundles.set(id.local, bundle, st);
    return bundle;
  }

  publishBundle(id: LocalIdentity): void {
    this.#pubsub.publish(id.local, NODE_BUNDLES, String(id.deviceId), buildBundle(this.bundle(id)), { accessModel: 'open', maxItems: 'max' });
  }

  #publishIfChanged(id: LocalIdentity): void {
    this.#publishListIfChanged(id);
    if (!this.hasBundle(id.local)) return;
    const bundle = buildBundle(this.bundle(id));
    const have = this.#pubsub.localItems(id.local, NODE_BUNDLES).find((i) => i.id === String(id.deviceId))?.payload.toString();
    if (have !== bundle.toString()) this.publishBundle(id);
  }

  /** The device list, with the hosted JID's label (see buildDeviceList for why it is not signed). */
  #publishListIfChanged(id: LocalIdentity): void {
    const label = this.#label(id.local);
    const list = buildDeviceList([id.deviceId], label ? new Map([[id.deviceId, label]]) : undefined);
    if (this.#pubsub.localItems(id.local, NODE_DEVICES)[0]?.payload.toString() !== list.toString()) {
      this.#pubsub.publish(id.local, NODE_DEVICES, ITEM_CURRENT, list, { accessModel: 'open' });
    }
  }

  // ---- upkeep ----

  async rotateSignedPreKey(local: string, force = false): Promise<boolean> {
    const st = this.#store.getJson<StateRow>(local, K_STATE, SELF);
    if (!st) return false; // made with the bundle, not here
    const id = await this.ensure(local);
    const now = this.#now();
    const period = this.#opts.signedPreKeyRotationMs;
    pruneRetiredSignedPreKeys(this.#store, local, now, period);
    const cur = this.#store.getJson<SignedPreKeyRow>(local, K_SPK, String(st.signedPreKeyId));
    if (!force && cur && now - cur.createdAt < period) return false;
    const spk = this.#newSignedPreKey(id);
    this.#store.transaction(() => {
      if (cur) this.#store.putJson(local, K_SPK, String(st.signedPreKeyId), { ...cur, retiredAt: now });
      this.#store.putJson(local, K_SPK, String(st.nextSignedPreKeyId), spk);
      this.#store.putJson(local, K_STATE, SELF, { ...st, signedPreKeyId: st.nextSignedPreKeyId, nextSignedPreKeyId: st.nextSignedPreKeyId + 1 });
    });
    this.#log.info({ local, signedPreKeyId: st.nextSignedPreKeyId }, 'omemo2 signed prekey rotated');
    this.publishBundle(id);
    return true;
  }

  prunePreKeys(local: string, deletableBefore: number): number {
    return pruneUsedPreKeys(this.#store, local, deletableBefore);
  }

  preKeyIds(local: string): { unused: number[]; used: number[] } {
    return preKeyIds(this.#store, local);
  }
}
