// Contacts' OX public keys, read from their PEP service (XEP-0373 §4.3): the metadata node lists
// fingerprints, each key comes from its own node. Lists are cached and refreshed after a TTL, at once
// on a +notify event (with or without payload: XEP-0373 nodes are often deliver_payloads=false) and
// when a message is signed by a key we do not know. Parsed keys are kept by fingerprint, so a
// refresh re-reads only the metadata node unless forced. A key is usable only if it is valid now,
// its fingerprint is the one listed, and a user ID names the contact (`xmpp:<bare JID>`).
import type * as openpgp from 'openpgp';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Element, PubsubPort } from '../engine.js';
import type { TrustStore } from '../../keystore/trust-store.js';
import { errorSummary } from '../../log.js';
import { LIMITS } from '../../limits.js';
import { keyIdsOf, PgpKeyError, readPublicKey, uidMatchesJid } from '../pgp/keys.js';
import { keyNode, NODE_METADATA, parseMetadata, parsePubkey } from './wire.js';

export const PROTOCOL = 'ox';
/** Keys read per contact: a metadata node listing more (a hostile or broken one) is cut here. */
export const MAX_KEYS_PER_CONTACT = 16;

export interface OxContactKey {
  key: openpgp.PublicKey;
  /** 40 uppercase hex: also the `deviceId` under which trust is recorded. */
  fingerprint: string;
  keyIds: ReadonlySet<string>;
  canEncrypt: boolean;
  expires: Date | null;
}

interface Entry {
  /** null: the contact publishes no OX metadata node. */
  keys: OxContactKey[] | null;
  /** Listed fingerprints that could not be used, and why (for logs and diagnostics). */
  problems: Record<string, string>;
  fetchedAt: number;
}

export interface ContactKeyOptions {
  ttlMs: number;
  missingTtlMs: number;
  /** A forced re-read (unknown signer) happens at most this often per contact. */
  minRefreshMs: number;
  /** Contacts (and their parsed keys) kept in memory (limits.peer_cache_entries). */
  cacheEntries: number;
}

export const DEFAULT_CONTACT_KEY_OPTIONS: ContactKeyOptions = { ttlMs: 3600_000, missingTtlMs: 60_000, minRefreshMs: 5_000, cacheEntries: LIMITS.peer_cache_entries.value };

export class OxContactKeys {
  readonly #pubsub: PubsubPort;
  readonly #trust: TrustStore;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #opts: ContactKeyOptions;
  readonly #lists: LRUCache<string, Entry>;
  /** Parsed keys by `contact\0fingerprint`. */
  readonly #keys: LRUCache<string, { key: OxContactKey } | { problem: string }>;
  readonly #inflight = new Map<string, Promise<Entry>>();
  /** Network reads, by node kind (tests check when we touch the network). */
  readonly fetches = { metadata: 0, keys: 0 };

  constructor(pubsub: PubsubPort, trust: TrustStore, log: Logger, now: () => number, opts: ContactKeyOptions = DEFAULT_CONTACT_KEY_OPTIONS) {
    this.#pubsub = pubsub;
    this.#trust = trust;
    this.#log = log;
    this.#now = now;
    this.#opts = opts;
    this.#lists = new LRUCache({ max: opts.cacheEntries });
    this.#keys = new LRUCache({ max: opts.cacheEntries });
  }

  /**
   * The contact's usable keys (null: no OX). Cached; `force` re-reads the metadata and every key node
   * (no more often than minRefreshMs). A failed read falls back to the cached list if there is one.
   */
  async get(local: string, contact: string, force = false): Promise<OxContactKey[] | null> {
    const e = this.#lists.get(contact);
    if (e) {
      const age = this.#now() - e.fetchedAt;
      const ttl = e.keys === null ? this.#opts.missingTtlMs : this.#opts.ttlMs;
      if (force ? age < this.#opts.minRefreshMs : age < ttl) return e.keys;
    }
    try {
      return (await this.#fetch(local, contact, force)).keys;
    } catch (err) {
      if (!e) throw err;
      this.#log.warn({ contact, err: errorSummary(err) }, 'ox key refresh failed; using the cached keys');
      return e.keys;
    }
  }

  problems(contact: string): Record<string, string> {
    return this.#lists.get(contact)?.problems ?? {};
  }

  /**
   * A +notify event on the contact's metadata node. With a payload the listed keys are read (those
   * not known yet); without one (deliver_payloads=false) the node itself is read.
   */
  async onMetadataEvent(local: string, contact: string, items: Element[]): Promise<void> {
    const hasPayload = items.some((i) => i.getChildElements().length > 0);
    try {
      if (hasPayload) this.#store(contact, await this.#resolve(local, contact, parseMetadata(items).map((m) => m.fingerprint), true));
      else await this.#fetch(local, contact, true);
    } catch (err) {
      this.#log.info({ contact, err: errorSummary(err) }, 'ox key event not applied');
    }
  }

  /** A +notify event on one key node: that key is read again when next needed. */
  forgetKey(contact: string, fingerprint: string): void {
    this.#keys.delete(`${contact}\0${fingerprint}`);
    const e = this.#lists.get(contact);
    if (e) e.fetchedAt = 0;
  }

  #fetch(local: string, contact: string, rereadKeys: boolean): Promise<Entry> {
    let p = this.#inflight.get(contact);
    if (!p) {
      this.fetches.metadata++;
      p = this.#pubsub
        .fetch(local, contact, NODE_METADATA, { maxItems: 1 })
        .then(async (items) => {
          const entry = items === null ? { keys: null, problems: {}, fetchedAt: this.#now() } : await this.#resolve(local, contact, parseMetadata(items).map((m) => m.fingerprint), rereadKeys);
          this.#store(contact, entry);
          return entry;
        })
        .finally(() => this.#inflight.delete(contact));
      this.#inflight.set(contact, p);
    }
    return p;
  }

  async #resolve(local: string, contact: string, fingerprints: string[], reread: boolean): Promise<Entry> {
    const keys: OxContactKey[] = [];
    const problems: Record<string, string> = {};
    if (fingerprints.length > MAX_KEYS_PER_CONTACT) {
      this.#log.warn({ contact, listed: fingerprints.length, read: MAX_KEYS_PER_CONTACT }, 'ox metadata lists too many keys; reading the first ones only');
    }
    for (const fpr of fingerprints.slice(0, MAX_KEYS_PER_CONTACT)) {
      const k = `${contact}\0${fpr}`;
      let parsed = reread ? undefined : this.#keys.get(k);
      if (!parsed) {
        parsed = await this.#readKey(local, contact, fpr);
        this.#keys.set(k, parsed);
      }
      if ('problem' in parsed) problems[fpr] = parsed.problem;
      else if (parsed.key.expires && parsed.key.expires.getTime() <= this.#now()) problems[fpr] = 'expired';
      else keys.push(parsed.key);
    }
    if (Object.keys(problems).length > 0) this.#log.info({ contact, problems }, 'ox keys of contact not usable');
    return { keys, problems, fetchedAt: this.#now() };
  }

  async #readKey(local: string, contact: string, fpr: string): Promise<{ key: OxContactKey } | { problem: string }> {
    this.fetches.keys++;
    let items: Element[] | null;
    try {
      items = await this.#pubsub.fetch(local, contact, keyNode(fpr), { maxItems: 1 });
    } catch (err) {
      return { problem: `key node unreadable (${err instanceof Error ? err.message : 'error'})` };
    }
    const bytes = items && parsePubkey(items);
    if (!bytes) return { problem: 'no key in the key node' };
    try {
      // XEP-0373 wants the binary key; an armored one inside the base64 (what `/ox announce` of an
      // armored file gives in Profanity) is read too.
      const asText = Buffer.from(bytes.subarray(0, 64)).toString('latin1');
      const text = asText.startsWith('-----BEGIN PGP PUBLIC KEY BLOCK-----') ? Buffer.from(bytes).toString('utf8') : Buffer.from(bytes).toString('base64');
      const { key, info } = await readPublicKey(text, new Date(this.#now()));
      if (info.fingerprint !== fpr) return { problem: 'the key node holds another key' };
      if (!info.userIds.some((u) => uidMatchesJid(u, contact))) return { problem: 'no user ID xmpp:<contact>' };
      return { key: { key, fingerprint: info.fingerprint, keyIds: new Set(keyIdsOf(key)), canEncrypt: info.canEncrypt, expires: info.expires } };
    } catch (e) {
      return { problem: e instanceof PgpKeyError ? e.problem : 'invalid' };
    }
  }

  #store(contact: string, entry: Entry): void {
    this.#lists.set(contact, entry);
    const fprs = (entry.keys ?? []).map((k) => k.fingerprint);
    for (const f of fprs) this.#trust.observe(contact, PROTOCOL, f, f, this.#now());
    this.#trust.syncActive(contact, PROTOCOL, fprs);
  }
}
