// The Double Ratchet (Signal's specification, revision 1) shared by the OMEMO versions. It knows
// nothing of XML or of any wire format: a version supplies its constants (KDF info labels, MAC
// length) and a codec that turns a header and ciphertext into the bytes the MAC covers and the bytes
// on the wire. The caller passes the associated data per call (OMEMO 2: both identity keys, initiator
// first; legacy: sender's then receiver's).
//
//   KDF_RK(rk, dh)  = HKDF-SHA-256(salt = rk, ikm = dh, info = rootInfo) -> rk' (32) || ck (32)
//   KDF_CK(ck)      = HMAC(ck, 0x01) -> message key, HMAC(ck, 0x02) -> next chain key
//   message key mk  -> HKDF(ikm = mk, salt = 32 zero bytes, info = messageKeyInfo, 80 bytes)
//                      = AES-256-CBC key (32) || MAC key (32) || IV (16)
//   MAC             = HMAC-SHA-256(MAC key, AD || encoded message), first macLength bytes
//
// States are plain objects; decrypt works on a copy and returns the new state only when the MAC
// verified, so a forged or corrupted message changes nothing.
import { aesCbcDecrypt, aesCbcEncrypt, generateX25519, hkdf, hmac, macEqual, x25519, zeros, type X25519KeyPair } from './primitives.js';

export interface Header {
  /** Sender's current ratchet public key, raw 32 bytes (the codec adds any prefix). */
  dh: Buffer;
  /** Index in the sending chain. */
  n: number;
  /** Length of the sender's previous sending chain. */
  pn: number;
}

/** A version's message framing around the ratchet. */
export interface MessageCodec {
  /** The encoded message the MAC covers (after the associated data). */
  encode(header: Header, ciphertext: Buffer): Buffer;
  /** The wire form of an encoded message and its truncated MAC. */
  seal(encoded: Buffer, mac: Buffer): Buffer;
  /** The inverse of seal + encode; null when the bytes are not a message of this version. */
  open(wire: Buffer): { encoded: Buffer; mac: Buffer; header: Header; ciphertext: Buffer } | null;
}

export interface RatchetVersion {
  rootInfo: Buffer;
  messageKeyInfo: Buffer;
  macLength: number;
  codec: MessageCodec;
  /** Message keys one message may make us skip (DoS bound). */
  maxSkipPerMessage: number;
  /** Skipped message keys kept per session (oldest dropped first). */
  maxSkippedKeys: number;
}

export interface RatchetState {
  rk: Buffer;
  /** Our current ratchet key pair. */
  dhs: X25519KeyPair;
  /** Their current ratchet public key (null until we receive, for the responder before the first message). */
  dhr: Buffer | null;
  cks: Buffer | null;
  ckr: Buffer | null;
  ns: number;
  nr: number;
  pn: number;
  /** Skipped message keys: `${base64 dh}:${n}` -> mk, oldest first. */
  skipped: Map<string, Buffer>;
}

export type RatchetFailure = 'malformed' | 'bad-mac' | 'duplicate' | 'too-many-skipped' | 'no-sending-chain';

export class RatchetError extends Error {
  constructor(readonly reason: RatchetFailure) {
    super(`double ratchet: ${reason}`);
    this.name = 'RatchetError';
  }
}

const ONE = Buffer.of(1);
const TWO = Buffer.of(2);
const ZERO_SALT = zeros(32);

/** KDF_RK: [new root key, chain key]. Exported for known-answer tests. */
export function kdfRk(v: RatchetVersion, rk: Buffer, dh: Buffer): [Buffer, Buffer] {
  const out = hkdf(dh, rk, v.rootInfo, 64);
  return [out.subarray(0, 32), out.subarray(32, 64)];
}

/** KDF_CK: [next chain key, message key]. */
export const kdfCk = (ck: Buffer): [Buffer, Buffer] => [hmac(ck, TWO), hmac(ck, ONE)];

function messageKeys(v: RatchetVersion, mk: Buffer): { enc: Buffer; auth: Buffer; iv: Buffer } {
  const out = hkdf(mk, ZERO_SALT, v.messageKeyInfo, 80);
  return { enc: out.subarray(0, 32), auth: out.subarray(32, 64), iv: out.subarray(64, 80) };
}

/**
 * The initiator's state (Alice in the spec): its first sending chain comes from a DH with the
 * responder's ratchet key (OMEMO: the signed prekey). `receivingChain` is for versions whose key
 * agreement also yields a first receiving chain for that key (legacy libsignal).
 */
export function initiate(v: RatchetVersion, rootKey: Buffer, theirRatchet: Buffer, opts: { receivingChain?: Buffer; ours?: X25519KeyPair } = {}): RatchetState {
  const dhs = opts.ours ?? generateX25519();
  const [rk, cks] = kdfRk(v, rootKey, x25519(dhs.priv, theirRatchet));
  return { rk, dhs, dhr: theirRatchet, cks, ckr: opts.receivingChain ?? null, ns: 0, nr: 0, pn: 0, skipped: new Map() };
}

/**
 * The responder's state (Bob): its ratchet key pair is the one the initiator used (the signed
 * prekey); it can send once the first message arrived, or at once with `sendingChain` (legacy).
 */
export function respond(rootKey: Buffer, ours: X25519KeyPair, opts: { sendingChain?: Buffer } = {}): RatchetState {
  return { rk: rootKey, dhs: ours, dhr: null, cks: opts.sendingChain ?? null, ckr: null, ns: 0, nr: 0, pn: 0, skipped: new Map() };
}

export function canSend(s: RatchetState): boolean {
  return s.cks !== null;
}

/** Encrypts `plaintext`; mutates `s`. Returns the wire bytes and the header used. */
export function encrypt(v: RatchetVersion, s: RatchetState, plaintext: Buffer, ad: Buffer): { wire: Buffer; header: Header } {
  if (!s.cks) throw new RatchetError('no-sending-chain');
  const [ck, mk] = kdfCk(s.cks);
  const header: Header = { dh: s.dhs.pub, n: s.ns, pn: s.pn };
  s.cks = ck;
  s.ns++;
  return { wire: sealWithKey(v, mk, header, plaintext, ad), header };
}

/** One message under message key `mk` (the ENCRYPT function of the spec). */
export function sealWithKey(v: RatchetVersion, mk: Buffer, header: Header, plaintext: Buffer, ad: Buffer): Buffer {
  const keys = messageKeys(v, mk);
  const ciphertext = aesCbcEncrypt(keys.enc, keys.iv, plaintext);
  const encoded = v.codec.encode(header, ciphertext);
  const mac = hmac(keys.auth, ad, encoded).subarray(0, v.macLength);
  return v.codec.seal(encoded, mac);
}

/** The header of a wire message without decrypting (null if not parseable). */
export function peekHeader(v: RatchetVersion, wire: Buffer): Header | null {
  return v.codec.open(wire)?.header ?? null;
}

const skipKey = (dh: Buffer, n: number): string => `${dh.toString('base64')}:${n}`;

/** The skipped keys of `next`, made its own (not the input state's) before the first change. */
function ownSkipped(next: RatchetState, from: RatchetState): Map<string, Buffer> {
  if (next.skipped === from.skipped) next.skipped = new Map(from.skipped);
  return next.skipped;
}

function skipTo(v: RatchetVersion, s: RatchetState, until: number, from: RatchetState): void {
  if (!s.ckr || !s.dhr) return;
  if (until - s.nr > v.maxSkipPerMessage) throw new RatchetError('too-many-skipped');
  if (s.nr >= until) return;
  const skipped = ownSkipped(s, from);
  while (s.nr < until) {
    const [ck, mk] = kdfCk(s.ckr);
    skipped.set(skipKey(s.dhr, s.nr), mk);
    s.ckr = ck;
    s.nr++;
  }
  while (skipped.size > v.maxSkippedKeys) skipped.delete(skipped.keys().next().value as string);
}

/** A message as the version's codec opened it (decrypt takes one opened already, so it is read once). */
export type OpenedMessage = NonNullable<ReturnType<MessageCodec['open']>>;

/**
 * Decrypts one message. Returns the plaintext and the new state (the input state is not changed: the
 * new one shares its buffers and, until a key is skipped or used from it, its skipped-key map);
 * throws RatchetError (malformed, bad-mac, duplicate, too-many-skipped). `opened` is `wire` as the
 * codec opens it, when the caller has read it already.
 */
export function decrypt(
  v: RatchetVersion,
  s: RatchetState,
  wire: Buffer,
  ad: Buffer,
  opened?: OpenedMessage,
): { plaintext: Buffer; state: RatchetState; header: Header; turned: boolean } {
  const m = opened ?? v.codec.open(wire);
  if (!m) throw new RatchetError('malformed');
  const { header } = m;
  const next: RatchetState = { ...s };
  let mk: Buffer;
  let turned = false;
  const sk = next.skipped.size > 0 ? skipKey(header.dh, header.n) : null;
  const stored = sk === null ? undefined : next.skipped.get(sk);
  if (stored) {
    mk = stored;
    ownSkipped(next, s).delete(sk!);
  } else {
    if (!next.dhr || !header.dh.equals(next.dhr)) {
      skipTo(v, next, header.pn, s);
      // DH ratchet step: a new receiving chain for their key, then a new sending chain with a new key of ours.
      next.pn = next.ns;
      next.ns = 0;
      next.nr = 0;
      next.dhr = header.dh;
      [next.rk, next.ckr] = kdfRk(v, next.rk, x25519(next.dhs.priv, header.dh));
      next.dhs = generateX25519();
      [next.rk, next.cks] = kdfRk(v, next.rk, x25519(next.dhs.priv, header.dh));
      turned = true;
    }
    if (header.n < next.nr) throw new RatchetError('duplicate');
    skipTo(v, next, header.n, s);
    // Their key is the one we know but no chain came of it yet (legacy: the signed prekey): not a message of this session.
    if (!next.ckr) throw new RatchetError('malformed');
    const [ck, key] = kdfCk(next.ckr);
    next.ckr = ck;
    next.nr++;
    mk = key;
  }
  const keys = messageKeys(v, mk);
  const mac = hmac(keys.auth, ad, m.encoded).subarray(0, v.macLength);
  if (!macEqual(mac, m.mac)) throw new RatchetError('bad-mac');
  let plaintext: Buffer;
  try {
    plaintext = aesCbcDecrypt(keys.enc, keys.iv, m.ciphertext);
  } catch {
    // Authenticated but not decryptable: the sender is broken, not the channel.
    throw new RatchetError('malformed');
  }
  return { plaintext, state: next, header, turned };
}

// ---- storage form ----

export interface StoredRatchet {
  rk: string;
  dhs: [string, string];
  dhr: string | null;
  cks: string | null;
  ckr: string | null;
  ns: number;
  nr: number;
  pn: number;
  skipped: Array<[string, string]>;
}

const b = (x: Buffer): string => x.toString('base64');
const ub = (x: string): Buffer => Buffer.from(x, 'base64');

export function toStored(s: RatchetState): StoredRatchet {
  return {
    rk: b(s.rk),
    dhs: [b(s.dhs.priv), b(s.dhs.pub)],
    dhr: s.dhr ? b(s.dhr) : null,
    cks: s.cks ? b(s.cks) : null,
    ckr: s.ckr ? b(s.ckr) : null,
    ns: s.ns,
    nr: s.nr,
    pn: s.pn,
    skipped: [...s.skipped].map(([k, mk]) => [k, b(mk)]),
  };
}

export function fromStored(r: StoredRatchet): RatchetState {
  return {
    rk: ub(r.rk),
    dhs: { priv: ub(r.dhs[0]), pub: ub(r.dhs[1]) },
    dhr: r.dhr ? ub(r.dhr) : null,
    cks: r.cks ? ub(r.cks) : null,
    ckr: r.ckr ? ub(r.ckr) : null,
    ns: r.ns,
    nr: r.nr,
    pn: r.pn,
    skipped: new Map(r.skipped.map(([k, mk]) => [k, ub(mk)])),
  };
}
