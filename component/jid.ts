// JIDs as the gateway handles them, and XEP-0106 JID escaping for proxy localparts.
// https://xmpp.org/extensions/xep-0106.html
import { GatewayError } from '../errors.js';

export interface Jid {
  local: string; // '' when absent
  domain: string;
  resource: string; // '' when absent
}

/** The ten characters XEP-0106 escapes, in escaped form (lowercase hex, as the XEP requires). */
const ESCAPES: Record<string, string> = {
  ' ': '\\20', '"': '\\22', '&': '\\26', "'": '\\27', '/': '\\2f',
  ':': '\\3a', '<': '\\3c', '>': '\\3e', '@': '\\40', '\\': '\\5c',
};
const UNESCAPES: Record<string, string> = Object.fromEntries(Object.entries(ESCAPES).map(([c, e]) => [e.slice(1), c]));
const SEQ_AFTER_BACKSLASH = /^(20|22|26|27|2f|3a|3c|3e|40|5c)/;

/**
 * Escapes a string (e.g. a bare JID) for use as a localpart. A backslash is escaped only where it
 * would otherwise read as the start of an escape sequence (XEP-0106 §4.2); a leading or trailing
 * space cannot be represented and is rejected.
 */
export function escapeLocal(s: string): string {
  if (s.startsWith(' ') || s.endsWith(' ')) throw new GatewayError('jid_malformed', 'a localpart may not start or end with a space');
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\') out += SEQ_AFTER_BACKSLASH.test(s.slice(i + 1)) ? '\\5c' : '\\';
    else out += ESCAPES[c] ?? c;
  }
  return out;
}

/** Unescapes a localpart: exactly the ten XEP-0106 sequences, anything else stays literal. */
export function unescapeLocal(s: string): string {
  return s.replace(/\\(20|22|26|27|2f|3a|3c|3e|40|5c)/g, (_m, hex: string) => UNESCAPES[hex]!);
}

/**
 * Characters XML 1.0 does not allow (§2.2), lone surrogates included: a JID (or any text) with one
 * cannot be written into a stanza, and a server closes the stream on it.
 */
const XML_INVALID = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
/** Controls (Unicode Cc): PRECIS's IdentifierClass and FreeformClass both disallow them (RFC 7622 §3). */
const CONTROLS = /[\u0000-\u001F\u007F-\u009F]/;

/** Whether `s` can be written into XML 1.0 as text or an attribute value. */
export const isXmlSafe = (s: string): boolean => !XML_INVALID.test(s);

/** RFC 7622 §3: every part is 1 to 1023 octets of UTF-8. */
const MAX_PART_OCTETS = 1023;
const octets = (s: string): number => Buffer.byteLength(s, 'utf8');

/**
 * Parses a JID string (RFC 7622: part lengths in octets, characters each part may hold; no XML
 * 1.0-invalid character anywhere). Throws GatewayError('jid_malformed') on anything that is not one.
 */
export function parseJid(s: string): Jid {
  if (typeof s !== 'string' || s.length === 0 || s.length > 3071) throw new GatewayError('jid_malformed');
  if (!isXmlSafe(s) || CONTROLS.test(s)) throw new GatewayError('jid_malformed', 'a control or XML-invalid character');
  const slash = s.indexOf('/');
  const bare = slash === -1 ? s : s.slice(0, slash);
  const resource = slash === -1 ? '' : s.slice(slash + 1);
  const at = bare.lastIndexOf('@');
  const local = at === -1 ? '' : bare.slice(0, at);
  const domain = (at === -1 ? bare : bare.slice(at + 1)).toLowerCase().replace(/\.$/, '');
  if (at !== -1 && local.length === 0) throw new GatewayError('jid_malformed', 'empty localpart');
  if (slash !== -1 && resource.length === 0) throw new GatewayError('jid_malformed', 'empty resource');
  if (octets(local) > MAX_PART_OCTETS || octets(resource) > MAX_PART_OCTETS || octets(domain) > MAX_PART_OCTETS) {
    throw new GatewayError('jid_malformed', 'part too long');
  }
  if (!/^[a-z0-9.-]+$/.test(domain) && !/^\[[0-9a-f:.]+\]$/.test(domain)) throw new GatewayError('jid_malformed', 'invalid domain');
  // DNS labels: none empty (`a..b`, a leading dot), none over 63 octets (RFC 1035, RFC 7622 §3.2).
  if (!domain.startsWith('[') && domain.split('.').some((l) => l.length === 0 || l.length > 63)) throw new GatewayError('jid_malformed', 'invalid domain');
  if (/[\s"&'/:<>@]/.test(local)) throw new GatewayError('jid_malformed', 'invalid character in localpart');
  // A simplified nodeprep: localparts compare case-insensitively (escapes are lowercase hex).
  return { local: local.normalize('NFKC').toLowerCase(), domain, resource };
}

export function bareOf(j: Jid): string {
  return j.local ? `${j.local}@${j.domain}` : j.domain;
}

export function formatJid(j: Jid): string {
  return bareOf(j) + (j.resource ? `/${j.resource}` : '');
}

/** The normalised bare form of a JID string. */
export function bare(s: string): string {
  return bareOf(parseJid(s));
}
