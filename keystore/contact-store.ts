// Remote contacts as the gateway knows them: the protocol an admin prefers for them, the one they
// last wrote to each hosted JID in, their registered XEP-0027 public key, and whether they are marked as OTR users.
import { LRUCache } from 'lru-cache';
import type { Keystore } from './keystore.js';
import type { ProtocolName } from '../config.js';

export interface ContactRecord {
  jid: string;
  preferredProtocol: ProtocolName | null;
  pgpKey: string | null;
  pgpFingerprint: string | null;
  otr: boolean;
  updatedAt: number;
}

interface Row {
  jid: string;
  preferred_protocol: ProtocolName | null;
  pgp_key: string | null;
  pgp_fingerprint: string | null;
  otr: number;
  updated_at: number;
}

export class ContactStore {
  readonly #get;
  readonly #ensure;
  readonly #setPreferred;
  readonly #setLast;
  readonly #getLast;
  readonly #setPgp;
  readonly #setOtr;
  /**
   * Read on every outbound message (the protocol choice, bridges/outbound.ts), written rarely: the
   * rows as last read, dropped by each write of this store (the only writer). Bounded; a miss is one
   * indexed read. null = no row.
   */
  readonly #contactCache = new LRUCache<string, { row: ContactRecord | null }>({ max: 20_000 });
  readonly #lastCache = new LRUCache<string, { protocol: ProtocolName | null }>({ max: 20_000 });

  constructor(ks: Keystore) {
    const db = ks.db;
    this.#get = db.prepare<[string], Row>('SELECT * FROM contacts WHERE jid = ?');
    this.#ensure = db.prepare('INSERT INTO contacts (jid, updated_at) VALUES (?, ?) ON CONFLICT (jid) DO NOTHING');
    this.#setPreferred = db.prepare('UPDATE contacts SET preferred_protocol = ?, updated_at = ? WHERE jid = ?');
    this.#setLast = db.prepare(
      'INSERT INTO last_protocol (local, remote, protocol, updated_at) VALUES (?, ?, ?, ?) ' +
        'ON CONFLICT (local, remote) DO UPDATE SET protocol = excluded.protocol, updated_at = excluded.updated_at WHERE protocol IS NOT excluded.protocol',
    );
    this.#getLast = db.prepare<[string, string], { protocol: ProtocolName }>('SELECT protocol FROM last_protocol WHERE local = ? AND remote = ?');
    this.#setPgp = db.prepare('UPDATE contacts SET pgp_key = ?, pgp_fingerprint = ?, updated_at = ? WHERE jid = ?');
    this.#setOtr = db.prepare('UPDATE contacts SET otr = ?, updated_at = ? WHERE jid = ?');
  }

  get(jid: string): ContactRecord | undefined {
    let c = this.#contactCache.get(jid);
    if (!c) {
      const r = this.#get.get(jid);
      c = {
        row: r
          ? { jid: r.jid, preferredProtocol: r.preferred_protocol, pgpKey: r.pgp_key, pgpFingerprint: r.pgp_fingerprint, otr: r.otr === 1, updatedAt: r.updated_at }
          : null,
      };
      this.#contactCache.set(jid, c);
    }
    return c.row ? { ...c.row } : undefined;
  }

  setPreferredProtocol(jid: string, protocol: ProtocolName | null): void {
    this.#contactCache.delete(jid);
    this.#ensure.run(jid, Date.now());
    this.#setPreferred.run(protocol, Date.now(), jid);
  }

  /** Remembers the protocol contact `remote` last wrote to hosted JID `local` in (reply in kind). */
  setLastProtocol(local: string, remote: string, protocol: ProtocolName): void {
    const k = `${local}\0${remote}`;
    if (this.#lastCache.get(k)?.protocol === protocol) return;
    this.#lastCache.delete(k);
    this.#setLast.run(local, remote, protocol, Date.now());
  }

  lastProtocol(local: string, remote: string): ProtocolName | null {
    const k = `${local}\0${remote}`;
    let c = this.#lastCache.get(k);
    if (!c) {
      c = { protocol: this.#getLast.get(local, remote)?.protocol ?? null };
      this.#lastCache.set(k, c);
    }
    return c.protocol;
  }

  /** Registers (or with nulls removes) the contact's XEP-0027 public key. */
  setPgpKey(jid: string, armored: string | null, fingerprint: string | null): void {
    this.#contactCache.delete(jid);
    this.#ensure.run(jid, Date.now());
    this.#setPgp.run(armored, fingerprint, Date.now(), jid);
  }

  setOtr(jid: string, otr: boolean): void {
    this.#contactCache.delete(jid);
    this.#ensure.run(jid, Date.now());
    this.#setOtr.run(otr ? 1 : 0, Date.now(), jid);
  }
}
