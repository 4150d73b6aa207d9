// Stored form of legacy OMEMO session records (legacy-protocol.ts LegacyRecord), and the reading of
// the records the engine wrote while it ran on libsignal-protocol-typescript: its binary form
// (session-codec.ts, magic 'SR') and the library's v1 JSON. Old records are converted on read and
// written back in this form with the next change.
// Layout (unsigned LEB128 varints; `bytes` = length + raw; `opt` = 0/1 flag then the value):
//   'L' 'R' version=1, sessions: count, then per session:
//     baseKey bytes, ours, remoteIdentityKey bytes, registrationId+1, closed+1,
//     opt(pending: baseKey bytes, preKeyId+1, signedPreKeyId),
//     rk bytes, dhs priv bytes, dhs pub bytes, opt dhr, opt cks, opt ckr, ns, nr, pn,
//     skipped: count x (dh bytes, n, mk bytes)   (oldest first)
import type { RatchetState } from '../ratchet/double-ratchet.js';
import { MAX_ARCHIVED_SESSIONS, MAX_SKIPPED_KEYS, without05, type LegacyRecord, type LegacySession } from './legacy-protocol.js';
import { readRatchet, SessionRecordReader, SessionRecordWriter, writeRatchet } from './record-bytes.js';
import { decodeSessions, isBinaryRecord, type LibraryChain, type LibrarySession } from './session-codec.js';

const MAGIC0 = 0x4c; // 'L'
const MAGIC1 = 0x52; // 'R'
const VERSION = 1;

class Writer extends SessionRecordWriter {
  constructor() {
    super('legacy session record', 512);
  }
}

class Reader extends SessionRecordReader {
  constructor(b: Buffer) {
    super(b, 'legacy session record');
  }
}

export const isLegacyRecord = (v: Buffer): boolean => v.length >= 3 && v[0] === MAGIC0 && v[1] === MAGIC1;

export function encodeRecord(r: LegacyRecord): Buffer {
  const w = new Writer();
  w.uint(MAGIC0);
  w.uint(MAGIC1);
  w.uint(VERSION);
  w.uint(r.sessions.length);
  for (const s of r.sessions) {
    w.bytes(s.baseKey);
    w.uint(s.ours ? 1 : 0);
    w.bytes(s.remoteIdentityKey);
    w.uint(s.registrationId === undefined ? 0 : s.registrationId + 1);
    w.uint(s.closed + 1);
    if (s.pending) {
      w.uint(1);
      w.bytes(s.pending.baseKey);
      w.uint(s.pending.preKeyId === undefined ? 0 : s.pending.preKeyId + 1);
      w.uint(s.pending.signedPreKeyId);
    } else w.uint(0);
    writeRatchet(w, s.ratchet);
  }
  return w.done();
}

function decodeOurs(v: Buffer): LegacyRecord {
  const r = new Reader(v);
  r.uint();
  r.uint();
  const version = r.uint();
  if (version !== VERSION) throw new Error(`legacy session record: unknown version ${version}`);
  const sessions: LegacySession[] = [];
  for (let i = r.uint(); i > 0; i--) {
    const baseKey = r.bytes();
    const ours = r.uint() === 1;
    const remoteIdentityKey = r.bytes();
    const reg = r.uint();
    const closed = r.uint() - 1;
    let pending: LegacySession['pending'];
    if (r.uint() === 1) {
      const pBase = r.bytes();
      const pId = r.uint();
      pending = { baseKey: pBase, preKeyId: pId === 0 ? undefined : pId - 1, signedPreKeyId: r.uint() };
    }
    const ratchet = readRatchet(r);
    sessions.push({ baseKey, ours, remoteIdentityKey, registrationId: reg === 0 ? undefined : reg - 1, closed, pending, ratchet });
  }
  if (r.n !== v.length) throw new Error('legacy session record: trailing bytes');
  return { sessions };
}

// ---- records of the libsignal-based engine ----

const CHAIN_SENDING = 1;
const CHAIN_RECEIVING = 2;
const BASE_KEY_OURS = 1;
const raw = (x: ArrayBuffer | Uint8Array): Buffer => Buffer.from(x instanceof Uint8Array ? x : new Uint8Array(x));
const b64key = (k33: Buffer): string => raw(k33).toString('base64');

/** One libsignal session in our terms: the current chains become the ratchet's, old chains' unused keys its skipped keys. */
export function fromLibrarySession(x: LibrarySession<ArrayBuffer>): LegacySession {
  const r = x.currentRatchet;
  if (!r.ephemeralKeyPair) throw new Error('legacy session record: no ratchet key pair');
  const ourPub33 = raw(r.ephemeralKeyPair.pubKey);
  const remote33 = r.lastRemoteEphemeralKey ? raw(r.lastRemoteEphemeralKey) : null;
  const chainOf = (k: Buffer | null, type: number): LibraryChain<ArrayBuffer> | undefined => {
    const c = k ? x.chains[b64key(k)] : undefined;
    return c && c.chainType === type ? c : undefined;
  };
  const send = chainOf(ourPub33, CHAIN_SENDING);
  const recv = chainOf(remote33, CHAIN_RECEIVING);
  // Unused message keys of every receiving chain, oldest chain first, lowest counter first.
  const order = [...x.oldRatchetList].sort((a, b) => a.added - b.added).map((o) => b64key(raw(o.ephemeralKey)));
  for (const k of Object.keys(x.chains)) if (!order.includes(k)) order.push(k);
  const skipped = new Map<string, Buffer>();
  for (const k of order) {
    const c = x.chains[k];
    if (!c || c.chainType !== CHAIN_RECEIVING) continue;
    const dh = without05(Buffer.from(k, 'base64')).toString('base64');
    for (const n of Object.keys(c.messageKeys).map(Number).sort((a, b) => a - b)) skipped.set(`${dh}:${n}`, raw(c.messageKeys[n]!));
  }
  while (skipped.size > MAX_SKIPPED_KEYS) skipped.delete(skipped.keys().next().value as string);
  const ratchet: RatchetState = {
    rk: raw(r.rootKey),
    dhs: { priv: raw(r.ephemeralKeyPair.privKey), pub: without05(ourPub33) },
    dhr: remote33 ? without05(remote33) : null,
    cks: send?.chainKey.key ? raw(send.chainKey.key) : null,
    ckr: recv?.chainKey.key ? raw(recv.chainKey.key) : null,
    ns: send ? send.chainKey.counter + 1 : 0,
    nr: recv ? recv.chainKey.counter + 1 : 0,
    pn: Math.max(r.previousCounter + 1, 0),
    skipped,
  };
  const p = x.pendingPreKey;
  return {
    baseKey: raw(x.indexInfo.baseKey ?? new Uint8Array(0)),
    ours: x.indexInfo.baseKeyType === BASE_KEY_OURS,
    remoteIdentityKey: raw(x.indexInfo.remoteIdentityKey),
    registrationId: x.registrationId,
    ratchet,
    pending: p ? { baseKey: raw(p.baseKey), preKeyId: p.preKeyId || undefined, signedPreKeyId: p.signedKeyId } : undefined,
    closed: x.indexInfo.closed,
  };
}

function fromLibrarySessions(all: Record<string, LibrarySession<ArrayBuffer>>): LegacyRecord {
  const sessions = Object.values(all).map(fromLibrarySession);
  const open = sessions.filter((s) => s.closed === -1);
  const closed = sessions.filter((s) => s.closed !== -1).sort((a, b) => b.closed - a.closed);
  return { sessions: [...open.slice(0, 1), ...closed.slice(0, MAX_ARCHIVED_SESSIONS)] };
}

interface JsonChain {
  chainType: number;
  chainKey: { key?: string; counter: number };
  messageKeys: Record<string, string>;
}
interface JsonSession {
  indexInfo: { closed: number; remoteIdentityKey: string; baseKey?: string; baseKeyType?: number };
  registrationId?: number;
  currentRatchet: { rootKey: string; ephemeralKeyPair?: { pubKey: string; privKey: string }; lastRemoteEphemeralKey?: string; previousCounter: number; added?: number };
  pendingPreKey?: { baseKey: string; preKeyId?: number; signedKeyId: number };
  oldRatchetList: Array<{ ephemeralKey: string; added: number }>;
  chains: Record<string, JsonChain>;
}

const ab = (s: string): ArrayBuffer => {
  const b = Buffer.from(s, 'base64');
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
};

/** The library's v1 JSON (SessionRecord.serialize). */
function fromLibraryJson(text: string): LegacyRecord {
  const data = JSON.parse(text) as { version?: string; sessions?: Record<string, JsonSession> };
  if (data.version !== 'v1' || !data.sessions || typeof data.sessions !== 'object') throw new Error('legacy session record: unknown library record version');
  const all: Record<string, LibrarySession<ArrayBuffer>> = {};
  for (const [k, x] of Object.entries(data.sessions)) {
    const chains: Record<string, LibraryChain<ArrayBuffer>> = {};
    for (const [name, c] of Object.entries(x.chains)) {
      const messageKeys: Record<number, ArrayBuffer> = {};
      for (const [n, mk] of Object.entries(c.messageKeys)) messageKeys[Number(n)] = ab(mk);
      chains[name] = { chainType: c.chainType, chainKey: { key: c.chainKey.key === undefined ? undefined : ab(c.chainKey.key), counter: c.chainKey.counter }, messageKeys };
    }
    const r = x.currentRatchet;
    all[k] = {
      indexInfo: {
        closed: x.indexInfo.closed,
        remoteIdentityKey: ab(x.indexInfo.remoteIdentityKey),
        baseKey: x.indexInfo.baseKey === undefined ? undefined : ab(x.indexInfo.baseKey),
        baseKeyType: x.indexInfo.baseKeyType,
      },
      registrationId: x.registrationId,
      currentRatchet: {
        rootKey: ab(r.rootKey),
        ephemeralKeyPair: r.ephemeralKeyPair && { pubKey: ab(r.ephemeralKeyPair.pubKey), privKey: ab(r.ephemeralKeyPair.privKey) },
        lastRemoteEphemeralKey: r.lastRemoteEphemeralKey === undefined ? (undefined as unknown as ArrayBuffer) : ab(r.lastRemoteEphemeralKey),
        previousCounter: r.previousCounter,
        added: r.added,
      },
      pendingPreKey: x.pendingPreKey && { ...x.pendingPreKey, baseKey: ab(x.pendingPreKey.baseKey) },
      oldRatchetList: x.oldRatchetList.map((o) => ({ ephemeralKey: ab(o.ephemeralKey), added: o.added })),
      chains,
    };
  }
  return fromLibrarySessions(all);
}

/** A stored record in any of the three forms. */
export function decodeRecord(v: Buffer): LegacyRecord {
  if (isLegacyRecord(v)) return decodeOurs(v);
  if (isBinaryRecord(v)) return fromLibrarySessions(decodeSessions(v));
  return fromLibraryJson(v.toString('utf8'));
}
