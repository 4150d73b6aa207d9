// Contacts' registered XEP-0027 public keys (ContactStore.pgpKey), parsed once per armored text and
// re-checked for expiry on every use, since a key valid at registration can expire later.
import type * as openpgp from 'openpgp';
import { LRUCache } from 'lru-cache';
import type { ContactStore } from '../../keystore/contact-store.js';
import { keyIdsOf, PgpKeyError, readPublicKey, type PgpKeyProblem } from './keys.js';

export interface ContactKey {
  key: openpgp.PublicKey;
  fingerprint: string;
  /** The primary key id: the `deviceId` under which trust is recorded. */
  keyId: string;
  keyIds: ReadonlySet<string>;
  canEncrypt: boolean;
  expires: Date | null;
}

export type ContactKeyLookup =
  | { status: 'none' }
  | { status: 'unusable'; problem: PgpKeyProblem }
  | { status: 'ok'; key: ContactKey };

type Parsed = { ok: ContactKey } | { problem: PgpKeyProblem };

export class ContactKeys {
  readonly #contacts: ContactStore;
  readonly #now: () => number;
  readonly #parsed = new LRUCache<string, Parsed>({ max: 5000 });

  constructor(contacts: ContactStore, now: () => number) {
    this.#contacts = contacts;
    this.#now = now;
  }

  async get(jid: string): Promise<ContactKeyLookup> {
    const armored = this.#contacts.get(jid)?.pgpKey;
    if (!armored) return { status: 'none' };
    let parsed = this.#parsed.get(armored);
    if (!parsed) {
      parsed = await this.#parse(armored);
      this.#parsed.set(armored, parsed);
    }
    if ('problem' in parsed) return { status: 'unusable', problem: parsed.problem };
    const k = parsed.ok;
    if (k.expires && k.expires.getTime() <= this.#now()) return { status: 'unusable', problem: 'expired' };
    return { status: 'ok', key: k };
  }

  async #parse(armored: string): Promise<Parsed> {
    try {
      const { key, info } = await readPublicKey(armored, new Date(this.#now()));
      return {
        ok: {
          key,
          fingerprint: info.fingerprint,
          keyId: info.keyId,
          keyIds: new Set(keyIdsOf(key)),
          canEncrypt: info.canEncrypt,
          expires: info.expires,
        },
      };
    } catch (e) {
      if (e instanceof PgpKeyError) return { problem: e.problem };
      return { problem: 'invalid' };
    }
  }
}
