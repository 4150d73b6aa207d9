// How the gateway around the XEP-0027 engine uses it: hosted JIDs sign their presence; contacts'
// signed presence is checked against their registered key (a mismatch is told to them, once a day
// per key); and one key registry serves both the chat commands and the admin API.
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../../log.js';
import type { ContactStore } from '../../keystore/contact-store.js';
import type { PresenceService } from '../../component/presence.js';
import type { PgpEngine } from './engine.js';
import { presenceSignature, signedPresenceElement } from './wire.js';

export interface PgpKeyRegistry {
  publicKey(local: string): Promise<{ armored: string; fingerprint: string }>;
  register(contact: string, armored: string, opts: { viaAdmin: boolean }): Promise<{ fingerprint: string }>;
  /** Removes the contact's key; false when none was registered. */
  remove(contact: string): Promise<boolean>;
}

export function pgpKeyRegistry(pgp: PgpEngine, contacts: ContactStore): PgpKeyRegistry {
  return {
    publicKey: async (local) => ({ armored: await pgp.publicKeyArmored(local), fingerprint: (await pgp.identity(local)).pgp!.fingerprint }),
    register: async (contact, armored, opts) => ({ fingerprint: await pgp.registerContactKey(contact, armored, opts) }),
    remove: async (contact) => {
      if (!contacts.get(contact)?.pgpKey) return false;
      await pgp.removeContactKey(contact);
      return true;
    },
  };
}

export function hookSignedPresence(
  pgp: PgpEngine,
  deps: { presence: PresenceService; contacts: ContactStore; domain: string; send: (el: Element) => Promise<void>; log: Logger },
): void {
  deps.presence.addExtras(async (local, status) => [signedPresenceElement(await pgp.signPresence(local, status))]);
  const reported = new LRUCache<string, true>({ max: 10000, ttl: 86400_000 });

  /** Tells a contact, once a day per key, that their signed presence does not match their registration. */
  async function check(local: string, full: string, sig: { status: string; signed: string }): Promise<void> {
    const contact = full.split('/')[0]!;
    const check = await pgp.checkPresence(contact, sig.status, sig.signed);
    // Unreadable signatures name no key to tell anyone about; a stale one is a replay, not a mismatch.
    if ((check.ok && check.matchesRegistered) || check.reason === 'malformed' || check.reason === 'duplicate') return;
    const key = `${contact}\0${check.keyId ?? '?'}`;
    if (reported.has(key)) return;
    reported.set(key, true);
    const registered = deps.contacts.get(contact)?.pgpFingerprint;
    const text = registered
      ? `Your signed presence (to ${local}) was made with OpenPGP key ${check.keyId ?? 'unknown'}, but the key registered for you is ${registered}. Messages from the gateway are encrypted to the registered key. Send "register" with your current public key to change it.`
      : `Your presence (to ${local}) is signed with OpenPGP key ${check.keyId ?? 'unknown'}, but no key is registered for you, so proxies cannot encrypt to you. Send "register" followed by your armored public key to ${deps.domain}.`;
    await deps.send(xml('message', { from: deps.domain, to: full, type: 'chat', id: `pgpchk-${Date.now().toString(36)}` }, xml('body', {}, text)));
  }

  deps.presence.addListener({
    contactPresence: (local, full, stanza) => {
      const sig = presenceSignature(stanza);
      if (!sig) return;
      check(local, full, sig).catch((err: unknown) => deps.log.warn({ err, contact: full.split('/')[0] }, 'signed presence check failed'));
    },
  });
}
