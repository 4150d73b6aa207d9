// OTR inside XMPP (XEP-0364): the text lives in <body>; every OTR message carries the hints that keep
// it out of archives and carbons (its keys are gone by the time anyone could read a copy) and EME.
import { xml, type Element } from '../../component/xml.js';

export const NS_OTR = 'urn:xmpp:otr:0';
const NS_HINTS = 'urn:xmpp:hints';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_EME = 'urn:xmpp:eme:0';

/** The children of a message carrying OTR text `body`. */
export function otrChildren(body: string): Element[] {
  return [
    xml('body', {}, body),
    xml('no-copy', { xmlns: NS_HINTS }),
    xml('no-permanent-store', { xmlns: NS_HINTS }),
    xml('private', { xmlns: NS_CARBONS }),
    xml('encryption', { xmlns: NS_EME, namespace: NS_OTR, name: 'OTR' }),
  ];
}

/** A whole <message> from `from` (full JID) to `to` with OTR text `body`. */
export function otrMessage(from: string, to: string, body: string): Element {
  return xml('message', { from, to, type: 'chat' }, ...otrChildren(body));
}
