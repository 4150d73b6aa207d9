// The contract between the bridge core and one end-to-end encryption protocol. An engine holds the
// protocol's crypto and state; it reaches disk and network only through its ports and returns
// stanzas for the caller to send instead of sending them itself, so it can be tested without a server.
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import type { ProtocolStore } from '../keystore/protocol-store.js';
import type { TrustLevel, TrustStore } from '../keystore/trust-store.js';
import type { ContactStore } from '../keystore/contact-store.js';
import type { Keystore } from '../keystore/keystore.js';
import type { Metrics } from '../http/metrics.js';
import type { ProtocolName } from '../config.js';

export type ProtocolId = ProtocolName;
export type { Element };

/** Why an inbound message was not turned into a body. Also the metric label and webhook/error text. */
export type DecryptFailure =
  | 'not-for-this-device' // a key for another device id only: ignored quietly
  | 'malformed' // the element is not what the protocol allows
  | 'no-session' // no session and not a session-starting message
  | 'unknown-prekey' // a PreKey message for a prekey we no longer hold
  | 'bad-mac' // authentication failed: corrupted or tampered
  | 'duplicate' // a message already decrypted (replay)
  | 'unknown-key' // signed or encrypted with a key we do not know
  | 'wrong-key' // encrypted to a key that is not ours
  | 'bad-signature'
  | 'distrusted' // from a key an admin has distrusted
  | 'wrong-recipient' // OX: no <to> names the hosted JID (surreptitious forwarding)
  | 'stale-time' // OX: <time> too far from now and from the <delay> stamp
  | 'plaintext' // OX <sign>: signed but not encrypted, and plaintext is not allowed
  | 'internal';

export interface SenderInfo {
  /** Bare JID of the sender. */
  jid: string;
  deviceId?: number;
  fingerprint?: string;
  trust: TrustLevel;
}

export type Decrypted =
  /** body is null for protocol-only messages (key transport, heartbeats): nothing to deliver. */
  | { ok: true; body: string | null; sender: SenderInfo; replies: Element[]; /** Signed only, never encrypted (OX <sign>): delivered as encryption 'none'. */ plaintext?: boolean }
  | { ok: false; reason: DecryptFailure; replies: Element[] };

export interface Encrypted {
  /** Children of the outgoing <message>: the encrypted element, EME, hints, a fallback body. */
  children: Element[];
  /** Set when the ciphertext is bound to one full JID (OTR); otherwise the bare peer JID is used. */
  to?: string;
  /** Further messages with the same body, each a stanza of its own (OMEMO 2: legacy-only devices of the contact). */
  more?: Encrypted[];
}

export type Reachability = 'ready' | 'needs-session' | 'no';

export interface IdentityFacts {
  omemo?: Array<{ device_id: number; fingerprint: string }>;
  omemo2?: Array<{ device_id: number; fingerprint: string }>;
  pgp?: { fingerprint: string; public_key: string };
  ox?: { fingerprint: string; public_key: string };
  otr?: { fingerprint: string };
}

export interface PublishOptions {
  accessModel?: 'open' | 'presence';
  /** Items kept in the node; 'max' keeps all (OMEMO 2 bundles). Default 1, as PEP. */
  maxItems?: number | 'max';
}

/** The gateway's pubsub service (PEP for hosted JIDs) and PEP reads from contacts' servers. */
export interface PubsubPort {
  /** Publishes (replacing an item of the same id) on a hosted JID's node and notifies subscribers. */
  publish(owner: string, node: string, itemId: string, payload: Element, opts?: PublishOptions): void;
  /** Removes an item (or with no itemId the whole node) from a hosted JID's node. */
  retract(owner: string, node: string, itemId?: string): void;
  /** The items stored on a hosted JID's node, newest first. */
  localItems(owner: string, node: string): Array<{ id: string; payload: Element }>;
  /**
   * Reads `node` on the contact `to`'s PEP service, asking as hosted JID `from`. Resolves to the
   * <item> elements (possibly none), or null when the contact does not offer the node (it does not
   * exist, the account or service does not). Rejects with a KeysNotVisibleError when `from` may
   * not read it (access model presence, roster, ...: the contact's approval of a subscription lets
   * it in; `certain` unless the answer may also mean "not there"), and with remote_timeout /
   * remote_error for failures worth retrying.
   */
  fetch(from: string, to: string, node: string, opts?: { itemId?: string; maxItems?: number }): Promise<Element[] | null>;
}

export interface EnginePorts {
  store: ProtocolStore;
  trust: TrustStore;
  contacts: ContactStore;
  /** The whole keystore, for engines that keep a table of their own (e.g. replay digests). */
  keystore: Keystore;
  pubsub: PubsubPort;
  metrics: Metrics;
  log: Logger;
  now(): number;
  /** The resource hosted JIDs send from, e.g. `gw`. */
  resource: string;
  /**
   * Called before a new hosted JID's identity is created: throws a GatewayError (LimitError) when
   * the identity limits refuse it (bridges/identity-gate.ts). Absent: no limit (tests).
   */
  admitIdentity?: (local: string) => void;
  /**
   * Whether hosted JID `local` may send one more automatic text reply (a notice, not protocol
   * traffic) to `peer` now (limits.auto_replies_per_contact_per_minute): two automata answering
   * each other's notices would otherwise loop forever. Absent: always (tests).
   */
  mayAutoReply?: (local: string, peer: string) => boolean;
}

export interface ProtocolEngine {
  readonly id: ProtocolId;
  /** Features advertised in disco#info/caps of hosted JIDs because of this engine (incl. +notify). */
  readonly features: readonly string[];
  /** Whether `stanza` carries this protocol's payload. Namespace test only: no I/O, no store. */
  recognizes(stanza: Element): boolean;
  /** Creates the hosted JID's identity on first use and publishes what peers need. Idempotent. */
  ensureIdentity(local: string): Promise<void>;
  /** Public facts about the hosted JID's identity (creates it on first use). */
  identity(local: string): Promise<IdentityFacts>;
  /** Decrypts a <message> addressed to hosted JID `local`. Bad peer input is a value, never a throw. */
  decrypt(local: string, stanza: Element): Promise<Decrypted>;
  /**
   * Encrypts `body` from `local` to the bare JID `peer`. Throws GatewayError with an actionable code
   * (no_encryption_available, no_trusted_devices, remote_timeout...) when it cannot.
   */
  encrypt(local: string, peer: string, body: string): Promise<Encrypted>;
  /** Whether `peer` can be reached with this protocol, looked up (and cached) as needed. */
  reachability(local: string, peer: string): Promise<Reachability>;
  /** A PEP event (+notify) from a contact for one of this engine's nodes. */
  onPepEvent?(local: string, from: string, node: string, items: Element[]): Promise<void>;
  /**
   * Re-reads what contact `peer` publishes (device lists and bundles, keys) as hosted JID `local`,
   * so that the TrustStore knows every current key's fingerprint (the admin's refreshed device view).
   */
  refreshContact?(local: string, peer: string): Promise<void>;
  /** An older protocol this one is the newer version of: chosen for a contact, it gives way to this one where this reaches them too. */
  readonly supersedes?: ProtocolId;
  /** Whether `node` (a PEP node of a contact) belongs to this engine. */
  ownsNode?(node: string): boolean;
  /**
   * Before a peer reads `node` of hosted JID `local` from our pubsub service: create what that read
   * needs and no more (a device list read: the identity; a bundle read: the bundle). Without it,
   * ensureIdentity() is called.
   */
  prepareNode?(local: string, node: string): Promise<void>;
  /** A contact's full JID `from` went offline (unavailable presence to hosted JID `local`): OTR ends its session. */
  onUnavailable?(local: string, from: string): void;
  /** Periodic upkeep (signed prekey rotation, pruning). */
  maintain?(): Promise<void>;
  /**
   * The XMPP connection went up (true) or down (false). After a (re)connect an offline backlog may
   * arrive: OMEMO keeps used one-time prekeys until a grace period after the last reconnect.
   * Synchronous and cheap; call it on every change.
   */
  onConnectionChange?(connected: boolean): void;
}

/**
 * Extra for protocols with a handshake (OTR): encrypt throws GatewayError `no_otr_session` while no
 * session exists, and startSession returns the stanzas that begin one (an OTR query to the contact's
 * last known full JID), or none when one is already being set up.
 */
export interface HandshakeEngine extends ProtocolEngine {
  startSession(local: string, peer: string): Promise<Element[]>;
}

export const hasHandshake = (e: ProtocolEngine): e is HandshakeEngine => 'startSession' in e;

/** How a group message is addressed and whom it may reach. */
export interface GroupOptions {
  /** The room's bare JID: OMEMO 2 names it in the SCE envelope's <to> (XEP-0420 in group chats). */
  room?: string;
  /**
   * Per peer, only these device ids: devices a newer version already reaches are left out, so no
   * device gets the same message twice. A peer not in the map gets all its listed devices.
   */
  only?: ReadonlyMap<string, readonly number[]>;
}

export interface GroupEncrypted extends Encrypted {
  /** Peers that got no key: no device of this protocol, no trusted device, or none reachable. */
  undelivered: string[];
  /** Per peer, the device ids that got a key (engines that can tell; absent: every listed device of a delivered peer). */
  keyed?: ReadonlyMap<string, readonly number[]>;
}

/**
 * Extra for protocols that encrypt one message to many peers at once: XEP-0045 group chats, where a
 * groupchat message goes to the room and carries keys for every occupant's devices. Legacy OMEMO
 * and OMEMO 2 have it; the room service (bridges/rooms/group-encrypt.ts) gives each occupant's
 * device the newest version it lists, one stanza per version.
 */
export interface GroupEngine extends ProtocolEngine {
  /** The PEP node of peers' device lists (a room subscribes to it for every occupant). */
  readonly deviceListNode: string;
  /** One message for every peer (bare real JIDs); peers that get no key are listed in `undelivered`. */
  encryptGroup(local: string, peers: readonly string[], body: string, opts?: GroupOptions): Promise<GroupEncrypted>;
  /** Decrypts a groupchat stanza whose sender is `sender` (the occupant's real bare JID, not the room). */
  decryptFrom(local: string, stanza: Element, sender: string): Promise<Decrypted>;
  /** A peer appeared (an occupant joined): read its devices now, so that sending does not wait. */
  watchPeer(local: string, peer: string): Promise<void>;
  /** The peer's device ids from its device list (cached, read when unknown); null when it lists none. */
  listedDevices(local: string, peer: string): Promise<number[] | null>;
  /** Device ids known for the peer (cached device list), [] for none, null if never read. */
  cachedDevices(peer: string): readonly number[] | null;
}

export const isGroupEngine = (e: ProtocolEngine): e is GroupEngine => 'encryptGroup' in e && 'decryptFrom' in e;
