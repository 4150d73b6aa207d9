// Building replies: iq results and stanza errors (RFC 6120 §8.3) with their usual error types.
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';

export const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

const ERROR_TYPES: Record<string, string> = {
  'bad-request': 'modify',
  conflict: 'cancel',
  'feature-not-implemented': 'cancel',
  forbidden: 'auth',
  'internal-server-error': 'wait',
  'item-not-found': 'cancel',
  'jid-malformed': 'modify',
  'not-acceptable': 'modify',
  'not-allowed': 'cancel',
  'not-authorized': 'auth',
  'policy-violation': 'modify',
  'recipient-unavailable': 'wait',
  'remote-server-not-found': 'cancel',
  'remote-server-timeout': 'wait',
  'resource-constraint': 'wait',
  'service-unavailable': 'cancel',
  'undefined-condition': 'cancel',
};

/** An error reply to `stanza` (from/to swapped, same id). `text` must be safe to show. */
export function errorReply(stanza: Element, condition: string, text?: string, appCondition?: Element): Element {
  const err = xml(
    'error',
    { type: ERROR_TYPES[condition] ?? 'cancel' },
    xml(condition, { xmlns: NS_STANZAS }),
    text ? xml('text', { xmlns: NS_STANZAS, 'xml:lang': 'en' }, text) : null,
    appCondition ?? null,
  );
  return xml(stanza.name, { type: 'error', from: stanza.attrs.to, to: stanza.attrs.from, id: stanza.attrs.id }, err);
}

export function iqResult(iq: Element, ...children: Element[]): Element {
  return xml('iq', { type: 'result', from: iq.attrs.to, to: iq.attrs.from, id: iq.attrs.id }, ...children);
}

