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

export function buildEnvelope(o: { body: string; from: string; to: string; now: number }): Buffer {
  // 0..200 characters of padding, as XEP-0420 suggests (base64url: nothing to escape).
  const rpad = randomBytes(150).toString('base64url').slice(0, randomInt(1, 201));
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

/** Parses an envelope and checks its affix elements against the stanza's addressing. */
export function openEnvelope(bytes: Buffer, expect: { from: string; to: string; now: number; maxSkewMs: number }): EnvelopeCheck {
  let env;
  try {
    env = parseXml(bytes.toString('utf8'));
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
