// OTR messages as they travel in a <body> (OTR v3 spec, "Protocol state machine" and "Packet
// format"): the binary AKE and data messages, their `?OTR:<base64>.` form, fragments in both the v3
// (`?OTR|s|r,k,n,piece,`) and v2 (`?OTR,k,n,piece,`) formats, query messages, whitespace tags and
// error messages. Pure functions; parsing throws OtrParseError, which callers turn into a value.
import { OtrParseError, Reader, Writer } from './bytes.js';

export type OtrVersion = 2 | 3;

export const MSG_DH_COMMIT = 0x02;
export const MSG_DATA = 0x03;
export const MSG_DH_KEY = 0x0a;
export const MSG_REVEAL_SIG = 0x11;
export const MSG_SIGNATURE = 0x12;

/** Data message flag: the receiver should not complain if it cannot read it (heartbeats). */
export const FLAG_IGNORE_UNREADABLE = 0x01;

/** Valid instance tags are >= 0x100 (v3); 0 means "not known yet". */
export const MIN_INSTANCE_TAG = 0x100;

export interface Header {
  version: OtrVersion;
  /** v3 only (0 for v2). */
  senderTag: number;
  receiverTag: number;
}

export type OtrMessage =
  | { type: typeof MSG_DH_COMMIT; h: Header; encGx: Buffer; hashGx: Buffer }
  | { type: typeof MSG_DH_KEY; h: Header; gy: bigint }
  | { type: typeof MSG_REVEAL_SIG; h: Header; r: Buffer; encSig: Buffer; mac: Buffer }
  | { type: typeof MSG_SIGNATURE; h: Header; encSig: Buffer; mac: Buffer }
  | {
      type: typeof MSG_DATA;
      h: Header;
      flags: number;
      senderKeyId: number;
      recipientKeyId: number;
      nextDh: bigint;
      ctr: Buffer;
      encMsg: Buffer;
      mac: Buffer;
      oldMacKeys: Buffer;
      /** The bytes the MAC covers: from the version through the encrypted message. */
      macedData: Buffer;
    };

export type OtrMessageType = OtrMessage['type'];

function header(w: Writer, h: Header, type: number): Writer {
  w.short(h.version).byte(type);
  if (h.version === 3) w.int(h.senderTag).int(h.receiverTag);
  return w;
}

/** The data message bytes a MAC covers (everything before the MAC). */
export function dataMacedBytes(m: Extract<OtrMessage, { type: typeof MSG_DATA }>): Buffer {
  return header(new Writer(), m.h, MSG_DATA).byte(m.flags).int(m.senderKeyId).int(m.recipientKeyId).mpi(m.nextDh).raw(m.ctr).data(m.encMsg).bytes();
}

export function encodeMessage(m: OtrMessage): Buffer {
  switch (m.type) {
    case MSG_DH_COMMIT:
      return header(new Writer(), m.h, m.type).data(m.encGx).data(m.hashGx).bytes();
    case MSG_DH_KEY:
      return header(new Writer(), m.h, m.type).mpi(m.gy).bytes();
    case MSG_REVEAL_SIG:
      return header(new Writer(), m.h, m.type).data(m.r).data(m.encSig).raw(m.mac).bytes();
    case MSG_SIGNATURE:
      return header(new Writer(), m.h, m.type).data(m.encSig).raw(m.mac).bytes();
    case MSG_DATA:
      return Buffer.concat([dataMacedBytes(m), m.mac, new Writer().data(m.oldMacKeys).bytes()]);
  }
}

export function decodeMessage(b: Buffer): OtrMessage {
  const r = new Reader(b);
  const version = r.short('version');
  if (version !== 2 && version !== 3) throw new OtrParseError(`unsupported protocol version ${version}`);
  const type = r.byte('type');
  const h: Header = { version, senderTag: 0, receiverTag: 0 };
  if (version === 3) {
    h.senderTag = r.int('sender instance tag');
    h.receiverTag = r.int('receiver instance tag');
  }
  let m: OtrMessage;
  switch (type) {
    case MSG_DH_COMMIT:
      m = { type, h, encGx: r.data('encrypted g^x'), hashGx: r.data('hashed g^x') };
      if (m.hashGx.length !== 32) throw new OtrParseError('hashed g^x is not 32 bytes');
      break;
    case MSG_DH_KEY:
      m = { type, h, gy: r.mpi('g^y') };
      break;
    case MSG_REVEAL_SIG:
      m = { type, h, r: r.data('revealed key'), encSig: r.data('encrypted signature'), mac: r.fixed(20, 'MAC') };
      if (m.r.length !== 16) throw new OtrParseError('revealed key is not 16 bytes');
      break;
    case MSG_SIGNATURE:
      m = { type, h, encSig: r.data('encrypted signature'), mac: r.fixed(20, 'MAC') };
      break;
    case MSG_DATA: {
      const flags = r.byte('flags');
      const senderKeyId = r.int('sender keyid');
      const recipientKeyId = r.int('recipient keyid');
      const nextDh = r.mpi('next DH');
      const ctr = r.fixed(8, 'counter');
      const encMsg = r.data('encrypted message');
      const macedData = r.since(0);
      const mac = r.fixed(20, 'MAC');
      const oldMacKeys = r.data('old MAC keys');
      m = { type, h, flags, senderKeyId, recipientKeyId, nextDh, ctr, encMsg, mac, oldMacKeys, macedData };
      break;
    }
    default:
      throw new OtrParseError(`unknown message type ${type}`);
  }
  r.end();
  return m;
}

// ---- text forms -----------------------------------------------------------------------------

export const encodedText = (b: Buffer): string => `?OTR:${b.toString('base64')}.`;

/** A query for the versions we speak (libotr's form; the text after it is for clients without OTR). */
export const QUERY_TEXT = '?OTRv23?\nThis contact is an XMPP gateway asking for an Off-the-Record private conversation (OTR). Your client does not seem to support OTR.';

const WS_BASE = ' \t  \t\t\t\t \t \t \t  ';
const WS_TAGS: Record<string, 1 | 2 | 3> = { ' \t \t  \t ': 1, '  \t\t  \t ': 2, '  \t\t  \t\t': 3 };

export type BodyKind =
  | { kind: 'encoded'; bytes: Buffer }
  | { kind: 'fragment'; version: OtrVersion; senderTag: number; receiverTag: number; k: number; n: number; piece: string }
  | { kind: 'query'; versions: Set<number> }
  | { kind: 'error'; text: string }
  | { kind: 'plaintext'; text: string; versions: Set<number> };

/** Whether a body carries anything OTR (so the OTR engine should see it). */
export const looksLikeOtr = (body: string): boolean => body.startsWith('?OTR') || body.includes(WS_BASE);

/** Classifies a message body. Throws OtrParseError for an OTR message that is not well formed. */
export function parseBody(body: string): BodyKind {
  // Fragments first: they also start with ?OTR.
  let m = /^\?OTR\|([0-9a-fA-F]{1,8})\|([0-9a-fA-F]{1,8}),(\d{1,5}),(\d{1,5}),([^,]*),$/.exec(body);
  if (m) return fragment(3, parseInt(m[1]!, 16), parseInt(m[2]!, 16), m[3]!, m[4]!, m[5]!);
  m = /^\?OTR,(\d{1,5}),(\d{1,5}),([^,]*),$/.exec(body);
  if (m) return fragment(2, 0, 0, m[1]!, m[2]!, m[3]!);
  if (body.startsWith('?OTR|') || body.startsWith('?OTR,')) throw new OtrParseError('bad fragment');
  if (body.startsWith('?OTR:')) {
    const end = body.indexOf('.', 5);
    const b64 = body.slice(5, end < 0 ? undefined : end);
    if (end < 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new OtrParseError('bad base64');
    return { kind: 'encoded', bytes: Buffer.from(b64, 'base64') };
  }
  const err = body.indexOf('?OTR Error:');
  if (err >= 0) return { kind: 'error', text: body.slice(err + 11).trim() };
  const q = /\?OTR(\?)?(?:v([0-9a-zA-Z]*)\?)?/.exec(body);
  if (q && body.startsWith('?OTR')) {
    const versions = new Set<number>();
    if (q[1]) versions.add(1);
    for (const c of q[2] ?? '') if (/[0-9]/.test(c)) versions.add(Number(c));
    return { kind: 'query', versions };
  }
  const versions = new Set<number>();
  let text = body;
  const at = body.indexOf(WS_BASE);
  if (at >= 0) {
    let end = at + WS_BASE.length;
    while (end + 8 <= body.length && /^[ \t]{8}$/.test(body.slice(end, end + 8))) {
      const v = WS_TAGS[body.slice(end, end + 8)];
      if (v) versions.add(v);
      end += 8;
    }
    text = body.slice(0, at) + body.slice(end);
  }
  return { kind: 'plaintext', text, versions };
}

function fragment(version: OtrVersion, senderTag: number, receiverTag: number, k: string, n: string, piece: string): BodyKind {
  const kk = Number(k);
  const nn = Number(n);
  if (kk < 1 || nn < 1 || kk > nn || nn > 65535) throw new OtrParseError('bad fragment numbers');
  return { kind: 'fragment', version, senderTag, receiverTag, k: kk, n: nn, piece };
}

/** Splits an encoded message into fragments no longer than `max` characters (0: never split). */
export function fragmentText(text: string, h: Header, max: number): string[] {
  if (max <= 0 || text.length <= max) return [text];
  const prefix = (k: number, n: number) =>
    h.version === 3
      ? `?OTR|${h.senderTag.toString(16).padStart(8, '0')}|${h.receiverTag.toString(16).padStart(8, '0')},${String(k).padStart(5, '0')},${String(n).padStart(5, '0')},`
      : `?OTR,${k},${n},`;
  const overhead = prefix(65535, 65535).length + 1;
  const room = max - overhead;
  if (room < 1) throw new RangeError('maximum message size too small for OTR fragments');
  const n = Math.ceil(text.length / room);
  if (n > 65535) throw new RangeError('message needs too many fragments');
  const out: string[] = [];
  for (let k = 1; k <= n; k++) out.push(`${prefix(k, n)}${text.slice((k - 1) * room, k * room)},`);
  return out;
}

/** Reassembly per sender (OTR spec: in order only; k = 1 starts over; anything else drops the buffer). */
export class Reassembler {
  #n = 0;
  #k = 0;
  #parts: string[] = [];
  #size = 0;

  constructor(readonly maxChars = 1024 * 1024) {}

  /** Adds a fragment; returns the whole message once complete. */
  add(f: { k: number; n: number; piece: string }): string | null {
    if (f.k === 1) {
      this.#n = f.n;
      this.#k = 1;
      this.#parts = [f.piece];
      this.#size = f.piece.length;
    } else if (f.n === this.#n && f.k === this.#k + 1) {
      this.#k = f.k;
      this.#parts.push(f.piece);
      this.#size += f.piece.length;
    } else {
      this.reset();
      return null;
    }
    if (this.#size > this.maxChars) {
      this.reset();
      return null;
    }
    if (this.#k === this.#n) {
      const whole = this.#parts.join('');
      this.reset();
      return whole;
    }
    return null;
  }

  reset(): void {
    this.#n = 0;
    this.#k = 0;
    this.#parts = [];
    this.#size = 0;
  }
}
