// The binary form the engine stored libsignal session records in while it ran on
// libsignal-protocol-typescript. Today it is only read, to convert such rows (legacy-record.ts); the
// writer is kept for the tests that make rows of that era. Why it existed: the library's own JSON (base64
// values, binary-string map keys escaped as \u00XX) is ~930 bytes for one steady session, which
// with the sealing overhead crosses SQLite's in-page limit for a WITHOUT ROWID row (~1000 bytes)
// and makes every message write two pages. This form is ~420 bytes and encodes in a few us.
// Layout (all integers unsigned LEB128 varints; `bytes` = varint length + raw bytes; `opt` = 0/1 flag):
//   'S' 'R' version=1, sessions: count, then per session:
//     key bytes (the library's map key, a binary string of the base key, as latin1)
//     registrationId+1, closed+1, remoteIdentityKey bytes, opt baseKey bytes, baseKeyType
//     rootKey bytes, opt(ephemeral pub bytes, priv bytes), lastRemoteEphemeralKey bytes,
//     previousCounter+1, added+1, opt(pendingPreKey: baseKey bytes, preKeyId+1, signedKeyId)
//     oldRatchets: count x (ephemeralKey bytes, added)
//     chains: count x (name bytes (base64-decoded), chainType, counter+1, opt key bytes,
//                      messageKeys: count x (counter, key bytes))

/** libsignal-protocol-typescript's session types (session-types.d.ts), as the records hold them. */
export interface LibraryChain<T = ArrayBuffer> {
  chainType: number;
  chainKey: { key?: T; counter: number };
  messageKeys: { [key: number]: T };
}
export interface LibrarySession<T = ArrayBuffer> {
  indexInfo: { closed: number; remoteIdentityKey: T; baseKey?: T; baseKeyType?: number };
  registrationId?: number;
  currentRatchet: { rootKey: T; ephemeralKeyPair?: { pubKey: T; privKey: T }; lastRemoteEphemeralKey: T; previousCounter: number; added?: number };
  pendingPreKey?: { baseKey: T; preKeyId?: number; signedKeyId: number };
  oldRatchetList: Array<{ ephemeralKey: T; added: number }>;
  chains: { [ephKeyString: string]: LibraryChain<T> };
}
type SessionType = LibrarySession;
type Chain<T> = LibraryChain<T>;
import { ab, buf } from './bytes.js';
import { RecordReader, RecordWriter } from './record-bytes.js';

const MAGIC0 = 0x53; // 'S'
const MAGIC1 = 0x52; // 'R'
const VERSION = 1;

class Writer extends RecordWriter {
  constructor() {
    super('session codec', 1024);
  }
  override bytes(x: ArrayBuffer | Uint8Array): void {
    super.bytes(buf(x));
  }
  opt(x: ArrayBuffer | undefined): void {
    if (x === undefined) this.uint(0);
    else {
      this.uint(1);
      this.bytes(x);
    }
  }
}

class Reader extends RecordReader {
  constructor(b: Buffer) {
    super(b, 'session codec');
  }
  bytes(): ArrayBuffer {
    return ab(this.copy());
  }
  opt(): ArrayBuffer | undefined {
    return this.uint() === 0 ? undefined : this.bytes();
  }
}

export const isBinaryRecord = (v: Buffer): boolean => v.length >= 3 && v[0] === MAGIC0 && v[1] === MAGIC1;

export function encodeSessions(sessions: Record<string, SessionType>): Buffer {
  const w = new Writer();
  w.uint(MAGIC0);
  w.uint(MAGIC1);
  w.uint(VERSION);
  const keys = Object.keys(sessions);
  w.uint(keys.length);
  for (const k of keys) {
    const s = sessions[k]!;
    w.bytes(Buffer.from(k, 'latin1'));
    w.uint(s.registrationId === undefined ? 0 : s.registrationId + 1);
    w.uint(s.indexInfo.closed + 1);
    w.bytes(s.indexInfo.remoteIdentityKey);
    w.opt(s.indexInfo.baseKey);
    w.uint(s.indexInfo.baseKeyType ?? 0);
    const r = s.currentRatchet;
    w.bytes(r.rootKey);
    if (r.ephemeralKeyPair) {
      w.uint(1);
      w.bytes(r.ephemeralKeyPair.pubKey);
      w.bytes(r.ephemeralKeyPair.privKey);
    } else w.uint(0);
    w.bytes(r.lastRemoteEphemeralKey);
    w.uint(r.previousCounter + 1); // -1 occurs: the library copies a fresh chain's counter
    w.uint(r.added === undefined ? 0 : r.added + 1);
    const p = s.pendingPreKey;
    if (p) {
      w.uint(1);
      w.bytes(p.baseKey);
      w.uint(p.preKeyId === undefined ? 0 : p.preKeyId + 1);
      w.uint(p.signedKeyId);
    } else w.uint(0);
    w.uint(s.oldRatchetList.length);
    for (const o of s.oldRatchetList) {
      w.bytes(o.ephemeralKey);
      w.uint(o.added);
    }
    const names = Object.keys(s.chains);
    w.uint(names.length);
    for (const name of names) {
      const c = s.chains[name]!;
      w.bytes(Buffer.from(name, 'base64'));
      w.uint(c.chainType);
      w.uint(c.chainKey.counter + 1);
      w.opt(c.chainKey.key);
      const counters = Object.keys(c.messageKeys);
      w.uint(counters.length);
      for (const n of counters) {
        w.uint(Number(n));
        w.bytes(c.messageKeys[n as unknown as number]!);
      }
    }
  }
  return w.done();
}

export function decodeSessions(v: Buffer): Record<string, SessionType> {
  const r = new Reader(v);
  if (r.uint() !== MAGIC0 || r.uint() !== MAGIC1) throw new Error('session codec: not a session record');
  const version = r.uint();
  if (version !== VERSION) throw new Error(`session codec: unknown version ${version}`);
  const out: Record<string, SessionType> = {};
  for (let i = r.uint(); i > 0; i--) {
    const key = r.raw().toString('latin1');
    const reg = r.uint();
    const closed = r.uint() - 1;
    const remoteIdentityKey = r.bytes();
    const baseKey = r.opt();
    const bkt = r.uint();
    const rootKey = r.bytes();
    const ephemeralKeyPair = r.uint() === 1 ? { pubKey: r.bytes(), privKey: r.bytes() } : undefined;
    const lastRemoteEphemeralKey = r.bytes();
    const previousCounter = r.uint() - 1;
    const added = r.uint();
    let pendingPreKey: SessionType['pendingPreKey'];
    if (r.uint() === 1) {
      const pBase = r.bytes();
      const pId = r.uint();
      pendingPreKey = { baseKey: pBase, preKeyId: pId === 0 ? undefined : pId - 1, signedKeyId: r.uint() };
    }
    const oldRatchetList: SessionType['oldRatchetList'] = [];
    for (let j = r.uint(); j > 0; j--) oldRatchetList.push({ ephemeralKey: r.bytes(), added: r.uint() });
    const chains: Record<string, Chain<ArrayBuffer>> = {};
    for (let j = r.uint(); j > 0; j--) {
      const name = r.raw().toString('base64');
      const chainType = r.uint();
      const counter = r.uint() - 1;
      const ck = r.opt();
      const messageKeys: Record<number, ArrayBuffer> = {};
      for (let m = r.uint(); m > 0; m--) messageKeys[r.uint()] = r.bytes();
      chains[name] = { chainType, chainKey: { key: ck, counter }, messageKeys };
    }
    out[key] = {
      indexInfo: { closed, remoteIdentityKey, baseKey, baseKeyType: bkt === 0 ? undefined : bkt },
      registrationId: reg === 0 ? undefined : reg - 1,
      currentRatchet: { rootKey, ephemeralKeyPair, lastRemoteEphemeralKey, previousCounter, added: added === 0 ? undefined : added - 1 },
      pendingPreKey,
      oldRatchetList,
      chains,
    };
  }
  if (r.n !== v.length) throw new Error('session codec: trailing bytes');
  return out;
}
