// XML elements (ltx, as xmpp.js uses) and a parser for stored XML text.
import xml from '@xmpp/xml';
import { parse } from 'ltx';
import type Element from 'ltx/lib/Element.js';

export { xml };
export type { Element };

/** Parses one XML element from text; throws on malformed input. */
export function parseXml(text: string): Element {
  const el = parse(text) as unknown as Element;
  if (!el || typeof el !== 'object' || typeof el.name !== 'string') throw new Error('not an XML element');
  return el;
}
