// The OTR authenticated key exchange (OTR v3 spec, "Authenticated Key Exchange"; v2 is the same
// without instance tags): D-H Commit, D-H Key, Reveal Signature, Signature, as a state machine over
// plain JSON state so that a half-done exchange can be stored like a session. Every function returns
// the new state and what to send; bad input is reported as `error`, never thrown.
import { randomBytes } from 'node:crypto';
import { bytesToBig, OtrParseError, Reader, Writer } from './bytes.js';
import { dhSecret, inGroup, newDhKey, type DhKey } from './dh.js';
import { readPublic, serializePublic, sign, verify, type DsaPrivate, type DsaPublic } from './dsa.js';
import { MSG_DH_COMMIT, MSG_DH_KEY, MSG_REVEAL_SIG, MSG_SIGNATURE, type Header, type OtrMessage } from './messages.js';
import { aesCtr, equalBytes, hmacSha256, sha256 } from './primitives.js';

export type AuthState = 'none' | 'awaiting-dhkey' | 'awaiting-revealsig' | 'awaiting-sig';

/** JSON-safe: bigints and bytes as hex. */
export interface AkeState {
  state: AuthState;
  /** Our DH key for this exchange (x as the committer, y as the responder). */
  ourPriv?: string;
  ourPub?: string;
  /** The committer's AES key r (ours while awaiting the D-H Key). */
  r?: string;
  /** The commitment: ours (awaiting-dhkey) or theirs (awaiting-revealsig). */
  encGx?: string;
  hashGx?: string;
  /** Their DH public value once known. */
  theirPub?: string;
  /** The Reveal Signature we sent, for a retransmission when the same D-H Key comes again. */
  lastRevealSig?: string;
}

/** What a finished exchange gives the data phase. */
export interface AkeResult {
  ourDh: DhKey;
  /** Our keyid for ourDh (always 1). */
  ourKeyId: number;
  theirDh: bigint;
  theirKeyId: number;
  theirLongTerm: DsaPublic;
  ssid: Buffer;
  extraKey: Buffer;
}

export interface AkeStep {
  state: AkeState;
  send?: OtrMessage;
  done?: AkeResult;
  /** Why a message was refused (malformed, bad MAC or signature): the exchange is unchanged. */
  error?: string;
}

const OUR_KEYID = 1;
const hex = (b: Uint8Array | bigint) => (typeof b === 'bigint' ? b.toString(16) : Buffer.from(b).toString('hex'));
const big = (h: string) => BigInt(`0x${h}`);
const buf = (h: string) => Buffer.from(h, 'hex');

export const idleAke = (): AkeState => ({ state: 'none' });

function ourKey(s: AkeState): DhKey {
  return { priv: big(s.ourPriv!), pub: big(s.ourPub!) };
}

interface AuthKeys {
  ssid: Buffer;
  c: Buffer;
  cp: Buffer;
  m1: Buffer;
  m2: Buffer;
  m1p: Buffer;
  m2p: Buffer;
  extra: Buffer;
}

function authKeys(priv: bigint, their: bigint): AuthKeys {
  const secbytes = new Writer().mpi(dhSecret(priv, their)).bytes();
  const h2 = (b: number) => sha256(Buffer.from([b]), secbytes);
  const c = h2(0x01);
  return { ssid: h2(0x00).subarray(0, 8), c: c.subarray(0, 16), cp: c.subarray(16, 32), m1: h2(0x02), m2: h2(0x03), m1p: h2(0x04), m2p: h2(0x05), extra: h2(0xff) };
}

/** MAC of an encrypted signature: the first 20 bytes of HMAC-SHA256 over it as DATA. */
const sigMac = (key: Buffer, encSig: Buffer) => hmacSha256(key, new Writer().data(encSig).bytes()).subarray(0, 20);

/** X = PUBKEY || keyid || sig(M), M = HMAC-SHA256_m(g^ours, g^theirs, PUBKEY, keyid); encrypted with c. */
function pubkeyAuth(dsa: DsaPrivate, c: Buffer, m: Buffer, ours: bigint, theirs: bigint): Buffer {
  const pub = serializePublic(dsa);
  const M = hmacSha256(m, new Writer().mpi(ours).mpi(theirs).raw(pub).int(OUR_KEYID).bytes());
  return aesCtr(c, new Writer().raw(pub).int(OUR_KEYID).raw(sign(dsa, M)).bytes());
}

function checkPubkeyAuth(c: Buffer, m: Buffer, encSig: Buffer, theirs: bigint, ours: bigint): { key: DsaPublic; keyId: number } | string {
  try {
    const x = aesCtr(c, encSig);
    const r = new Reader(x);
    const key = readPublic(r);
    const pubBytes = x.subarray(0, r.offset);
    const keyId = r.int('keyid');
    if (keyId === 0) return 'keyid 0';
    const sig = r.fixed(r.remaining, 'signature');
    const M = hmacSha256(m, new Writer().mpi(theirs).mpi(ours).raw(pubBytes).int(keyId).bytes());
    return verify(key, M, sig) ? { key, keyId } : 'bad signature';
  } catch (e) {
    if (e instanceof OtrParseError) return e.message;
    throw e;
  }
}

/** Starts an exchange: a D-H Commit. */
export function startAke(h: Header): AkeStep {
  const dh = newDhKey();
  const r = randomBytes(16);
  const gx = new Writer().mpi(dh.pub).bytes();
  const encGx = aesCtr(r, gx);
  const hashGx = sha256(gx);
  return {
    state: { state: 'awaiting-dhkey', ourPriv: hex(dh.priv), ourPub: hex(dh.pub), r: hex(r), encGx: hex(encGx), hashGx: hex(hashGx) },
    send: { type: MSG_DH_COMMIT, h, encGx, hashGx },
  };
}

function answerCommit(h: Header, m: Extract<OtrMessage, { type: typeof MSG_DH_COMMIT }>, keep?: AkeState): AkeStep {
  const dh = keep?.ourPriv ? ourKey(keep) : newDhKey();
  return {
    state: { state: 'awaiting-revealsig', ourPriv: hex(dh.priv), ourPub: hex(dh.pub), encGx: hex(m.encGx), hashGx: hex(m.hashGx) },
    send: { type: MSG_DH_KEY, h, gy: dh.pub },
  };
}

export function onDhCommit(s: AkeState, h: Header, m: Extract<OtrMessage, { type: typeof MSG_DH_COMMIT }>): AkeStep {
  switch (s.state) {
    case 'awaiting-dhkey': {
      // Both sides committed: the higher hash keeps its commitment and resends it.
      if (bytesToBig(buf(s.hashGx!)) > bytesToBig(m.hashGx)) {
        return { state: s, send: { type: MSG_DH_COMMIT, h, encGx: buf(s.encGx!), hashGx: buf(s.hashGx!) } };
      }
      return answerCommit(h, m);
    }
    case 'awaiting-revealsig':
      // Retransmit our D-H Key, but take the new commitment.
      return answerCommit(h, m, s);
    default:
      return answerCommit(h, m);
  }
}

export function onDhKey(s: AkeState, h: Header, m: Extract<OtrMessage, { type: typeof MSG_DH_KEY }>, dsa: DsaPrivate): AkeStep {
  if (s.state === 'awaiting-sig') {
    if (s.theirPub && big(s.theirPub) === m.gy && s.lastRevealSig) {
      const last = JSON.parse(s.lastRevealSig) as { r: string; encSig: string; mac: string };
      return { state: s, send: { type: MSG_REVEAL_SIG, h, r: buf(last.r), encSig: buf(last.encSig), mac: buf(last.mac) } };
    }
    return { state: s };
  }
  if (s.state !== 'awaiting-dhkey') return { state: s };
  if (!inGroup(m.gy)) return { state: s, error: 'g^y out of range' };
  const ours = ourKey(s);
  const k = authKeys(ours.priv, m.gy);
  const encSig = pubkeyAuth(dsa, k.c, k.m1, ours.pub, m.gy);
  const mac = sigMac(k.m2, encSig);
  const r = buf(s.r!);
  return {
    state: { ...s, state: 'awaiting-sig', theirPub: hex(m.gy), lastRevealSig: JSON.stringify({ r: hex(r), encSig: hex(encSig), mac: hex(mac) }) },
    send: { type: MSG_REVEAL_SIG, h, r, encSig, mac },
  };
}

export function onRevealSig(s: AkeState, h: Header, m: Extract<OtrMessage, { type: typeof MSG_REVEAL_SIG }>, dsa: DsaPrivate): AkeStep {
  if (s.state !== 'awaiting-revealsig') return { state: s };
  const gxmpi = aesCtr(m.r, buf(s.encGx!));
  if (!equalBytes(sha256(gxmpi), buf(s.hashGx!))) return { state: s, error: 'commitment does not match' };
  let gx: bigint;
  try {
    const rd = new Reader(gxmpi);
    gx = rd.mpi('g^x');
    rd.end('g^x');
  } catch {
    return { state: s, error: 'bad g^x' };
  }
  if (!inGroup(gx)) return { state: s, error: 'g^x out of range' };
  const ours = ourKey(s);
  const k = authKeys(ours.priv, gx);
  if (!equalBytes(sigMac(k.m2, m.encSig), m.mac)) return { state: s, error: 'bad MAC' };
  const auth = checkPubkeyAuth(k.c, k.m1, m.encSig, gx, ours.pub);
  if (typeof auth === 'string') return { state: s, error: auth };
  const encSig = pubkeyAuth(dsa, k.cp, k.m1p, ours.pub, gx);
  return {
    state: idleAke(),
    send: { type: MSG_SIGNATURE, h, encSig, mac: sigMac(k.m2p, encSig) },
    done: { ourDh: ours, ourKeyId: OUR_KEYID, theirDh: gx, theirKeyId: auth.keyId, theirLongTerm: auth.key, ssid: k.ssid, extraKey: k.extra },
  };
}

export function onSignature(s: AkeState, m: Extract<OtrMessage, { type: typeof MSG_SIGNATURE }>): AkeStep {
  if (s.state !== 'awaiting-sig') return { state: s };
  const ours = ourKey(s);
  const gy = big(s.theirPub!);
  const k = authKeys(ours.priv, gy);
  if (!equalBytes(sigMac(k.m2p, m.encSig), m.mac)) return { state: s, error: 'bad MAC' };
  const auth = checkPubkeyAuth(k.cp, k.m1p, m.encSig, gy, ours.pub);
  if (typeof auth === 'string') return { state: s, error: auth };
  return { state: idleAke(), done: { ourDh: ours, ourKeyId: OUR_KEYID, theirDh: gy, theirKeyId: auth.keyId, theirLongTerm: auth.key, ssid: k.ssid, extraKey: k.extra } };
}

