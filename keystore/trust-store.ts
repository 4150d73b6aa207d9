// Trust in contacts' devices and keys, held per (contact bare JID, protocol, identity fingerprint):
// a device id that shows up with a new key is a new, untrusted entry, never the old trust inherited.
// Policies (bridge.trust):
//   btbv   blind trust before verification: new keys are trusted while none of the contact's keys
//          for that protocol has been verified; once one has, new keys wait for verification.
//   tofu   the first key(s) seen for a contact are trusted, later new ones wait.
//   manual every new key waits for an admin.
// Whatever the policy, a key first seen under one contact that shows up under another (another
// user of the domain presenting someone's identity key, e.g. a replayed OMEMO PreKey message) is
// untrusted there: a key is one person's, and no policy may trust it blindly for a second JID.
import { LRUCache } from 'lru-cache';
import type { Keystore } from './keystore.js';
import type { TrustPolicy } from '../config.js';

export type TrustLevel = 'verified' | 'trusted' | 'untrusted' | 'distrusted';
export const TRUST_LEVELS: readonly TrustLevel[] = ['verified', 'trusted', 'untrusted', 'distrusted'];

/** Levels we may encrypt to. */
export const isUsable = (t: TrustLevel): boolean => t === 'verified' || t === 'trusted';

export interface DeviceRecord {
  contact: string;
  protocol: string;
  fingerprint: string;
  deviceId: string;
  trust: TrustLevel;
  active: boolean;
  firstSeen: number;
  lastSeen: number;
}

interface Row {
  contact: string;
  protocol: string;
  fingerprint: string;
  device_id: string;
  trust: TrustLevel;
  active: number;
  first_seen: number;
  last_seen: number;
}

const toRecord = (r: Row): DeviceRecord => ({
  contact: r.contact,
  protocol: r.protocol,
  fingerprint: r.fingerprint,
  deviceId: r.device_id,
  trust: r.trust,
  active: r.active === 1,
  firstSeen: r.first_seen,
  lastSeen: r.last_seen,
});

/** Whether an identity key is known under another contact (index devices_by_fingerprint, migration 6). */
export const ELSEWHERE_SQL = 'SELECT 1 AS one FROM devices WHERE protocol = ? AND fingerprint = ? AND contact <> ? LIMIT 1';

export class TrustStore {
  readonly #ks: Keystore;
  readonly policy: TrustPolicy;
  readonly #get;
  readonly #forContact;
  readonly #forProtocol;
  readonly #insert;
  readonly #touch;
  readonly #setTrust;
  readonly #setActive;
  readonly #counts;
  readonly #elsewhere;
  /** Hot path cache: (contact, protocol, fingerprint) -> level; invalidated on every write. */
  /** Bounded: a miss is one indexed read. */
  readonly #cache = new LRUCache<string, TrustLevel>({ max: 20_000 });

  constructor(ks: Keystore, policy: TrustPolicy) {
    this.#ks = ks;
    this.policy = policy;
    const db = ks.db;
    this.#get = db.prepare<[string, string, string], Row>('SELECT * FROM devices WHERE contact = ? AND protocol = ? AND fingerprint = ?');
    this.#forContact = db.prepare<[string], Row>('SELECT * FROM devices WHERE contact = ? ORDER BY protocol, first_seen');
    this.#forProtocol = db.prepare<[string, string], Row>('SELECT * FROM devices WHERE contact = ? AND protocol = ? ORDER BY first_seen');
    this.#insert = db.prepare(
      'INSERT INTO devices (contact, protocol, fingerprint, device_id, trust, active, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, 1, ?, ?)',
    );
    this.#touch = db.prepare('UPDATE devices SET device_id = ?, active = 1, last_seen = ? WHERE contact = ? AND protocol = ? AND fingerprint = ?');
    this.#setTrust = db.prepare('UPDATE devices SET trust = ? WHERE contact = ? AND protocol = ? AND fingerprint = ?');
    this.#setActive = db.prepare('UPDATE devices SET active = ? WHERE contact = ? AND protocol = ? AND device_id = ?');
    this.#elsewhere = db.prepare<[string, string, string], { one: number }>(ELSEWHERE_SQL);
    this.#counts = db.prepare<[], { protocol: string; trust: TrustLevel; n: number }>(
      'SELECT protocol, trust, count(*) AS n FROM devices WHERE active = 1 GROUP BY protocol, trust',
    );
  }

  /**
   * Records that `contact` uses `fingerprint` (as `deviceId`) and returns its trust, deciding it by
   * the policy when the key is new.
   */
  observe(contact: string, protocol: string, deviceId: string, fingerprint: string, now = Date.now()): TrustLevel {
    const k = `${contact}\0${protocol}\0${fingerprint}`;
    const cached = this.#cache.get(k);
    if (cached !== undefined) return cached;
    return this.#ks.transaction(() => {
      const row = this.#get.get(contact, protocol, fingerprint);
      if (row) {
        if (row.device_id !== deviceId || row.active !== 1) this.#touch.run(deviceId, now, contact, protocol, fingerprint);
        this.#cache.set(k, row.trust);
        return row.trust;
      }
      const known = this.#forProtocol.all(contact, protocol);
      const trust = this.#elsewhere.get(protocol, fingerprint, contact) ? 'untrusted' : this.#decide(known, deviceId);
      this.#insert.run(contact, protocol, fingerprint, deviceId, trust, now, now);
      this.#cache.set(k, trust);
      return trust;
    });
  }

  #decide(known: Row[], deviceId: string): TrustLevel {
    // The same device id with another key: never inherit trust silently.
    if (known.some((r) => r.device_id === deviceId)) return 'untrusted';
    switch (this.policy) {
      case 'manual':
        return 'untrusted';
      case 'tofu':
        return known.length === 0 ? 'trusted' : 'untrusted';
      case 'btbv':
        return known.some((r) => r.trust === 'verified') ? 'untrusted' : 'trusted';
    }
  }

  get(contact: string, protocol: string, fingerprint: string): DeviceRecord | undefined {
    const r = this.#get.get(contact, protocol, fingerprint);
    return r ? toRecord(r) : undefined;
  }

  list(contact: string, protocol?: string): DeviceRecord[] {
    const rows = protocol ? this.#forProtocol.all(contact, protocol) : this.#forContact.all(contact);
    return rows.map(toRecord);
  }

  /** Sets trust for a known key; returns false if the key is unknown. */
  set(contact: string, protocol: string, fingerprint: string, trust: TrustLevel): boolean {
    this.#cache.clear();
    return this.#setTrust.run(trust, contact, protocol, fingerprint).changes > 0;
  }

  /** Marks the contact's devices of `protocol` active exactly when their id is in `activeIds`. */
  syncActive(contact: string, protocol: string, activeIds: Iterable<string>): void {
    const ids = new Set(activeIds);
    this.#ks.transaction(() => {
      for (const r of this.#forProtocol.all(contact, protocol)) {
        const active = ids.has(r.device_id) ? 1 : 0;
        if (active !== r.active) this.#setActive.run(active, contact, protocol, r.device_id);
      }
    });
    this.#cache.clear();
  }

  /** Active devices by protocol and trust level, for metrics. */
  counts(): Array<{ protocol: string; trust: TrustLevel; n: number }> {
    return this.#counts.all();
  }
}
