// OX: OpenPGP for XMPP (XEP-0373) with its instant-messaging profile (XEP-0374), for hosted JIDs.
// Every hosted JID has its own OX key (v4, EdDSA + ECDH cv25519, user ID `xmpp:<JID as on the
// wire>`), separate from its XEP-0027 key (README: "Why OX has its own key"), published on the
// metadata and key nodes the gateway's pubsub serves. Contacts' keys come from their PEP
// (contact-keys.ts); inbound checks are in inbound.ts. Sharing with XEP-0027 (bridges/pgp/): key
// generation and storage (LocalKeys), key parsing, openpgp settings, and one replay store.
import * as openpgp from 'openpgp';
import { GatewayError } from '../../errors.js';
import { isUsable } from '../../keystore/trust-store.js';
import type { Element, EnginePorts, Encrypted, IdentityFacts, ProtocolEngine, Reachability } from '../engine.js';
import { PGP_CONFIG } from '../pgp/openpgp-config.js';
import { LocalKeys, type LocalKey } from '../pgp/local-keys.js';
import type { ReplayGuard } from '../pgp/replay-guard.js';
import { DEFAULT_CONTACT_KEY_OPTIONS, OxContactKeys, PROTOCOL, type ContactKeyOptions, type OxContactKey } from './contact-keys.js';
import { decryptOx } from './inbound.js';
import { dateTime, keyNode, messageChildren, metadataPayload, NODE_KEY_PREFIX, NODE_METADATA, NS_OX, pubkeyPayload, signcrypt } from './wire.js';

export interface OxEngineOptions {
  /** The replay store shared with XEP-0027. */
  replay: ReplayGuard;
  maxClockSkewMs: number;
  /** Whether a signed-only (<sign>) message may be delivered to this hosted JID as plaintext. */
  plaintextAllowed(local: string): boolean;
  contactKeys?: Partial<ContactKeyOptions>;
}

/** A contact's OX key as the engine knows it (admin views, tests). */
export interface OxContactKeyView {
  fingerprint: string;
  trust: string;
  canEncrypt: boolean;
}

export interface OxEngine extends ProtocolEngine {
  readonly id: 'ox';
  /** The contact's announced usable keys with trust; `refresh` re-reads their PEP. */
  contactKeys(local: string, contact: string, opts?: { refresh?: boolean }): Promise<OxContactKeyView[]>;
  /** The hosted JID's key (created and published on first use). */
  localKey(local: string): Promise<LocalKey>;
  readonly internals: { keys: LocalKeys; contacts: OxContactKeys };
}

export function createOxEngine(ports: EnginePorts, opts: OxEngineOptions): OxEngine {
  const now = () => ports.now();
  const log = ports.log.child({ engine: PROTOCOL });
  const keys = new LocalKeys(ports.store, 'curve25519', now, ports.admitIdentity);
  const contacts = new OxContactKeys(ports.pubsub, ports.trust, log, now, { ...DEFAULT_CONTACT_KEY_OPTIONS, ...opts.contactKeys });
  /** Hosted JIDs whose current key is known to be on their nodes. */
  const published = new Set<string>();

  /** Publishes the key node, then the metadata node listing it (XEP-0373 §4.1 order). */
  function publish(local: string, k: LocalKey): void {
    if (published.has(local)) return;
    const listed = ports.pubsub.localItems(local, NODE_METADATA)[0]?.payload;
    const current = listed?.getChildren('pubkey-metadata').some((m) => m.attrs['v4-fingerprint'] === k.fingerprint) ?? false;
    if (!current) {
      const date = dateTime(k.publicKey.getCreationTime().getTime());
      ports.pubsub.publish(local, keyNode(k.fingerprint), date, pubkeyPayload(k.publicKey.write(), date), { accessModel: 'open' });
      ports.pubsub.publish(local, NODE_METADATA, 'current', metadataPayload([{ fingerprint: k.fingerprint, date }]), { accessModel: 'open' });
      log.info({ local, fingerprint: k.fingerprint }, 'ox key published');
    }
    published.add(local);
  }

  async function localKey(local: string): Promise<LocalKey> {
    const k = await keys.get(local);
    publish(local, k);
    return k;
  }

  /** The contact's keys we may encrypt to, or the GatewayError to throw. */
  async function sendable(local: string, peer: string): Promise<OxContactKey[] | GatewayError> {
    const announced = await contacts.get(local, peer);
    if (announced === null) return new GatewayError('no_encryption_available', 'The recipient publishes no OX (XEP-0373) key.');
    const encrypting = announced.filter((k) => k.canEncrypt);
    if (encrypting.length === 0) return new GatewayError('no_encryption_available', "The recipient's OX keys cannot be used (expired, revoked, no encryption subkey, or no user ID naming them).");
    const trusted = encrypting.filter((k) => isUsable(ports.trust.observe(peer, PROTOCOL, k.fingerprint, k.fingerprint, now())));
    if (trusted.length === 0) return new GatewayError('no_trusted_devices', "None of the recipient's OX keys is trusted.");
    return trusted;
  }

  const engine: OxEngine = {
    id: 'ox',
    features: [`${NODE_METADATA}+notify`],

    recognizes: (stanza: Element) => stanza.name === 'message' && stanza.getChild('openpgp', NS_OX) !== undefined,

    async ensureIdentity(local) {
      await localKey(local);
    },

    async identity(local): Promise<IdentityFacts> {
      const k = await localKey(local);
      return { ox: { fingerprint: k.fingerprint, public_key: k.publicArmored } };
    },

    localKey,

    async decrypt(local, stanza) {
      const r = await decryptOx(
        { keys, contactKeys: contacts, replay: opts.replay, trust: ports.trust, metrics: ports.metrics, log, now, maxClockSkewMs: opts.maxClockSkewMs, plaintextAllowed: opts.plaintextAllowed },
        local,
        stanza,
      );
      return r.ok ? { ok: true, body: r.body, sender: r.sender, replies: [], ...(r.plaintext ? { plaintext: true } : {}) } : { ok: false, reason: r.reason, replies: [] };
    },

    async encrypt(local, peer, body): Promise<Encrypted> {
      const to = await sendable(local, peer);
      if (to instanceof GatewayError) throw to;
      const me = await localKey(local);
      let binary: Uint8Array;
      try {
        const message = await openpgp.createMessage({ binary: new TextEncoder().encode(signcrypt(peer, now(), body).toString()), format: 'binary' });
        // Our own key is a recipient too: the gateway can read its copy (MAM, carbons).
        binary = await ports.metrics.timeCrypto(PROTOCOL, 'encrypt', () =>
          openpgp.encrypt({
            message,
            encryptionKeys: [...to.map((k) => k.key), me.publicKey],
            signingKeys: me.privateKey,
            date: new Date(now()),
            format: 'binary',
            config: PGP_CONFIG,
          }),
        );
      } catch (e) {
        throw new GatewayError('no_encryption_available', "The recipient's OX key cannot be used.", { cause: e });
      }
      return { children: messageChildren(Buffer.from(binary).toString('base64')) };
    },

    async reachability(local, peer): Promise<Reachability> {
      return (await sendable(local, peer)) instanceof GatewayError ? 'no' : 'ready';
    },

    ownsNode: (node) => node === NODE_METADATA || node.startsWith(NODE_KEY_PREFIX),

    async onPepEvent(local, from, node, items) {
      const contact = from.split('/')[0]!;
      if (node === NODE_METADATA) await contacts.onMetadataEvent(local, contact, items);
      else contacts.forgetKey(contact, node.slice(NODE_KEY_PREFIX.length).toUpperCase());
    },

    async refreshContact(local, contact) {
      await contacts.get(local, contact, true);
    },

    async contactKeys(local, contact, o = {}) {
      const announced = (await contacts.get(local, contact, o.refresh === true)) ?? [];
      return announced.map((k) => ({
        fingerprint: k.fingerprint,
        trust: ports.trust.get(contact, PROTOCOL, k.fingerprint)?.trust ?? 'untrusted',
        canEncrypt: k.canEncrypt,
      }));
    },

    async maintain() {
      // The replay store is pruned by the XEP-0027 engine's upkeep, or here when it runs alone.
      opts.replay.prune();
    },

    internals: { keys, contacts },
  };
  return engine satisfies ProtocolEngine;
}
