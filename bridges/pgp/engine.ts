// XEP-0027 (legacy OpenPGP) engine: messages whose <body> text is encrypted (and optionally signed)
// with OpenPGP, presence whose <status> text is signed. https://xmpp.org/extensions/xep-0027.html
// Every hosted JID has its own v4 key (user ID `xmpp:<JID as on the wire>`); contacts' keys are
// registered by the `register` chat command or the admin API. See inbound.ts for how each
// signed/unsigned case is judged.
import * as openpgp from 'openpgp';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../../errors.js';
import { isUsable } from '../../keystore/trust-store.js';
import { ReplayStore } from '../../keystore/replay-store.js';
import type { Element, EnginePorts, Encrypted, IdentityFacts, ProtocolEngine, Reachability } from '../engine.js';
import { stripArmor } from './armor.js';
import { FULL_CONFIG, PGP_CONFIG } from './openpgp-config.js';
import { PgpKeyError, readPublicKey, uidMatchesJid, type KeyInfo, type PgpKeyType } from './keys.js';
import { LocalKeys } from './local-keys.js';
import { ContactKeys, type ContactKey } from './contact-keys.js';
import { ReplayGuard } from './replay-guard.js';
import { checkPresence, decryptMessage, type InboundDeps, type PresenceCheck } from './inbound.js';
import { encryptedChildren, NS_ENCRYPTED, NS_SIGNED } from './wire.js';

export type { PresenceCheck } from './inbound.js';
export type { KeyInfo, PgpKeyProblem } from './keys.js';
export { PgpKeyError } from './keys.js';

export interface PgpEngineOptions {
  keyType: PgpKeyType;
  /** Take keys from the `register` chat command even without a user ID naming the sender. */
  allowUnverifiedKeys: boolean;
  /** How long digests of accepted ciphertexts are kept (at least 1 day). */
  replayWindowDays: number;
  /** Refuse unsigned messages ('bad-signature') instead of delivering them as untrusted. Default false. */
  requireSignedMessages?: boolean;
  /** A replay guard shared with another OpenPGP engine (OX): one ciphertext is accepted once, in either. */
  replay?: ReplayGuard;
}

/** The XEP-0027 engine: the ProtocolEngine contract plus signed presence and key registration. */
export interface PgpEngine extends ProtocolEngine {
  readonly id: 'pgp';
  /** Stripped-armor detached signature over exactly `status` ('' when there is no <status>), for <x xmlns='jabber:x:signed'>. */
  signPresence(local: string, status: string): Promise<string>;
  /**
   * Verifies a contact's signed presence against their registered key. A valid signature older
   * than the newest accepted from the contact, or than the replay window, is 'duplicate'. Never throws.
   */
  checkPresence(contact: string, status: string, signedText: string): Promise<PresenceCheck>;
  /** Facts about an armored (or stripped) public key. Throws PgpKeyError (garbage, private, expired, revoked...). */
  inspectPublicKey(armored: string, opts?: { allowPrivate?: boolean }): Promise<KeyInfo>;
  /**
   * Registers `contact`'s public key and returns its fingerprint. From the chat command (not viaAdmin)
   * a user ID `xmpp:<contact>` is required unless allowUnverifiedKeys. An admin's registration counts
   * as verification. Throws PgpKeyError.
   */
  registerContactKey(contact: string, armored: string, opts: { viaAdmin: boolean }): Promise<string>;
  removeContactKey(contact: string): Promise<void>;
  /** The hosted JID's armored public key (created on first use), for the `key` command. */
  publicKeyArmored(local: string): Promise<string>;
}

/**
 * The key without third-party certifications and photo IDs: they are not needed to encrypt or
 * verify, and keys from keyservers can carry hundreds of them.
 */
function minimal(key: openpgp.PublicKey): openpgp.PublicKey {
  for (let i = key.users.length - 1; i >= 0; i--) {
    const u = key.users[i]!;
    if (!u.userID) key.users.splice(i, 1);
    else u.otherCertifications = [];
  }
  return key;
}

export function createPgpEngine(ports: EnginePorts, opts: PgpEngineOptions): PgpEngine {
  const now = () => ports.now();
  const log = ports.log.child({ engine: 'pgp' });
  const keys = new LocalKeys(ports.store, opts.keyType, now, ports.admitIdentity);
  const contactKeys = new ContactKeys(ports.contacts, now);
  const replay = opts.replay ?? new ReplayGuard(new ReplayStore(ports.keystore), 'pgp', opts.replayWindowDays, now);
  replay.prune();
  const inbound: InboundDeps = {
    keys,
    contactKeys,
    replay,
    trust: ports.trust,
    metrics: ports.metrics,
    log,
    now,
    requireSignedMessages: opts.requireSignedMessages ?? false,
    // In memory: after a restart the first valid signature seen is the reference again.
    presenceSeen: new LRUCache<string, number>({ max: 50_000 }),
  };
  const utf8 = (s: string) => new TextEncoder().encode(s);

  /** The contact's key if it may be encrypted to, else the GatewayError to throw. */
  async function sendableKey(peer: string): Promise<ContactKey | GatewayError> {
    const lookup = await contactKeys.get(peer);
    if (lookup.status === 'none') return new GatewayError('no_encryption_available', 'The recipient has no registered OpenPGP (XEP-0027) key.');
    if (lookup.status === 'unusable' || !lookup.key.canEncrypt) {
      return new GatewayError('no_encryption_available', "The recipient's registered OpenPGP key is expired, revoked or cannot encrypt.");
    }
    const ck = lookup.key;
    const trust = ports.trust.observe(peer, 'pgp', ck.keyId, ck.fingerprint, now());
    if (!isUsable(trust)) return new GatewayError('no_trusted_devices', "The recipient's registered OpenPGP key is not trusted.");
    return ck;
  }

  const engine: PgpEngine = {
    id: 'pgp',
    // XEP-0027 defines no disco feature; these namespaces are what some clients look for.
    features: [NS_ENCRYPTED, NS_SIGNED],

    recognizes: (stanza: Element) => stanza.name === 'message' && stanza.getChild('x', NS_ENCRYPTED) !== undefined,

    async ensureIdentity(local) {
      await keys.get(local);
    },

    async identity(local): Promise<IdentityFacts> {
      const k = await keys.get(local);
      return { pgp: { fingerprint: k.fingerprint, public_key: k.publicArmored } };
    },

    async publicKeyArmored(local) {
      return (await keys.get(local)).publicArmored;
    },

    async decrypt(local, stanza) {
      const r = await decryptMessage(inbound, local, stanza);
      return r.ok ? { ok: true, body: r.body, sender: r.sender, replies: [] } : { ok: false, reason: r.reason, replies: [] };
    },

    async encrypt(local, peer, body): Promise<Encrypted> {
      const ck = await sendableKey(peer);
      // Outbound messages are counted by the sender (bridges/outbound.ts), inbound ones here.
      if (ck instanceof GatewayError) throw ck;
      const me = await keys.get(local);
      let armored: string;
      try {
        // Binary literal data: the body's exact UTF-8 bytes (text mode would rewrite line ends).
        // Our own key is a recipient, so the gateway can read its copy (MAM, carbons); it also
        // keeps openpgp on SEIPDv1, as our key does not announce SEIPDv2.
        const message = await openpgp.createMessage({ binary: utf8(body), format: 'binary' });
        armored = await ports.metrics.timeCrypto('pgp', 'encrypt', () =>
          openpgp.encrypt({
            message,
            encryptionKeys: [ck.key, me.publicKey],
            signingKeys: me.privateKey,
            date: new Date(now()),
            config: PGP_CONFIG,
          }),
        );
      } catch (e) {
        // e.g. an encryption subkey that expired since registration
        throw new GatewayError('no_encryption_available', "The recipient's registered OpenPGP key cannot be used.", { cause: e });
      }
      return { children: encryptedChildren(stripArmor(armored)) };
    },

    async reachability(_local, peer): Promise<Reachability> {
      return (await sendableKey(peer)) instanceof GatewayError ? 'no' : 'ready';
    },

    async maintain() {
      const pruned = replay.prune();
      if (pruned > 0) log.debug({ pruned }, 'pruned replay digests');
    },

    async signPresence(local, status) {
      const me = await keys.get(local);
      const message = await openpgp.createMessage({ binary: utf8(status), format: 'binary' });
      const armored = await ports.metrics.timeCrypto('pgp', 'sign', () =>
        openpgp.sign({ message, signingKeys: me.privateKey, detached: true, date: new Date(now()), config: PGP_CONFIG }),
      );
      return stripArmor(armored);
    },

    checkPresence: (contact, status, signedText) => checkPresence(inbound, contact, status, signedText),

    async inspectPublicKey(armored, o) {
      return (await readPublicKey(armored, new Date(now()), o)).info;
    },

    async registerContactKey(contact, armored, { viaAdmin }) {
      const { key, info } = await readPublicKey(armored, new Date(now()));
      if (!info.canEncrypt) throw new PgpKeyError('cannot-encrypt');
      if (!viaAdmin && !opts.allowUnverifiedKeys && !info.userIds.some((u) => uidMatchesJid(u, contact))) {
        throw new PgpKeyError('uid-mismatch');
      }
      ports.contacts.setPgpKey(contact, minimal(key).armor(FULL_CONFIG), info.fingerprint);
      const trust = ports.trust.observe(contact, 'pgp', info.keyId, info.fingerprint, now());
      // The admin vouches for the key out of band; a key already distrusted stays so.
      if (viaAdmin && trust !== 'distrusted' && trust !== 'verified') ports.trust.set(contact, 'pgp', info.fingerprint, 'verified');
      ports.trust.syncActive(contact, 'pgp', [info.keyId]);
      log.info({ contact, fingerprint: info.fingerprint, viaAdmin }, 'pgp key registered');
      return info.fingerprint;
    },

    async removeContactKey(contact) {
      ports.contacts.setPgpKey(contact, null, null);
      ports.trust.syncActive(contact, 'pgp', []);
      log.info({ contact }, 'pgp key removed');
    },
  };
  return engine satisfies ProtocolEngine;
}
