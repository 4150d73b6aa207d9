// Stanza Content Encryption envelopes (XEP-0420) as OMEMO 2 uses them: the encrypted payload is an
// <envelope> whose <content> holds the stanza's children (here the <body>), random-length <rpad>
// against length analysis, <from> with the sender's bare JID, <to> with the recipient's and <time>.
// On the way in, `from` must be the stanza's sender and `to` (when present) the hosted JID it was
// addressed to, so a message cannot be replayed to someone else or pass as someone else's;
// a `time` in the future beyond the clock skew allowance is refused.
import { randomBytes, randomInt } from 'node:crypto';
import { escapeXML, escapeXMLText } from 'ltx';
import { parseXml } from '../../component/xml.js';
import { NS_CLIENT, NS_SCE } from './constants.js';

/** Random bytes the padding takes (buildEnvelope's `random`): 150 for its text, one for its length. */
export const RPAD_RANDOM = 151;

/**
 * `random`: RPAD_RANDOM random bytes for the padding, when the caller draws them with others (one
 * call for the payload key and the padding); drawn here otherwise.
 */
export function buildEnvelope(o: { body: string; from: string; to: string; now: number }, random: Buffer = randomBytes(RPAD_RANDOM)): Buffer {
  // 1..200 characters of padding, as XEP-0420 suggests (base64url: nothing to escape). The length is
  // the last byte when it is below 200 (uniform), else a fresh draw.
  const last = random[RPAD_RANDOM - 1]!;
  const rpad = random.subarray(0, RPAD_RANDOM - 1).toString('base64url').slice(0, last < 200 ? last + 1 : randomInt(1, 201));
  // Written as text, as ltx would serialize the element tree (the tree was ~5% of an encrypt):
  // the body escaped as text, the JIDs as attribute values.
  const env =
    `<envelope xmlns="${NS_SCE}"><content><body xmlns="${NS_CLIENT}">${escapeXMLText(o.body)}</body></content>` +
    `<rpad>${rpad}</rpad><to jid="${escapeXML(o.to)}"/><from jid="${escapeXML(o.from)}"/><time stamp="${new Date(o.now).toISOString()}"/></envelope>`;
  return Buffer.from(env, 'utf8');
}

export type EnvelopeCheck =
  | { ok: true; body: string | null }
  | { ok: false; reason: 'malformed' | 'wrong-sender' | 'wrong-recipient' | 'bad-time' };

const MAX_RPAD = 1024;

// The envelope exactly as buildEnvelope writes it (the gateway's own, and every bridged message),
// read without building an element tree (the tree was ~6% of a steady decrypt). Only a strict subset
// of XML is taken here: text without markup, '\r' or any entity but the five named ones; attribute
// values without entities or whitespace other than spaces. Anything else (another client's
// envelope, prefixes, other order, comments) goes to the XML parser below, whose checks are the same.
const OWN_FORM =
  /^<envelope xmlns="urn:xmpp:sce:1"><content><body xmlns="jabber:client">([^<\r]*)<\/body><\/content><rpad>([A-Za-z0-9_-]*)<\/rpad><to jid="([^"<&\t\n\r]*)"\/><from jid="([^"<&\t\n\r]*)"\/><time stamp="([^"<&\t\n\r]*)"\/><\/envelope>$/;
const NAMED_ENTITY = /&(amp|lt|gt|quot|apos);/g;
const ENTITY_TEXT: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** The body text of our own form, unescaped; null when it holds an entity this path does not read. */
function ownText(raw: string): string | null {
  if (!raw.includes('&')) return raw;
  // Each '&' must begin one of the five named entities (ltx would throw on others, or read &#...;).
  const stripped = raw.replace(NAMED_ENTITY, '');
  if (stripped.includes('&')) return null;
  return raw.replace(NAMED_ENTITY, (_, name: string) => ENTITY_TEXT[name]!);
}

function checkAffixes(f: { from: string; to: string; stamp: string }, expect: { from: string; to: string; now: number; maxSkewMs: number }): EnvelopeCheck | null {
  if (bareOf(f.from) !== expect.from) return { ok: false, reason: 'wrong-sender' };
  if (bareOf(f.to) !== expect.to) return { ok: false, reason: 'wrong-recipient' };
  const t = Date.parse(f.stamp);
  if (!Number.isFinite(t) || t > expect.now + expect.maxSkewMs) return { ok: false, reason: 'bad-time' };
  return null;
}

/** Parses an envelope and checks its affix elements against the stanza's addressing. */
export function openEnvelope(bytes: Buffer, expect: { from: string; to: string; now: number; maxSkewMs: number }): EnvelopeCheck {
  const text = bytes.toString('utf8');
  const own = OWN_FORM.exec(text);
  if (own) {
    const body = ownText(own[1]!);
    if (body !== null && own[2]!.length <= MAX_RPAD) return checkAffixes({ to: own[3]!, from: own[4]!, stamp: own[5]! }, expect) ?? { ok: true, body };
  }
  return openEnvelopeTree(text, expect);
}

/** The general reader (any well-formed envelope); openEnvelope takes it for anything but its own form. */
export function openEnvelopeTree(text: string, expect: { from: string; to: string; now: number; maxSkewMs: number }): EnvelopeCheck {
  let env;
  try {
    env = parseXml(text);
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  // Names are compared by local name and resolved namespace: a prefixed envelope (ns0:envelope, as
  // Python's ElementTree writes it) is as valid as one with a default namespace.
  if (env.getName() !== 'envelope' || env.getNS() !== NS_SCE) return { ok: false, reason: 'malformed' };
  const child = (name: string) => env.getChildren(name).find((c) => c.getNS() === NS_SCE) ?? env.getChildren(name)[0];
  const content = env.getChildren('content').find((c) => c.getNS() === NS_SCE);
  if (!content) return { ok: false, reason: 'malformed' };
  const rpad = child('rpad');
  if (rpad && rpad.getText().length > MAX_RPAD) return { ok: false, reason: 'malformed' };
  const from = child('from');
  if (from && bareOf(from.attrs.jid) !== expect.from) return { ok: false, reason: 'wrong-sender' };
  const to = child('to');
  if (to && bareOf(to.attrs.jid) !== expect.to) return { ok: false, reason: 'wrong-recipient' };
  const time = child('time');
  if (time) {
    const t = Date.parse(String(time.attrs.stamp ?? ''));
    if (!Number.isFinite(t) || t > expect.now + expect.maxSkewMs) return { ok: false, reason: 'bad-time' };
  }
  const body = content.children.find((c): c is typeof env => typeof c !== 'string' && c.getName() === 'body' && (c.getNS() ?? NS_CLIENT) === NS_CLIENT);
  return { ok: true, body: body ? body.getText() : null };
}

const bareOf = (jid: unknown): string | null => (typeof jid === 'string' && jid.length > 0 ? jid.split('/')[0]!.toLowerCase() : null);
