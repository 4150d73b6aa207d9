// Legacy OMEMO (XEP-0384 v0.3.0, libsignal protocol version 3) on the gateway's own X3DH and Double
// Ratchet (bridges/ratchet/): the version's constants and wire format, and the session operations
// libsignal's SessionBuilder/SessionCipher performed, as pure functions over plain records.
//   X3DH info 'WhisperText' (first 32 bytes: root key), KDF_RK info 'WhisperRatchet', message keys
//   'WhisperMessageKeys' (AES-256-CBC key || MAC key || IV), MAC = HMAC-SHA-256 over sender's then
//   receiver's 33-byte identity key and the encoded message, first 8 bytes.
//   WhisperMessage       = 0x33 || protobuf{1 ratchetKey(33), 2 counter, 3 previousCounter, 4 ciphertext} || mac(8)
//   PreKeyWhisperMessage = 0x33 || protobuf{5 registrationId, 1 preKeyId, 6 signedPreKeyId, 2 baseKey, 3 identityKey, 4 message}
// previousCounter is the index of the last message of the previous sending chain (libsignal), the
// ratchet's pn is their count: pn = previousCounter + 1.
import {
  decrypt as ratchetDecrypt,
  encrypt as ratchetEncrypt,
  initiate,
  respond,
  RatchetError,
  type Header,
  type MessageCodec,
  type OpenedMessage,
  type RatchetState,
  type RatchetVersion,
} from '../ratchet/double-ratchet.js';
import { encode } from '../ratchet/protobuf.js';
import { generateX25519, xeddsaVerify, type X25519KeyPair } from '../ratchet/primitives.js';
import { x3dhInitiator, x3dhResponder, type X3dhParams } from '../ratchet/x3dh.js';
import { inspectPreKey, inspectWhisperParts, SIGNAL_VERSION_BYTE, type PreKeyInfo, type WhisperParts } from './signal-message.js';

export const MAC_LENGTH = 8;
/** Skipped message keys kept per session (over all its receiving chains); the oldest go first. */
export const MAX_SKIPPED_KEYS = 1000;
/** Keys one message may make us skip (libsignal's bound). */
export const MAX_SKIP = 2000;
/** Archived (closed) sessions kept per device, for messages still in flight on a replaced session. */
export const MAX_ARCHIVED_SESSIONS = 10;

const VERSION = Buffer.of(SIGNAL_VERSION_BYTE);

/** 0x05 || 32-byte key: how legacy OMEMO writes Curve25519 public keys. */
export const with05 = (pub: Buffer): Buffer => Buffer.concat([Buffer.of(5), pub]);
export const without05 = (pub: Buffer): Buffer => (pub.length === 33 && pub[0] === 5 ? pub.subarray(1) : pub);

const codec: MessageCodec = {
  encode(h: Header, ciphertext: Buffer): Buffer {
    return Buffer.concat([
      VERSION,
      encode([
        { no: 1, value: with05(h.dh) },
        { no: 2, value: h.n },
        { no: 3, value: Math.max(h.pn - 1, 0) },
        { no: 4, value: ciphertext },
      ]),
    ]);
  },
  seal: (encoded, mac) => Buffer.concat([encoded, mac]),
  open(wire) {
    const m = inspectWhisperParts(wire);
    return m && openedWhisper(wire, m);
  },
};

/** A WhisperMessage as the ratchet reads it, from the parts signal-message.ts read out of `wire`. */
function openedWhisper(wire: Buffer, m: WhisperParts): OpenedMessage {
  return {
    encoded: wire.subarray(0, wire.length - MAC_LENGTH),
    mac: wire.subarray(wire.length - MAC_LENGTH),
    header: { dh: m.ratchetKey.subarray(1), n: m.counter, pn: m.previousCounter + 1 },
    ciphertext: m.ciphertext,
  };
}

/** Reads a WhisperMessage once, for decryptMessage (null when it is not one). */
export const openWhisper = (wire: Buffer): OpenedMessage | null => codec.open(wire);

export const LEGACY: RatchetVersion = {
  rootInfo: Buffer.from('WhisperRatchet'),
  messageKeyInfo: Buffer.from('WhisperMessageKeys'),
  macLength: MAC_LENGTH,
  codec,
  maxSkipPerMessage: MAX_SKIP,
  maxSkippedKeys: MAX_SKIPPED_KEYS,
};

const X3DH: X3dhParams = { info: Buffer.from('WhisperText'), length: 32 };

/** One session with a contact's device (libsignal's SessionType, in our terms). */
export interface LegacySession {
  /** The X3DH base key (33 bytes): ours when we initiated, the contact's otherwise. Identifies the session. */
  baseKey: Buffer;
  ours: boolean;
  /** The contact's identity key, 33 bytes. */
  remoteIdentityKey: Buffer;
  registrationId: number | undefined;
  ratchet: RatchetState;
  /** While the contact has not answered on a session we started: what every message is wrapped in. */
  pending: { preKeyId: number | undefined; signedPreKeyId: number; baseKey: Buffer } | undefined;
  /** -1 for the open session, else when it was archived (ms). */
  closed: number;
}

/** Every session with one device: at most one open, the rest archived, newest first. */
export interface LegacyRecord {
  sessions: LegacySession[];
}

export class LegacySessionError extends Error {
  constructor(
    readonly reason: 'no-session' | 'malformed' | 'bad-mac' | 'duplicate' | 'bad-signature' | 'unknown-prekey' | 'no-sending-chain',
    detail?: string,
  ) {
    super(`legacy omemo session: ${reason}${detail ? ` (${detail})` : ''}`);
    this.name = 'LegacySessionError';
  }
}

export interface OwnIdentity {
  /** 32-byte private scalar. */
  priv: Buffer;
  /** 33-byte 0x05-prefixed public key. */
  pub: Buffer;
  registrationId: number;
}

export interface BundleKeys {
  identityKey: Buffer;
  signedPreKey: { id: number; publicKey: Buffer; signature: Buffer };
  preKey?: { id: number; publicKey: Buffer };
}

export const openSession = (r: LegacyRecord | undefined): LegacySession | undefined => r?.sessions.find((s) => s.closed === -1);

/** Makes `s` the open session of `r` (archiving the one open before) and bounds the archive. */
export function promote(r: LegacyRecord, s: LegacySession, now: number): void {
  for (const o of r.sessions) if (o !== s && o.closed === -1) o.closed = now;
  s.closed = -1;
  const rest = r.sessions.filter((o) => o !== s && !o.baseKey.equals(s.baseKey)).sort((a, b) => b.closed - a.closed);
  r.sessions = [s, ...rest.slice(0, MAX_ARCHIVED_SESSIONS)];
}

/** X3DH as initiator from a contact's bundle (the signed prekey's XEdDSA signature is checked first). */
export function initiateSession(our: OwnIdentity, b: BundleKeys, opts: { ephemeral?: X25519KeyPair; ratchet?: X25519KeyPair } = {}): LegacySession {
  if (!xeddsaVerify(without05(b.identityKey), b.signedPreKey.publicKey, b.signedPreKey.signature)) throw new LegacySessionError('bad-signature');
  const ek = opts.ephemeral ?? generateX25519();
  const spk = without05(b.signedPreKey.publicKey);
  const rootKey = x3dhInitiator(X3DH, {
    ourIdentityPriv: our.priv,
    ephemeralPriv: ek.priv,
    theirIdentity: without05(b.identityKey),
    theirSignedPreKey: spk,
    theirPreKey: b.preKey ? without05(b.preKey.publicKey) : undefined,
  });
  return {
    baseKey: with05(ek.pub),
    ours: true,
    remoteIdentityKey: Buffer.from(b.identityKey),
    registrationId: 0,
    ratchet: initiate(LEGACY, rootKey, Buffer.from(spk), opts.ratchet ? { ours: opts.ratchet } : {}),
    pending: { preKeyId: b.preKey?.id, signedPreKeyId: b.signedPreKey.id, baseKey: with05(ek.pub) },
    closed: -1,
  };
}

/** Encrypts with the open session (mutates it). PreKey-wrapped while the contact has not answered. */
export function encryptMessage(r: LegacyRecord, our: OwnIdentity, plaintext: Buffer): { prekey: boolean; data: Buffer } {
  const s = openSession(r);
  if (!s) throw new LegacySessionError('no-session');
  if (!s.ratchet.cks) throw new LegacySessionError('no-sending-chain');
  const { wire } = ratchetEncrypt(LEGACY, s.ratchet, plaintext, Buffer.concat([our.pub, s.remoteIdentityKey]));
  if (!s.pending) return { prekey: false, data: wire };
  const p = s.pending;
  const data = Buffer.concat([
    VERSION,
    encode([
      { no: 5, value: our.registrationId },
      { no: 1, value: p.preKeyId ?? 0 },
      { no: 6, value: p.signedPreKeyId },
      { no: 2, value: p.baseKey },
      { no: 3, value: our.pub },
      { no: 4, value: wire },
    ]),
  ]);
  return { prekey: true, data };
}

function decryptWith(s: LegacySession, our: OwnIdentity, wire: Buffer, opened: OpenedMessage | undefined): { plaintext: Buffer; state: RatchetState } {
  try {
    const out = ratchetDecrypt(LEGACY, s.ratchet, wire, Buffer.concat([s.remoteIdentityKey, our.pub]), opened);
    return { plaintext: out.plaintext, state: out.state };
  } catch (e) {
    if (e instanceof RatchetError) throw new LegacySessionError(e.reason === 'too-many-skipped' ? 'malformed' : e.reason === 'no-sending-chain' ? 'malformed' : e.reason);
    throw e;
  }
}

/** `s` (a session of `r`) read a message: its new ratchet state is kept, and it is the open session now. */
function advanced(r: LegacyRecord, s: LegacySession, state: RatchetState, now: number): void {
  s.ratchet = state;
  s.pending = undefined;
  if (s.closed !== -1) promote(r, s, now);
}

/**
 * Decrypts a WhisperMessage with the open session, else the archived ones newest first (a message
 * still in flight on a replaced session). `r` changes only once the message authenticated (the
 * session that read it advances, and is promoted if it was archived), and is returned as `record`.
 * `opened` is `wire` read by openWhisper, when the caller has read it already.
 */
export function decryptMessage(
  r: LegacyRecord,
  our: OwnIdentity,
  wire: Buffer,
  now: number,
  opened?: OpenedMessage,
): { plaintext: Buffer; record: LegacyRecord; session: LegacySession } {
  if (r.sessions.length === 0) throw new LegacySessionError('no-session');
  // promote() keeps the open session first: the steady case tries it alone, with no sorting.
  const open = r.sessions[0]!.closed === -1 ? r.sessions[0]! : undefined;
  let first: unknown;
  for (const s of open ? [open] : []) {
    try {
      const out = decryptWith(s, our, wire, opened);
      advanced(r, s, out.state, now);
      return { plaintext: out.plaintext, record: r, session: s };
    } catch (e) {
      // A replay of a message this session already read: no other session may take it.
      if (e instanceof LegacySessionError && e.reason === 'duplicate') throw e;
      first = e;
    }
  }
  const rest = r.sessions.filter((s) => s !== open).sort((a, b) => (a.closed === -1 ? -1 : b.closed === -1 ? 1 : b.closed - a.closed));
  for (const s of rest) {
    try {
      const out = decryptWith(s, our, wire, opened);
      advanced(r, s, out.state, now);
      return { plaintext: out.plaintext, record: r, session: s };
    } catch (e) {
      if (e instanceof LegacySessionError && e.reason === 'duplicate') throw e;
      first ??= e;
    }
  }
  throw first;
}

export interface PreKeyLookups {
  signedPreKey(id: number): X25519KeyPair | undefined;
  preKey(id: number): X25519KeyPair | undefined;
}

/**
 * Decrypts a PreKeyWhisperMessage: with the session its base key started if we have it, else with a
 * new one (X3DH as responder), which becomes the open session once the message authenticated.
 * Returns the record (`r`, changed only once the message authenticated, or a new one) and the
 * one-time prekey id used (for the caller to retire). `read` is `data` as inspectPreKey read it.
 */
export function decryptPreKeyMessage(
  r: LegacyRecord | undefined,
  our: OwnIdentity,
  data: Buffer,
  keys: PreKeyLookups,
  now: number,
  read?: PreKeyInfo,
): { plaintext: Buffer; record: LegacyRecord; session: LegacySession; preKeyId: number | undefined; isNew: boolean } {
  const info = read ?? inspectPreKey(data);
  if (!info) throw new LegacySessionError('malformed');
  const opened = openedWhisper(info.inner, info.message);
  const record: LegacyRecord = r ?? { sessions: [] };
  const known = record.sessions.find((s) => !s.ours && s.baseKey.equals(info.baseKey));
  if (known) {
    const out = decryptWith(known, our, info.inner, opened);
    advanced(record, known, out.state, now);
    return { plaintext: out.plaintext, record, session: known, preKeyId: undefined, isNew: false };
  }
  const spk = keys.signedPreKey(info.signedPreKeyId);
  if (!spk) throw new LegacySessionError('unknown-prekey', 'signed prekey');
  const opk = info.preKeyId !== 0 ? keys.preKey(info.preKeyId) : undefined;
  if (info.preKeyId !== 0 && !opk) throw new LegacySessionError('unknown-prekey');
  const rootKey = x3dhResponder(X3DH, {
    ourIdentityPriv: our.priv,
    signedPreKeyPriv: spk.priv,
    preKeyPriv: opk?.priv,
    theirIdentity: info.identityKey.subarray(1),
    theirEphemeral: info.baseKey.subarray(1),
  });
  const fresh: LegacySession = {
    baseKey: Buffer.from(info.baseKey),
    ours: false,
    remoteIdentityKey: Buffer.from(info.identityKey),
    registrationId: info.registrationId,
    ratchet: respond(rootKey, spk),
    pending: undefined,
    closed: -1,
  };
  const out = decryptWith(fresh, our, info.inner, opened);
  fresh.ratchet = out.state;
  record.sessions.push(fresh);
  promote(record, fresh, now);
  return { plaintext: out.plaintext, record, session: fresh, preKeyId: info.preKeyId !== 0 ? info.preKeyId : undefined, isNew: true };
}
