// Session records kept live in memory between messages. libsignal stores a record as a JSON string and
// re-parses it on every message (base64 in pure JS, ~100 us per session); we keep the parsed record
// and store it in a compact binary form (session-codec.ts). The library's JSON format is still read
// (records the library builds itself) and written where the library parses it (SessionBuilder).
//
// It also bounds the record, which the library does not: its removeOldChains deletes `session[idx]`
// instead of the chain (so old receiving chains and their skipped keys pile up forever), it never caps
// the number of skipped message keys, and it keeps 40 archived sessions that are re-serialized on
// every message. Limits below.
import { SessionRecord } from '@privacyresearch/libsignal-protocol-typescript/lib/session-record.js';
import type { Chain, SessionType } from '@privacyresearch/libsignal-protocol-typescript';
import { ab, b64 } from './bytes.js';
import { decodeSessions, encodeSessions, isBinaryRecord } from './session-codec.js';

/** Skipped message keys kept per session (over all its receiving chains); the oldest go first. */
export const MAX_SKIPPED_KEYS = 1000;
/** Old receiving chains kept per session (the library's own intended value). */
export const MAX_OLD_CHAINS = 10;
/** Archived (closed) sessions kept per device, for messages still in flight on a replaced session. */
export const MAX_ARCHIVED_SESSIONS = 10;

const RECORD_VERSION = 'v1';
const CHAIN_RECEIVING = 2;

type Str = string;
const s = (x: ArrayBuffer | undefined): Str | undefined => (x === undefined ? undefined : b64(x));
const a = (x: Str): ArrayBuffer => ab(Buffer.from(x, 'base64'));
const ao = (x: Str | undefined): ArrayBuffer | undefined => (x === undefined ? undefined : a(x));

function encodeChain(c: Chain<ArrayBuffer>): Chain<Str> {
  const messageKeys: Record<number, Str> = {};
  for (const k in c.messageKeys) messageKeys[k as unknown as number] = b64(c.messageKeys[k as unknown as number]!);
  return { chainType: c.chainType, chainKey: { key: s(c.chainKey.key), counter: c.chainKey.counter }, messageKeys };
}

function decodeChain(c: Chain<Str>): Chain<ArrayBuffer> {
  const messageKeys: Record<number, ArrayBuffer> = {};
  for (const k in c.messageKeys) messageKeys[k as unknown as number] = a(c.messageKeys[k as unknown as number]!);
  return { chainType: c.chainType, chainKey: { key: ao(c.chainKey.key), counter: c.chainKey.counter }, messageKeys };
}

function encodeSession(x: SessionType<ArrayBuffer>): SessionType<Str> {
  const chains: Record<string, Chain<Str>> = {};
  for (const k in x.chains) chains[k] = encodeChain(x.chains[k]!);
  const r = x.currentRatchet;
  return {
    indexInfo: {
      closed: x.indexInfo.closed,
      remoteIdentityKey: b64(x.indexInfo.remoteIdentityKey),
      baseKey: s(x.indexInfo.baseKey),
      baseKeyType: x.indexInfo.baseKeyType,
    },
    registrationId: x.registrationId,
    currentRatchet: {
      rootKey: b64(r.rootKey),
      ephemeralKeyPair: r.ephemeralKeyPair && { pubKey: b64(r.ephemeralKeyPair.pubKey), privKey: b64(r.ephemeralKeyPair.privKey) },
      lastRemoteEphemeralKey: b64(r.lastRemoteEphemeralKey),
      previousCounter: r.previousCounter,
      added: r.added,
    },
    pendingPreKey: x.pendingPreKey && { ...x.pendingPreKey, baseKey: b64(x.pendingPreKey.baseKey) },
    oldRatchetList: x.oldRatchetList.map((o) => ({ ephemeralKey: b64(o.ephemeralKey), added: o.added })),
    chains,
  };
}

function decodeSession(x: SessionType<Str>): SessionType<ArrayBuffer> {
  const chains: Record<string, Chain<ArrayBuffer>> = {};
  for (const k in x.chains) chains[k] = decodeChain(x.chains[k]!);
  const r = x.currentRatchet;
  return {
    indexInfo: {
      closed: x.indexInfo.closed,
      remoteIdentityKey: a(x.indexInfo.remoteIdentityKey),
      baseKey: ao(x.indexInfo.baseKey),
      baseKeyType: x.indexInfo.baseKeyType,
    },
    registrationId: x.registrationId,
    currentRatchet: {
      rootKey: a(r.rootKey),
      ephemeralKeyPair: r.ephemeralKeyPair && { pubKey: a(r.ephemeralKeyPair.pubKey), privKey: a(r.ephemeralKeyPair.privKey) },
      lastRemoteEphemeralKey: a(r.lastRemoteEphemeralKey),
      previousCounter: r.previousCounter,
      added: r.added,
    },
    pendingPreKey: x.pendingPreKey && { ...x.pendingPreKey, baseKey: a(x.pendingPreKey.baseKey) },
    oldRatchetList: x.oldRatchetList.map((o) => ({ ephemeralKey: a(o.ephemeralKey), added: o.added })),
    chains,
  };
}

/** Drops old receiving chains beyond MAX_OLD_CHAINS and skipped keys beyond MAX_SKIPPED_KEYS. */
export function trimSession(session: SessionType<ArrayBuffer>): void {
  const old = session.oldRatchetList;
  if (old.length > MAX_OLD_CHAINS) {
    old.sort((x, y) => x.added - y.added);
    for (const o of old.splice(0, old.length - MAX_OLD_CHAINS)) delete session.chains[b64(o.ephemeralKey)];
  }
  let excess = skippedKeyCount(session) - MAX_SKIPPED_KEYS;
  if (excess <= 0) return;
  // Receiving chains from oldest to newest: the listed old ones, then the current one.
  const listed = [...old].sort((x, y) => x.added - y.added).map((o) => b64(o.ephemeralKey));
  const order = [...listed, ...Object.keys(session.chains).filter((k) => !listed.includes(k))];
  for (const k of order) {
    const c = session.chains[k];
    if (!c || c.chainType !== CHAIN_RECEIVING) continue;
    const counters = Object.keys(c.messageKeys).map(Number).sort((x, y) => x - y);
    for (const n of counters.slice(0, excess)) delete c.messageKeys[n];
    excess -= Math.min(excess, counters.length);
    if (excess <= 0) return;
  }
}

/** Number of skipped message keys a session holds (for tests and diagnostics). */
export function skippedKeyCount(session: SessionType<ArrayBuffer>): number {
  let n = 0;
  for (const k in session.chains) {
    const c = session.chains[k]!;
    if (c.chainType !== CHAIN_RECEIVING) continue;
    for (const _ in c.messageKeys) n++;
  }
  return n;
}

let lastSerialized: { token: string; record: LiveRecord } | null = null;
let tokenSeq = 0;

export class LiveRecord extends SessionRecord {
  /** A record from its stored form: our binary encoding or the library's JSON (older rows). */
  static fromStored(v: Buffer): LiveRecord {
    return isBinaryRecord(v) ? LiveRecord.#adopt(decodeSessions(v)) : LiveRecord.fromLibraryJson(v.toString('utf8'));
  }

  /** Parses the library's v1 JSON (what SessionRecord.serialize() produces). */
  static fromLibraryJson(serialized: string): LiveRecord {
    const data = JSON.parse(serialized) as { version?: string; sessions: Record<string, SessionType<Str>> };
    if (data.version !== RECORD_VERSION) return LiveRecord.#adopt(SessionRecord.deserialize(serialized).sessions);
    const sessions: Record<string, SessionType> = {};
    for (const k in data.sessions) sessions[k] = decodeSession(data.sessions[k]!);
    return LiveRecord.#adopt(sessions);
  }

  static #adopt(sessions: Record<string, SessionType>): LiveRecord {
    const rec = new LiveRecord();
    rec.sessions = sessions;
    for (const k in rec.sessions) trimSession(rec.sessions[k]!);
    rec.removeOldSessions();
    return rec;
  }

  /** The record that produced `token` in the serialize() call just before (see serialize). */
  static claim(token: string): LiveRecord | undefined {
    const last = lastSerialized;
    lastSerialized = null;
    return last && last.token === token ? last.record : undefined;
  }

  toBinary(): Buffer {
    return encodeSessions(this.sessions);
  }

  /** The library's own JSON format (SessionBuilder parses it with SessionRecord.deserialize). */
  toLibraryJson(): string {
    const sessions: Record<string, SessionType<Str>> = {};
    for (const k in this.sessions) sessions[k] = encodeSession(this.sessions[k]!);
    return JSON.stringify({ sessions, version: RECORD_VERSION });
  }

  /**
   * The library calls `storage.storeSession(address, record.serialize())` and nothing else with the
   * result. Instead of a JSON string we hand it a token naming this record, and the store encodes the
   * live record itself (binary): no JSON on the message path.
   */
  override serialize(): string {
    const token = `\0live-record\0${++tokenSeq}`;
    lastSerialized = { token, record: this };
    return token;
  }

  /** Called by the library from updateSessionState before every store. */
  override removeOldChains(session: SessionType<ArrayBuffer>): void {
    trimSession(session);
  }

  override removeOldSessions(): void {
    const closed = Object.entries(this.sessions).filter(([, x]) => x.indexInfo.closed !== -1);
    if (closed.length <= MAX_ARCHIVED_SESSIONS) return;
    closed.sort(([, x], [, y]) => x.indexInfo.closed - y.indexInfo.closed);
    for (const [k] of closed.slice(0, closed.length - MAX_ARCHIVED_SESSIONS)) delete this.sessions[k];
  }
}
