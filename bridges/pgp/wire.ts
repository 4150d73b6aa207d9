// XEP-0027 stanza elements <-> stripped armor text. https://xmpp.org/extensions/xep-0027.html
import { xml, type Element } from '../../component/xml.js';

export const NS_ENCRYPTED = 'jabber:x:encrypted';
export const NS_SIGNED = 'jabber:x:signed';
export const NS_EME = 'urn:xmpp:eme:0';

/** The plaintext <body> of an encrypted message: shown by clients that cannot decrypt. */
export const FALLBACK_BODY = '[This message is encrypted with OpenPGP (XEP-0027)]';

/** The stripped armor of a message's <x xmlns='jabber:x:encrypted'>, or null if there is none. */
export function encryptedPayload(stanza: Element): string | null {
  if (stanza.name !== 'message') return null;
  const x = stanza.getChild('x', NS_ENCRYPTED);
  return x ? x.getText() : null;
}

/** The children of an outgoing encrypted <message>: fallback body, payload, EME (XEP-0380). */
export function encryptedChildren(stripped: string): Element[] {
  return [
    xml('body', {}, FALLBACK_BODY),
    xml('x', { xmlns: NS_ENCRYPTED }, stripped),
    xml('encryption', { xmlns: NS_EME, namespace: NS_ENCRYPTED }),
  ];
}

/** <x xmlns='jabber:x:signed'> for a presence, from signPresence's output. */
export function signedPresenceElement(stripped: string): Element {
  return xml('x', { xmlns: NS_SIGNED }, stripped);
}

/**
 * The status text (empty string without <status>) and the stripped signature of a signed presence,
 * or null if the presence is not signed. The signature covers exactly this status text.
 */
export function presenceSignature(presence: Element): { status: string; signed: string } | null {
  if (presence.name !== 'presence') return null;
  const x = presence.getChild('x', NS_SIGNED);
  if (!x) return null;
  return { status: presence.getChildText('status') ?? '', signed: x.getText() };
}
