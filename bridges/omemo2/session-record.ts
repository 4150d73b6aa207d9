// The stored form of an OMEMO 2 session (session.ts Session), written once per message: a binary
// record of ~300 bytes that encodes in a few microseconds, instead of the JSON of base64 strings
// (~600 bytes, toStoredSession) the engine wrote before. Rows in that JSON form are still read
// (they begin with '{'); each is written back in this form with its session's next change.
// Layout (unsigned LEB128 varints; `bytes` = length + raw; `opt` = 0/1 flag then the value):
//   'O' '2' version=1, session, opt(previous session)
//   session: ad bytes, theirIk bytes, ek bytes, initiator 0/1, opt(kex: pkId, spkId, ek bytes),
//            rk bytes, dhs priv bytes, dhs pub bytes, opt dhr, opt cks, opt ckr, ns, nr, pn,
//            skipped: count x (dh bytes, n, mk bytes)   (oldest first)
import { readRatchet, SessionRecordReader, SessionRecordWriter, writeRatchet } from '../omemo/record-bytes.js';
import { fromStoredSession, type Session, type StoredSession } from './session.js';

const MAGIC0 = 0x4f; // 'O'
const MAGIC1 = 0x32; // '2'
const VERSION = 1;
const WHAT = 'omemo2 session record';

class Writer extends SessionRecordWriter {
  constructor() {
    super(WHAT, 384);
  }
}

class Reader extends SessionRecordReader {
  constructor(b: Buffer) {
    super(b, WHAT);
  }
}

function writeSession(w: Writer, s: Session): void {
  w.bytes(s.ad);
  w.bytes(s.theirIk);
  w.bytes(s.ek);
  w.uint(s.initiator ? 1 : 0);
  if (s.kex) {
    w.uint(1);
    w.uint(s.kex.pkId);
    w.uint(s.kex.spkId);
    w.bytes(s.kex.ek);
  } else w.uint(0);
  writeRatchet(w, s.ratchet);
}

function readSession(r: Reader): Session {
  const ad = r.bytes();
  const theirIk = r.bytes();
  const ek = r.bytes();
  const initiator = r.uint() === 1;
  const kex = r.uint() === 1 ? { pkId: r.uint(), spkId: r.uint(), ek: r.bytes() } : null;
  const ratchet = readRatchet(r);
  return { ad, ratchet, theirIk, kex, ek, initiator, previous: null };
}

export function encodeSession(s: Session): Buffer {
  const w = new Writer();
  w.uint(MAGIC0);
  w.uint(MAGIC1);
  w.uint(VERSION);
  writeSession(w, s);
  if (s.previous) {
    w.uint(1);
    writeSession(w, s.previous);
  } else w.uint(0);
  return w.done();
}

/** A stored session in either form: this record, or the JSON the engine wrote before it. */
export function decodeSession(v: Buffer): Session {
  if (v[0] === 0x7b) return fromStoredSession(JSON.parse(v.toString('utf8')) as StoredSession);
  const r = new Reader(v);
  if (r.uint() !== MAGIC0 || r.uint() !== MAGIC1) throw new Error(`${WHAT}: unknown form`);
  const version = r.uint();
  if (version !== VERSION) throw new Error(`${WHAT}: unknown version ${version}`);
  const s = readSession(r);
  if (r.uint() === 1) s.previous = readSession(r);
  if (r.n !== v.length) throw new Error(`${WHAT}: trailing bytes`);
  return s;
}

/** Whether a stored row is in this form (not the older JSON). */
export const isBinarySession = (v: Buffer): boolean => v.length >= 3 && v[0] === MAGIC0 && v[1] === MAGIC1;
