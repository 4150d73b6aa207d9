// OMEMO 2 sessions without I/O: building one from a bundle (X3DH, active side), accepting an
// OMEMOKeyExchange (passive side), and running messages through the shared Double Ratchet. The
// caller loads and stores sessions and key material.
//   AD = IK_initiator (Ed25519, 32) || IK_responder (Ed25519, 32)
//   The initiator wraps every message in an OMEMOKeyExchange until it receives one on the session.
import * as dr from '../ratchet/double-ratchet.js';
import { ed25519PubToX25519, ed25519Verify, generateX25519, type X25519KeyPair } from '../ratchet/primitives.js';
import { x3dhInitiator, x3dhResponder } from '../ratchet/x3dh.js';
import { INFO_X3DH } from './constants.js';
import { OMEMO2, decodeKeyExchange, encodeKeyExchange, type KeyExchange } from './messages.js';

const X3DH = { info: INFO_X3DH, length: 32 };

export interface OwnIdentity {
  /** X25519 private scalar of the identity key. */
  priv: Buffer;
  /** Its Ed25519 form as published (32 bytes). */
  ik: Buffer;
}

export interface PeerBundle {
  ik: Buffer;
  spk: { id: number; pub: Buffer; sig: Buffer };
  preKeys: Array<{ id: number; pub: Buffer }>;
}

export interface Session {
  ad: Buffer;
  ratchet: dr.RatchetState;
  /** The peer's Ed25519 identity key. */
  theirIk: Buffer;
  /** Initiator only, until confirmed: the key exchange data that wraps each message. */
  kex: { pkId: number; spkId: number; ek: Buffer } | null;
  /** The ephemeral key of the key exchange that built the session (initiator: ours; responder: theirs). */
  ek: Buffer;
  initiator: boolean;
  /**
   * The session this one replaced (repair, a new key exchange), kept so that messages the peer sent
   * on it before it learnt of the new one still decrypt; the one that decrypts becomes current.
   */
  previous?: Session | null;
}

const strip = (s: Session): Session => ({ ...s, previous: null });

/** `next` as the current session, with `old` (if any) kept as its predecessor. */
export const replacing = (next: Session, old: Session | undefined): Session => ({ ...next, previous: old ? strip(old) : null });

export class SessionError extends Error {
  constructor(readonly reason: 'bad-signature' | 'malformed' | 'unknown-prekey' | 'no-prekey' | 'bad-mac' | 'duplicate' | 'too-many-skipped') {
    super(`omemo2 session: ${reason}`);
    this.name = 'SessionError';
  }
}

/** Verifies the bundle's signed prekey signature and runs X3DH with one of its prekeys. */
export function buildSession(own: OwnIdentity, bundle: PeerBundle, preKey: { id: number; pub: Buffer }, ephemeral: X25519KeyPair = generateX25519()): Session {
  if (!ed25519Verify(bundle.ik, bundle.spk.pub, bundle.spk.sig)) throw new SessionError('bad-signature');
  let theirIdentity: Buffer;
  try {
    theirIdentity = ed25519PubToX25519(bundle.ik);
  } catch {
    throw new SessionError('malformed');
  }
  const sk = x3dhInitiator(X3DH, { ourIdentityPriv: own.priv, ephemeralPriv: ephemeral.priv, theirIdentity, theirSignedPreKey: bundle.spk.pub, theirPreKey: preKey.pub });
  return {
    ad: Buffer.concat([own.ik, bundle.ik]),
    ratchet: dr.initiate(OMEMO2, sk, bundle.spk.pub),
    theirIk: bundle.ik,
    kex: { pkId: preKey.id, spkId: bundle.spk.id, ek: ephemeral.pub },
    ek: ephemeral.pub,
    initiator: true,
  };
}

/** Encrypts key material for the session's device; mutates the session. `kex` tells whether it went as an OMEMOKeyExchange. */
export function encryptMessage(own: OwnIdentity, s: Session, plaintext: Buffer): { data: Buffer; kex: boolean } {
  const { wire } = dr.encrypt(OMEMO2, s.ratchet, plaintext, s.ad);
  if (!s.kex) return { data: wire, kex: false };
  return { data: encodeKeyExchange({ pkId: s.kex.pkId, spkId: s.kex.spkId, ik: own.ik, ek: s.kex.ek, message: wire }), kex: true };
}

// `m` is `wire` (an OMEMOAuthenticatedMessage) as omemo2Codec opened it: inbound.ts reads each
// message once (for its replay digest) and the ratchet decrypts what was read.
function ratchetDecrypt(s: Session, wire: Buffer, m: dr.OpenedMessage): { plaintext: Buffer; session: Session; header: dr.Header } {
  try {
    const r = dr.decrypt(OMEMO2, s.ratchet, wire, s.ad, m);
    // Anything received on the session confirms it: stop wrapping in key exchanges.
    return { plaintext: r.plaintext, session: { ...s, ratchet: r.state, kex: null }, header: r.header };
  } catch (e) {
    if (e instanceof dr.RatchetError) throw new SessionError(e.reason === 'no-sending-chain' ? 'malformed' : e.reason);
    throw e;
  }
}

/** A normal message (OMEMOAuthenticatedMessage) on an existing session, or on the one it replaced. */
export function decryptMessage(s: Session, data: Buffer, m: dr.OpenedMessage): { plaintext: Buffer; session: Session; header: dr.Header } {
  try {
    const r = ratchetDecrypt(s, data, m);
    return { ...r, session: { ...r.session, previous: s.previous ?? null } };
  } catch (e) {
    if (!s.previous || !(e instanceof SessionError) || e.reason === 'duplicate') throw e;
    let r;
    try {
      r = ratchetDecrypt(s.previous, data, m);
    } catch {
      throw e;
    }
    // The peer is still on the older session: it becomes current again.
    return { ...r, session: replacing(r.session, s) };
  }
}

export interface KeyLookup {
  signedPreKey(id: number): X25519KeyPair | undefined;
  preKey(id: number): X25519KeyPair | undefined;
}

export function parseKeyExchange(data: Buffer) {
  return decodeKeyExchange(data);
}

/**
 * An OMEMOKeyExchange (`k`, decoded; `m`, its inner message `k.message` opened). If `existing` was built by this
 * very key exchange (same ephemeral key), only the inner message is processed on it; otherwise a new
 * session is built (passive X3DH).
 * `isNew` tells the caller to consume the prekey and answer with an empty message.
 */
export function acceptKeyExchange(
  own: OwnIdentity,
  keys: KeyLookup,
  k: KeyExchange,
  m: dr.OpenedMessage,
  existing: Session | undefined,
): { plaintext: Buffer; session: Session; isNew: boolean; pkId: number; header: dr.Header } {
  const same = (x: Session | null | undefined): boolean => !!x && !x.initiator && x.ek.equals(k.ek) && x.theirIk.equals(k.ik);
  if (existing && same(existing)) {
    const r = ratchetDecrypt(existing, k.message, m);
    return { ...r, session: { ...r.session, previous: existing.previous ?? null }, isNew: false, pkId: k.pkId };
  }
  if (existing?.previous && same(existing.previous)) {
    const r = ratchetDecrypt(existing.previous, k.message, m);
    return { ...r, session: replacing(r.session, existing), isNew: false, pkId: k.pkId };
  }
  const spk = keys.signedPreKey(k.spkId);
  const pk = keys.preKey(k.pkId);
  if (!spk || !pk) throw new SessionError('unknown-prekey');
  let theirIdentity: Buffer;
  try {
    theirIdentity = ed25519PubToX25519(k.ik);
  } catch {
    throw new SessionError('malformed');
  }
  const sk = x3dhResponder(X3DH, { ourIdentityPriv: own.priv, signedPreKeyPriv: spk.priv, preKeyPriv: pk.priv, theirIdentity, theirEphemeral: k.ek });
  const fresh: Session = { ad: Buffer.concat([k.ik, own.ik]), ratchet: dr.respond(sk, spk), theirIk: k.ik, kex: null, ek: k.ek, initiator: false };
  const r = ratchetDecrypt(fresh, k.message, m);
  return { ...r, session: replacing(r.session, existing), isNew: true, pkId: k.pkId };
}

// ---- storage form ----

export interface StoredSession {
  v: 1;
  ad: string;
  ratchet: dr.StoredRatchet;
  theirIk: string;
  kex: { pkId: number; spkId: number; ek: string } | null;
  ek: string;
  initiator: boolean;
  previous?: StoredSession | null;
}

export function toStoredSession(s: Session): StoredSession {
  return {
    ...(s.previous ? { previous: toStoredSession(strip(s.previous)) } : {}),
    v: 1,
    ad: s.ad.toString('base64'),
    ratchet: dr.toStored(s.ratchet),
    theirIk: s.theirIk.toString('base64'),
    kex: s.kex ? { ...s.kex, ek: s.kex.ek.toString('base64') } : null,
    ek: s.ek.toString('base64'),
    initiator: s.initiator,
  };
}

export function fromStoredSession(r: StoredSession): Session {
  const b = (x: string) => Buffer.from(x, 'base64');
  return {
    ad: b(r.ad),
    ratchet: dr.fromStored(r.ratchet),
    theirIk: b(r.theirIk),
    kex: r.kex ? { ...r.kex, ek: b(r.kex.ek) } : null,
    ek: b(r.ek),
    initiator: r.initiator,
    previous: r.previous ? fromStoredSession(r.previous) : null,
  };
}
