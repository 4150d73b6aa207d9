// XEP-0373 (OpenPGP for XMPP) and XEP-0374 (OX instant messaging) elements: the PEP key nodes, the
// <openpgp> message element and its content elements (<signcrypt>, <sign>, <crypt>).
// https://xmpp.org/extensions/xep-0373.html https://xmpp.org/extensions/xep-0374.html
// Binary OpenPGP, base64 without armor. No cryptography here.
import { randomBytes, randomInt } from 'node:crypto';
import { parseXml, xml, type Element } from '../../component/xml.js';

export const NS_OX = 'urn:xmpp:openpgp:0';
export const NODE_METADATA = 'urn:xmpp:openpgp:0:public-keys';
export const NODE_KEY_PREFIX = `${NODE_METADATA}:`;
export const NS_EME = 'urn:xmpp:eme:0';
export const NS_HINTS = 'urn:xmpp:hints';
export const NS_DELAY = 'urn:xmpp:delay';
const BODY_NS = new Set(['jabber:client', 'jabber:server', NS_OX]);

/** The plaintext <body> of an OX message: a fixed notice, never the message. */
export const FALLBACK_BODY = 'This message is encrypted with OpenPGP for XMPP (OX, XEP-0373).';

export const keyNode = (fingerprint: string): string => `${NODE_KEY_PREFIX}${fingerprint}`;

/** XEP-0082 DateTime without milliseconds, as clients write it. */
export const dateTime = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

// ---- PEP nodes ----

export interface KeyMetadata {
  fingerprint: string;
  date: string;
}

export function metadataPayload(keys: KeyMetadata[]): Element {
  return xml('public-keys-list', { xmlns: NS_OX }, ...keys.map((k) => xml('pubkey-metadata', { 'v4-fingerprint': k.fingerprint, date: k.date })));
}

export function pubkeyPayload(binaryKey: Uint8Array, date: string): Element {
  return xml('pubkey', { xmlns: NS_OX, date }, xml('data', {}, Buffer.from(binaryKey).toString('base64')));
}

const FPR = /^[0-9A-F]{40}$/;

/**
 * The fingerprints listed in a metadata node's items (the newest item counts; PEP keeps one).
 * Fingerprints are normalised to 40 uppercase hex; anything else is skipped.
 */
export function parseMetadata(items: Element[]): KeyMetadata[] {
  const list = items[0]?.getChild('public-keys-list', NS_OX);
  if (!list) return [];
  const out: KeyMetadata[] = [];
  for (const m of list.getChildren('pubkey-metadata')) {
    const fpr = String(m.attrs['v4-fingerprint'] ?? '').toUpperCase();
    if (FPR.test(fpr) && !out.some((k) => k.fingerprint === fpr)) out.push({ fingerprint: fpr, date: String(m.attrs.date ?? '') });
  }
  return out;
}

/** The binary key of a key node's (newest) item, or null when there is none or it is not base64. */
export function parsePubkey(items: Element[]): Uint8Array | null {
  const text = items[0]?.getChild('pubkey', NS_OX)?.getChildText('data');
  if (!text) return null;
  const compact = text.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 !== 0) return null;
  const bytes = Buffer.from(compact, 'base64');
  return bytes.length > 0 ? new Uint8Array(bytes) : null;
}

// ---- messages ----

/** The children of an outgoing OX <message>: payload, EME (XEP-0380), store hint (XEP-0334), fallback body. */
export function messageChildren(base64: string): Element[] {
  return [
    xml('openpgp', { xmlns: NS_OX }, base64),
    xml('encryption', { xmlns: NS_EME, namespace: NS_OX, name: 'OX' }),
    xml('store', { xmlns: NS_HINTS }),
    xml('body', {}, FALLBACK_BODY),
  ];
}

/** The base64 text of a message's <openpgp> element, or null. */
export function openpgpPayload(stanza: Element): string | null {
  if (stanza.name !== 'message') return null;
  const el = stanza.getChild('openpgp', NS_OX);
  return el ? el.getText() : null;
}

/** Random padding of random length (XEP-0373 §3.1: hides the length of short messages). */
function rpad(): string {
  return randomBytes(randomInt(1, 150)).toString('base64');
}

/** The <signcrypt> element for a body from a hosted JID to `to`. */
export function signcrypt(to: string, nowMs: number, body: string): Element {
  return xml(
    'signcrypt',
    { xmlns: NS_OX },
    xml('to', { jid: to }),
    xml('time', { stamp: dateTime(nowMs) }),
    xml('rpad', {}, rpad()),
    xml('payload', {}, xml('body', { xmlns: 'jabber:client' }, body)),
  );
}

export type ContentKind = 'signcrypt' | 'sign' | 'crypt';

export interface Content {
  kind: ContentKind;
  /** The `jid` of every <to>. */
  to: string[];
  /** ms since epoch of <time stamp>. */
  time: number;
  /** The text of the payload's <body>, or null (chat states, receipts only). */
  body: string | null;
}

export class ContentError extends Error {}

/** Parses the OpenPGP plaintext of an OX message (one content element). Throws ContentError. */
export function parseContent(text: string): Content {
  let el: Element;
  try {
    el = parseXml(text);
  } catch {
    throw new ContentError('content is not XML');
  }
  if ((el.getNS() ?? '') !== NS_OX || !['signcrypt', 'sign', 'crypt'].includes(el.name)) throw new ContentError('not an OX content element');
  const times = el.getChildren('time');
  if (times.length !== 1) throw new ContentError('exactly one <time> is required');
  const time = Date.parse(String(times[0]!.attrs.stamp ?? ''));
  if (!Number.isFinite(time)) throw new ContentError('bad <time> stamp');
  const payloads = el.getChildren('payload');
  if (payloads.length !== 1) throw new ContentError('exactly one <payload> is required');
  const to = el.getChildren('to').map((t) => String(t.attrs.jid ?? ''));
  const bodyEl = payloads[0]!.getChildElements().find((c) => c.name === 'body' && BODY_NS.has(c.getNS() ?? ''));
  return { kind: el.name as ContentKind, to, time, body: bodyEl ? bodyEl.getText() : null };
}

/** The XEP-0203 <delay stamp> of a message delivered from offline storage, ms since epoch, or null. */
export function delayStamp(stanza: Element): number | null {
  const stamp = stanza.getChild('delay', NS_DELAY)?.attrs.stamp;
  const t = stamp === undefined ? NaN : Date.parse(String(stamp));
  return Number.isFinite(t) ? t : null;
}
