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

/** Parses a JID string. Throws GatewayError('jid_malformed') on anything that is not one. */
export function parseJid(s: string): Jid {
  if (typeof s !== 'string' || s.length === 0 || s.length > 3071) throw new GatewayError('jid_malformed');
  const slash = s.indexOf('/');
  const bare = slash === -1 ? s : s.slice(0, slash);
  const resource = slash === -1 ? '' : s.slice(slash + 1);
  const at = bare.lastIndexOf('@');
  const local = at === -1 ? '' : bare.slice(0, at);
  const domain = (at === -1 ? bare : bare.slice(at + 1)).toLowerCase().replace(/\.$/, '');
  if (at !== -1 && local.length === 0) throw new GatewayError('jid_malformed', 'empty localpart');
  if (slash !== -1 && resource.length === 0) throw new GatewayError('jid_malformed', 'empty resource');
  if (local.length > 1023 || resource.length > 1023) throw new GatewayError('jid_malformed', 'part too long');
  if (!/^[a-z0-9.-]+$/.test(domain) && !/^\[[0-9a-f:.]+\]$/.test(domain)) throw new GatewayError('jid_malformed', 'invalid domain');
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
