// XEP-0384 v0.3.0 (legacy OMEMO, eu.siacs.conversations.axolotl): names and defaults.
import { LIMITS } from '../../limits.js';

export const NS_OMEMO = 'eu.siacs.conversations.axolotl';
export const NODE_DEVICELIST = `${NS_OMEMO}.devicelist`;
export const NODE_BUNDLES_PREFIX = `${NS_OMEMO}.bundles:`;
export const bundleNode = (deviceId: number): string => `${NODE_BUNDLES_PREFIX}${deviceId}`;
export const ITEM_CURRENT = 'current';

export const NS_EME = 'urn:xmpp:eme:0';
export const NS_HINTS = 'urn:xmpp:hints';

/** The TrustStore / metrics protocol label. */
export const PROTOCOL = 'omemo';

/** Device ids are random in 1 .. 2^31-1 (XEP-0384). We accept up to 2^32-1 from peers. */
export const MAX_DEVICE_ID = 0x7fffffff;
export const MAX_PEER_DEVICE_ID = 0xffffffff;

export const DEFAULT_FALLBACK_BODY = 'This message is OMEMO-encrypted (XEP-0384); your client cannot read it.';

export interface OmemoOptions {
  /** One-time prekeys in a bundle (XEP-0384: SHOULD 100, MUST NOT be under 20). */
  preKeyCount: number;
  /** Signed prekey rotation period; the previous one is kept for one more period. */
  signedPreKeyRotationMs: number;
  /**
   * A used one-time prekey's private key is deleted only once this long has passed both since it
   * was used and since the last (re)connection, so an offline backlog in which several of a contact's
   * devices picked the same prekey still decrypts.
   */
  preKeyGraceMs: number;
  /** Contacts' device lists are re-read after this long (PEP events refresh them sooner). */
  deviceListTtlMs: number;
  /** "No OMEMO here" (no device list node) is remembered this long. */
  missingListTtlMs: number;
  /** A broken session with one device is repaired (key transport on a new session) at most this often. */
  repairIntervalMs: number;
  /**
   * After this many messages received on one sending chain of a device with no message from us in
   * between, we send an empty message so its ratchet turns (same threshold as python-omemo / OMEMO 2).
   */
  heartbeatAfter: number;
  /** Hosted JIDs' identities kept parsed in memory. */
  identityCacheSize: number;
  /** Session records kept parsed in memory. */
  sessionCacheSize: number;
  /** Bundle fetches per contact per minute (a token bucket): junk device ids must not each cost a query. */
  bundleFetchesPerMinute: number;
  /** A contact's device list is re-read in the background at most this often (unknown device ids). */
  listRefreshIntervalMs: number;
  /** Entries of each per-peer in-memory map (device lists, failed bundles, repairs, heartbeats, buckets). */
  peerCacheEntries: number;
  /** Text of the plaintext <body> fallback (never on key-transport messages). */
  fallbackBody: string;
}

export const DEFAULT_OPTIONS: OmemoOptions = {
  preKeyCount: 100,
  signedPreKeyRotationMs: 7 * 24 * 3600_000,
  preKeyGraceMs: 15 * 60_000,
  deviceListTtlMs: 10 * 60_000,
  missingListTtlMs: 2 * 60_000,
  repairIntervalMs: 10 * 60_000,
  heartbeatAfter: 53,
  identityCacheSize: 10_000,
  sessionCacheSize: 10_000,
  fallbackBody: DEFAULT_FALLBACK_BODY,
  bundleFetchesPerMinute: LIMITS.bundle_fetches_per_contact_per_minute.value,
  listRefreshIntervalMs: 10_000,
  peerCacheEntries: LIMITS.peer_cache_entries.value,
};
