// Contacts' OMEMO device lists and bundles, read from their PEP services (XEP-0384 v0.3.0 §"Discovering
// peer support"). Lists are cached (LRU, refreshed after a TTL, at once on a +notify event or a message
// from a device we do not know); bundles are fetched only right before a session is built. Parallel
// reads of the same node are coalesced into one request. Cache entries are keyed by contact: a device
// list is public (published with access model open), whichever hosted JID asked for it.
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { PubsubPort } from '../engine.js';
import type { TrustStore } from '../../keystore/trust-store.js';
import { errorSummary } from '../../log.js';
import { GatewayError, KeysNotVisibleError } from '../../errors.js';
import { perMinute, type KeyedBuckets } from '../../limits.js';
import type Element from 'ltx/lib/Element.js';
import { NODE_DEVICELIST, PROTOCOL, bundleNode, type OmemoOptions } from './constants.js';
import { parseBundle, parseDeviceList, type Bundle } from './wire.js';

/**
 * A device's label as published (OMEMO 2): the text and, from XEP-0384 0.9 on, the identity key's
 * signature over its UTF-8 bytes (null when the list carries none, as 0.8 clients publish it).
 */
export interface DeviceLabel {
  label: string;
  sig: Buffer | null;
}

/** Where a protocol version keeps device lists and bundles, and how it reads them (legacy by default). */
export interface DeviceListSpec<B> {
  /** TrustStore protocol label. */
  protocol: string;
  listNode: string;
  parseList(items: Element[]): number[];
  /** The labels a list carries, unverified (OMEMO 2 only), kept beside the ids. */
  parseLabels?(items: Element[]): ReadonlyMap<number, DeviceLabel>;
  /** Reads one device's bundle node/item: the <item>s, or null when there is none. */
  fetchBundle(pubsub: PubsubPort, local: string, contact: string, deviceId: number): Promise<Element[] | null>;
  parseBundle(items: Element[], deviceId: number): B | null;
}

export const LEGACY_DEVICE_LISTS: DeviceListSpec<Bundle> = {
  protocol: PROTOCOL,
  listNode: NODE_DEVICELIST,
  parseList: parseDeviceList,
  fetchBundle: (pubsub, local, contact, deviceId) => pubsub.fetch(local, contact, bundleNode(deviceId)),
  parseBundle: (items) => parseBundle(items),
};

interface ListEntry {
  /** null: the contact has no device list node (no OMEMO). */
  ids: number[] | null;
  fetchedAt: number;
  labels?: ReadonlyMap<number, DeviceLabel>;
  /** Why ids is null for one hosted JID: its read was refused in a way that may mean "none" (plain forbidden). */
  unreadable?: { local: string; error: KeysNotVisibleError };
}

export class DeviceLists<B = Bundle> {
  readonly #pubsub: PubsubPort;
  readonly #trust: TrustStore;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #opts: OmemoOptions;
  readonly #lists: LRUCache<string, ListEntry>;
  readonly #inflight = new Map<string, Promise<number[] | null>>();
  readonly #spec: DeviceListSpec<B>;
  readonly #bundles = new Map<string, Promise<B | null>>();
  /** Bundles that could not be read (missing, unusable, timeout), not asked for again for a while. */
  readonly #failed: LRUCache<string, { at: number; error: unknown }>;
  /** Bundle fetches per contact (limits.bundle_fetches_per_contact_per_minute). */
  readonly #bundleBudget: KeyedBuckets;
  /** When each contact's list was last refreshed in the background (at most one per listRefreshIntervalMs). */
  readonly #refreshedAt: LRUCache<string, number>;
  /** Called when a bundle fetch is refused by the per-contact budget (metrics). */
  onLimited: () => void = () => undefined;
  readonly #background = new Set<Promise<unknown>>();
  /** Bundle and list reads sent, by node kind: lets tests check when we touch the network. */
  readonly fetches = { lists: 0, bundles: 0, refused: 0 };

  constructor(pubsub: PubsubPort, trust: TrustStore, log: Logger, now: () => number, opts: OmemoOptions, spec?: DeviceListSpec<B>) {
    this.#spec = spec ?? (LEGACY_DEVICE_LISTS as unknown as DeviceListSpec<B>);
    this.#pubsub = pubsub;
    this.#trust = trust;
    this.#log = log;
    this.#now = now;
    this.#opts = opts;
    this.#lists = new LRUCache({ max: opts.peerCacheEntries });
    this.#failed = new LRUCache({ max: opts.peerCacheEntries });
    this.#refreshedAt = new LRUCache({ max: opts.peerCacheEntries });
    this.#bundleBudget = perMinute(opts.bundleFetchesPerMinute, opts.peerCacheEntries);
  }

  /** Entries of the per-contact maps, for gateway_cache_entries. */
  sizes(): Record<string, number> {
    return { omemo_device_lists: this.#lists.size, omemo_failed_bundles: this.#failed.size, omemo_bundle_budget: this.#bundleBudget.size, omemo_list_refreshes: this.#refreshedAt.size };
  }

  /** The cached list (even if stale), undefined if never read. */
  /** The labels of the contact's cached list (unverified), if it carried any. */
  labels(contact: string): ReadonlyMap<number, DeviceLabel> | undefined {
    return this.#lists.get(contact)?.labels;
  }

  cached(contact: string): number[] | null | undefined {
    return this.#lists.get(contact)?.ids;
  }

  /**
   * The contact's device ids (null: no OMEMO). A fresh cached list is returned as is; a stale one is
   * returned too while a refresh runs in the background (a slow contact server must not hold up a
   * send; changes arrive by +notify anyway). Without a list, or with `force`, we wait for the read;
   * it rejects on network failure only when nothing is cached.
   */
  async get(local: string, contact: string, force = false): Promise<number[] | null> {
    const e = this.#lists.get(contact);
    if (e && !force) {
      const ttl = e.ids === null ? this.#opts.missingListTtlMs : this.#opts.deviceListTtlMs;
      if (this.#now() - e.fetchedAt < ttl) {
        // The hosted JID whose read was refused is told so again (and asks again), others see none.
        if (e.ids === null && e.unreadable?.local === local) throw e.unreadable.error;
        return e.ids;
      }
      if (e.ids !== null) {
        this.refreshInBackground(local, contact);
        return e.ids;
      }
    }
    try {
      return await this.#fetch(local, contact);
    } catch (err) {
      // A refusal for this hosted JID is said as such, not answered with what another one read.
      if (!e || err instanceof KeysNotVisibleError) throw err;
      this.#log.warn({ contact, err: errorSummary(err) }, 'omemo device list refresh failed; using the cached one');
      return e.ids;
    }
  }

  #fetch(local: string, contact: string): Promise<number[] | null> {
    let p = this.#inflight.get(contact);
    if (!p) {
      this.fetches.lists++;
      p = this.#pubsub
        .fetch(local, contact, this.#spec.listNode)
        .then((items) => {
          const ids = items === null ? null : this.#spec.parseList(items);
          this.set(contact, ids, items === null ? undefined : this.#spec.parseLabels?.(items));
          return ids;
        }, (err: unknown) => {
          // Refused in a way that may mean "there is none" (Prosody's plain forbidden): kept as no
          // list, as that answer always was, unless a list read before is known. A refusal that
          // says the list is there (certain) is not cached: another hosted JID may be approved.
          if (err instanceof KeysNotVisibleError && !err.certain && !this.#lists.get(contact)?.ids) {
            this.set(contact, null);
            this.#lists.get(contact)!.unreadable = { local, error: err };
          }
          throw err;
        })
        .finally(() => this.#inflight.delete(contact));
      this.#inflight.set(contact, p);
    }
    return p;
  }

  /** Re-reads the list without blocking the caller (a message came from a device we do not know). */
  refreshInBackground(local: string, contact: string): void {
    const p = this.#fetch(local, contact).catch((err) =>
      this.#log.debug({ contact, err: errorSummary(err) }, 'omemo device list refresh failed'),
    );
    this.#background.add(p);
    const done = () => this.#background.delete(p);
    void p.then(done, done);
  }

  /**
   * A message came from a device id not in the contact's list: re-read the list, at most once per
   * contact per listRefreshIntervalMs (junk device ids arrive by the thousand).
   */
  refreshForUnknownDevice(local: string, contact: string): void {
    const last = this.#refreshedAt.get(contact);
    if (last !== undefined && this.#now() - last < this.#opts.listRefreshIntervalMs) return;
    this.#refreshedAt.set(contact, this.#now());
    this.refreshInBackground(local, contact);
  }

  /** Waits for background refreshes (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.#background.size > 0) await Promise.allSettled([...this.#background]);
  }

  /** A new list (fetched or from a +notify event): cached, and devices that left it marked inactive. */
  set(contact: string, ids: number[] | null, labels?: ReadonlyMap<number, DeviceLabel>): void {
    const prev = this.#lists.get(contact)?.ids;
    this.#lists.set(contact, { ids, fetchedAt: this.#now(), ...(labels && labels.size > 0 && { labels }) });
    const now = new Set((ids ?? []).map(String));
    if (prev !== undefined && sameIds(prev, ids)) return;
    for (const k of [...this.#failed.keys()]) if (k.startsWith(`${contact}\0`)) this.#failed.delete(k);
    // Only touch the TrustStore when a known device's active flag really changes (its sync clears
    // the trust cache).
    const stale = this.#trust.list(contact, this.#spec.protocol).some((r) => r.active !== now.has(r.deviceId));
    if (stale) this.#trust.syncActive(contact, this.#spec.protocol, now);
  }

  /**
   * The device's bundle from its node, or null when there is none or it is unusable. Coalesced; a
   * failure is remembered for `missingListTtlMs` (answered from memory, so a dead device does not
   * hold up every message) unless the contact's device list changes.
   */
  bundle(local: string, contact: string, deviceId: number): Promise<B | null> {
    const key = `${contact}\0${deviceId}`;
    const failed = this.#failed.get(key);
    if (failed && this.#now() - failed.at < this.#opts.missingListTtlMs) {
      return failed.error === null ? Promise.resolve(null) : Promise.reject(failed.error);
    }
    let p = this.#bundles.get(key);
    if (!p) {
      if (this.#bundleBudget.take(contact, this.#now()) > 0) {
        this.fetches.refused++;
        this.onLimited();
        return Promise.reject(new GatewayError('rate_limited', 'Too many OMEMO bundle fetches for this contact; retry later.'));
      }
      this.fetches.bundles++;
      p = this.#spec
        .fetchBundle(this.#pubsub, local, contact, deviceId)
        .then(
          (items) => {
            const b = items === null ? null : this.#spec.parseBundle(items, deviceId);
            if (b) this.#failed.delete(key);
            else this.#failed.set(key, { at: this.#now(), error: null });
            return b;
          },
          (error: unknown) => {
            // Not remembered when it is only unreadable for this hosted JID (the cache is per
            // contact). The device is listed, so its bundle is there: closed to us for certain.
            if (!(error instanceof KeysNotVisibleError)) {
              this.#failed.set(key, { at: this.#now(), error });
              throw error;
            }
            throw error.certain ? error : new KeysNotVisibleError(true, `${contact} lets only approved contacts read the bundle of device ${deviceId}: ${local} needs ${contact}'s approval (a presence subscription).`, { cause: error });
          },
        )
        .finally(() => this.#bundles.delete(key));
      this.#bundles.set(key, p);
    }
    return p;
  }
}

function sameIds(a: number[] | null, b: number[] | null): boolean {
  if (a === null || b === null) return a === b;
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}
