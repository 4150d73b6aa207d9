// The data phase of an OTR session (OTR v3 spec, "Exchanging data"): AES-128-CTR data messages
// MACed with HMAC-SHA1, keys from the pair (our DH key, their DH key) in use, rotated as each side
// acknowledges the other's next key, counters that only go up, and used receiving MAC keys revealed
// once their keys are retired (that is OTR's deniability, on purpose). JSON-safe state so sessions
// are stored sealed and survive a restart.
import { Reader, Writer } from './bytes.js';
import { dhSecret, inGroup, newDhKey } from './dh.js';
import type { AkeResult } from './ake.js';
import { dataMacedBytes, MSG_DATA, type Header, type OtrMessage } from './messages.js';
import { aesCtr, equalBytes, hmacSha1, sha1 } from './primitives.js';

export type DataMessage = Extract<OtrMessage, { type: typeof MSG_DATA }>;

export const TLV_PADDING = 0;
export const TLV_DISCONNECTED = 1;
export const TLV_SMP_ABORT = 6;
/** SMP messages 1-4 and 1Q: declined with an abort. */
export const TLV_SMP = new Set([2, 3, 4, 5, 7]);

export interface Tlv {
  type: number;
  value: Buffer;
}

interface KeyPair {
  priv: string;
  pub: string;
}

export interface SessionState {
  /** Our newest DH key has id ourKeyId; the previous one ourKeyId - 1. */
  ourKeyId: number;
  ourCur: KeyPair;
  ourPrev: KeyPair | null;
  theirKeyId: number;
  theirCur: string;
  theirPrev: string | null;
  /** Per key pair `${ourId}:${theirId}`: the top half of the last counter sent and received. */
  ctr: Record<string, { send: number; recv: number }>;
  /** Receiving MAC keys used per pair (hex), revealed when the pair is retired. */
  usedMacs: Record<string, string>;
  /** Retired MAC keys (hex) to reveal in the next data message. */
  reveal: string[];
}

const hex = (v: bigint) => v.toString(16);
const big = (h: string) => BigInt(`0x${h}`);

export function sessionFromAke(a: AkeResult): SessionState {
  const next = newDhKey();
  return {
    ourKeyId: a.ourKeyId + 1,
    ourCur: { priv: hex(next.priv), pub: hex(next.pub) },
    ourPrev: { priv: hex(a.ourDh.priv), pub: hex(a.ourDh.pub) },
    theirKeyId: a.theirKeyId,
    theirCur: hex(a.theirDh),
    theirPrev: null,
    ctr: {},
    usedMacs: {},
    reveal: [],
  };
}

interface PairKeys {
  sendAes: Buffer;
  sendMac: Buffer;
  recvAes: Buffer;
  recvMac: Buffer;
}

/** Derived keys per (our key, their key), kept in memory: one modular exponentiation per key pair, not per message. */
const pairCache = new Map<string, PairKeys>();
const PAIR_CACHE_MAX = 4096;

function pairKeys(our: KeyPair, their: string): PairKeys {
  const id = `${our.priv}:${their}`;
  const hit = pairCache.get(id);
  if (hit) return hit;
  const keys = derivePairKeys(our, their);
  if (pairCache.size >= PAIR_CACHE_MAX) pairCache.delete(pairCache.keys().next().value!);
  pairCache.set(id, keys);
  return keys;
}

function derivePairKeys(our: KeyPair, their: string): PairKeys {
  const ourPub = big(our.pub);
  const theirPub = big(their);
  const secbytes = new Writer().mpi(dhSecret(big(our.priv), theirPub)).bytes();
  // The side with the higher public key is "high": it sends with 0x01 and receives with 0x02.
  const [sb, rb] = ourPub > theirPub ? [0x01, 0x02] : [0x02, 0x01];
  const sendAes = sha1(Buffer.from([sb]), secbytes).subarray(0, 16);
  const recvAes = sha1(Buffer.from([rb]), secbytes).subarray(0, 16);
  return { sendAes, sendMac: sha1(sendAes), recvAes, recvMac: sha1(recvAes) };
}

export function encodeTlvs(tlvs: Tlv[]): Buffer {
  const w = new Writer();
  for (const t of tlvs) w.short(t.type).short(t.value.length).raw(t.value);
  return w.bytes();
}

function parseTlvs(b: Buffer): Tlv[] {
  const r = new Reader(b);
  const out: Tlv[] = [];
  while (r.remaining >= 4) {
    const type = r.short();
    const len = r.short();
    out.push({ type, value: r.fixed(len, 'TLV') });
  }
  return out;
}

/** Encrypts `text` (and TLVs) into a data message; updates the counters and clears the reveal list. */
export function encryptData(s: SessionState, h: Header, text: Buffer, tlvs: Tlv[] = [], flags = 0): DataMessage {
  const senderKeyId = s.ourKeyId - 1;
  const our = s.ourPrev!;
  const pair = `${senderKeyId}:${s.theirKeyId}`;
  const keys = pairKeys(our, s.theirCur);
  const c = (s.ctr[pair] ??= { send: 0, recv: 0 });
  c.send += 1;
  const ctr = Buffer.alloc(8);
  ctr.writeBigUInt64BE(BigInt(c.send));
  const plain = tlvs.length ? Buffer.concat([text, Buffer.from([0]), encodeTlvs(tlvs)]) : text;
  const m: DataMessage = {
    type: MSG_DATA,
    h,
    flags,
    senderKeyId,
    recipientKeyId: s.theirKeyId,
    nextDh: big(s.ourCur.pub),
    ctr,
    encMsg: aesCtr(keys.sendAes, plain, ctr),
    mac: Buffer.alloc(20),
    oldMacKeys: Buffer.from(s.reveal.join(''), 'hex'),
    macedData: Buffer.alloc(0),
  };
  m.macedData = dataMacedBytes(m);
  m.mac = hmacSha1(keys.sendMac, m.macedData);
  s.reveal = [];
  return m;
}

export type DecryptResult = { ok: true; text: Buffer; tlvs: Tlv[] } | { ok: false; why: 'unknown-keys' | 'bad-mac' | 'old-counter' | 'bad-dh' };

/** Checks and decrypts a data message, then rotates keys as the message acknowledges them. */
export function decryptData(s: SessionState, m: DataMessage): DecryptResult {
  const our = m.recipientKeyId === s.ourKeyId ? s.ourCur : m.recipientKeyId === s.ourKeyId - 1 ? s.ourPrev : null;
  const their = m.senderKeyId === s.theirKeyId ? s.theirCur : m.senderKeyId === s.theirKeyId - 1 ? s.theirPrev : null;
  if (!our || !their || m.senderKeyId === 0 || m.recipientKeyId === 0) return { ok: false, why: 'unknown-keys' };
  const pair = `${m.recipientKeyId}:${m.senderKeyId}`;
  const keys = pairKeys(our, their);
  if (!equalBytes(hmacSha1(keys.recvMac, m.macedData), m.mac)) return { ok: false, why: 'bad-mac' };
  const top = Number(m.ctr.readBigUInt64BE());
  const c = (s.ctr[pair] ??= { send: 0, recv: 0 });
  if (top <= c.recv) return { ok: false, why: 'old-counter' };
  if (m.senderKeyId === s.theirKeyId && !inGroup(m.nextDh)) return { ok: false, why: 'bad-dh' };
  c.recv = top;
  s.usedMacs[pair] = keys.recvMac.toString('hex');
  const plain = aesCtr(keys.recvAes, m.encMsg, m.ctr);
  const nul = plain.indexOf(0);
  const text = nul < 0 ? plain : plain.subarray(0, nul);
  let tlvs: Tlv[] = [];
  if (nul >= 0) {
    try {
      tlvs = parseTlvs(plain.subarray(nul + 1));
    } catch {
      tlvs = [];
    }
  }
  // They used our newest key: it is acknowledged, so make a new one and retire the previous.
  if (m.recipientKeyId === s.ourKeyId) {
    retire(s, (p) => p.startsWith(`${s.ourKeyId - 1}:`));
    const next = newDhKey();
    s.ourPrev = s.ourCur;
    s.ourCur = { priv: hex(next.priv), pub: hex(next.pub) };
    s.ourKeyId += 1;
  }
  // Their newest key was used: take their next one, retire their previous.
  if (m.senderKeyId === s.theirKeyId) {
    retire(s, (p) => p.endsWith(`:${s.theirKeyId - 1}`));
    s.theirPrev = s.theirCur;
    s.theirCur = hex(m.nextDh);
    s.theirKeyId += 1;
  }
  return { ok: true, text: Buffer.from(text), tlvs };
}

function retire(s: SessionState, matches: (pair: string) => boolean): void {
  for (const pair of Object.keys(s.ctr)) {
    if (!matches(pair)) continue;
    delete s.ctr[pair];
    const mac = s.usedMacs[pair];
    if (mac) s.reveal.push(mac);
    delete s.usedMacs[pair];
  }
}
