// XEP-0027 armor framing. The payloads of <x xmlns='jabber:x:encrypted'> and <x xmlns='jabber:x:signed'>
// are OpenPGP ASCII armor (RFC 4880 §6.2) with the BEGIN/END lines, the armor headers and the blank
// separator line removed: base64 lines and usually the `=XXXX` CRC-24 line.
// https://xmpp.org/extensions/xep-0027.html §3, §4
//
// Only the framing is ours; base64 is node's and everything inside belongs to openpgp. The CRC line is
// kept when present and never checked: RFC 9580 §6.1 says a receiver MUST NOT reject an object
// because of it, and the OpenPGP packets carry their own integrity check (MDC, signatures).

export type ArmorKind = 'MESSAGE' | 'SIGNATURE' | 'PUBLIC KEY BLOCK';

/** The payload is not stripped (or full) armor. Its message never quotes the input. */
export class ArmorError extends Error {
  override readonly name = 'ArmorError';
}

/** Stanza payloads larger than this are refused before any parsing (a 64 KB body is ~90 KB armored). */
export const MAX_ARMOR_CHARS = 1024 * 1024;

const BEGIN = /^-----BEGIN PGP ([A-Z ,0-9/]+)-----$/;
const END = /^-----END PGP ([A-Z ,0-9/]+)-----$/;
const HEADER = /^[A-Za-z][A-Za-z0-9-]*: /;
const CRC = /^=[A-Za-z0-9+/]{4}$/;
const B64_CHARS = /^[A-Za-z0-9+/=]+$/;
const B64_STRICT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export interface StrippedPayload {
  /** The base64 body on one line, no whitespace, no CRC. */
  base64: string;
  /** The `=XXXX` line if the sender sent one. */
  crc: string | null;
  /** The decoded OpenPGP packets. */
  bytes: Uint8Array;
}

const lines = (text: string): string[] =>
  text
    .replace(/\r\n?/g, '\n')
    .split('\n')
    .map((l) => l.replace(/^[ \t]+|[ \t]+$/g, ''));

/**
 * Full armor (as openpgp or gpg write it) to the XEP-0027 form: the lines between the blank line that
 * ends the headers and the END line, joined with `\n`. Throws ArmorError if there is no armor block.
 */
export function stripArmor(armored: string): string {
  const all = lines(armored);
  const begin = all.findIndex((l) => BEGIN.test(l));
  if (begin === -1) throw new ArmorError('no BEGIN PGP line');
  const end = all.findIndex((l, i) => i > begin && END.test(l));
  if (end === -1) throw new ArmorError('no END PGP line');
  let i = begin + 1;
  while (i < end && HEADER.test(all[i]!)) i++;
  return all
    .slice(i, end)
    .filter((l) => l.length > 0)
    .join('\n');
}

/**
 * Parses a payload as received: stripped armor with LF or CRLF line ends and stray spaces. Full
 * armor, and headers left in by clients that cut only the BEGIN/END lines, are tolerated.
 */
export function parseStripped(text: string): StrippedPayload {
  if (typeof text !== 'string' || text.length === 0) throw new ArmorError('empty payload');
  if (text.length > MAX_ARMOR_CHARS) throw new ArmorError('payload too large');
  let body = lines(text);
  const begin = body.findIndex((l) => BEGIN.test(l));
  if (begin !== -1) {
    const end = body.findIndex((l, i) => i > begin && END.test(l));
    body = body.slice(begin + 1, end === -1 ? undefined : end);
  }
  body = body.filter((l) => l.length > 0);
  // Header lines can only come before the data: a base64 line has neither ':' nor ' '.
  while (body.length > 0 && HEADER.test(body[0]!)) body.shift();
  let crc: string | null = null;
  if (body.length > 0 && CRC.test(body[body.length - 1]!)) crc = body.pop()!;
  if (body.length === 0) throw new ArmorError('no base64 data');
  if (!body.every((l) => B64_CHARS.test(l))) throw new ArmorError('not base64');
  const base64 = body.join('');
  if (!B64_STRICT.test(base64)) throw new ArmorError('bad base64 length or padding');
  const bytes = new Uint8Array(Buffer.from(base64, 'base64'));
  if (bytes.length === 0) throw new ArmorError('no data');
  return { base64, crc, bytes };
}

/**
 * The stripped payload wrapped back into full armor of `kind`, lines of 64 characters, CRC kept if
 * sent (and left out if not, which RFC 4880 allows).
 */
export function restoreArmor(stripped: string, kind: ArmorKind): string {
  const { base64, crc } = parseStripped(stripped);
  const out = [`-----BEGIN PGP ${kind}-----`, ''];
  for (let i = 0; i < base64.length; i += 64) out.push(base64.slice(i, i + 64));
  if (crc) out.push(crc);
  out.push(`-----END PGP ${kind}-----`, '');
  return out.join('\n');
}
