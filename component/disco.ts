// XEP-0030 service discovery for the domain and every hosted JID, and the XEP-0115 caps element our
// presence carries. The gateway is the PEP service of its hosted JIDs, so their bare JIDs say
// pubsub/pep; engines add their features (e.g. `eu.siacs.conversations.axolotl.devicelist+notify`,
// which asks contacts' servers to push device-list events to us).
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Address } from './addressing.js';
import { capsVer, NS_CAPS, NS_DISCO_INFO, type Identity } from './caps.js';
import type { Router } from './router.js';
import { IqError } from './router.js';

export const NS_DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
export const NS_PING = 'urn:xmpp:ping';

const HOSTED_BASE = [
  NS_DISCO_INFO,
  NS_DISCO_ITEMS,
  NS_CAPS,
  NS_PING,
  'urn:xmpp:receipts',
  'urn:xmpp:eme:0',
  'http://jabber.org/protocol/pubsub',
  'http://jabber.org/protocol/pubsub#retrieve-items',
];

const DOMAIN_FEATURES = [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, 'jid\\20escaping'];

type Kind = 'bot' | 'proxy';

export class Disco {
  readonly capsNode: string;
  readonly #domain: string;
  readonly #features: string[];
  readonly #bots: Array<{ jid: string; name: string }>;
  readonly #verCache = new Map<Kind, string>();

  constructor(opts: { domain: string; engineFeatures: readonly string[]; bots: Array<{ jid: string; name: string }> }) {
    this.#domain = opts.domain;
    this.capsNode = `https://${opts.domain}/caps`;
    this.#features = [...new Set([...HOSTED_BASE, ...opts.engineFeatures])].sort();
    this.#bots = opts.bots;
  }

  /** Identities of a hosted JID; `bare` adds the PEP service and account identities. */
  identities(kind: Kind, bare: boolean): Identity[] {
    const client: Identity = kind === 'bot' ? { category: 'client', type: 'bot', name: 'E2EE gateway bot' } : { category: 'client', type: 'pc', name: 'E2EE gateway proxy' };
    return bare ? [client, { category: 'pubsub', type: 'pep' }, { category: 'account', type: 'registered' }] : [client];
  }

  features(): string[] {
    return this.#features;
  }

  /** The caps `ver` our presence from a hosted JID's full JID announces. */
  ver(kind: Kind): string {
    let v = this.#verCache.get(kind);
    if (!v) {
      v = capsVer(this.identities(kind, false), this.#features);
      this.#verCache.set(kind, v);
    }
    return v;
  }

  capsElement(kind: Kind): Element {
    return xml('c', { xmlns: NS_CAPS, hash: 'sha-1', node: this.capsNode, ver: this.ver(kind) });
  }

  #infoQuery(identities: Identity[], features: string[], node?: string): Element {
    return xml(
      'query',
      { xmlns: NS_DISCO_INFO, ...(node ? { node } : {}) },
      ...identities.map((i) => xml('identity', { category: i.category, type: i.type, ...(i.name ? { name: i.name } : {}) })),
      ...features.map((f) => xml('feature', { var: f })),
    );
  }

  info(address: Address, hasResource: boolean, node?: string): Element {
    if (address.kind === 'domain') {
      if (node) throw new IqError('item-not-found');
      return this.#infoQuery([{ category: 'gateway', type: 'xmpp', name: 'XMPP end-to-end encryption gateway' }], DOMAIN_FEATURES);
    }
    if (node) {
      // Only our own caps node is known: the answer is the full JID's view, as hashed.
      if (node !== `${this.capsNode}#${this.ver(address.kind)}`) throw new IqError('item-not-found');
      return this.#infoQuery(this.identities(address.kind, false), this.#features, node);
    }
    return this.#infoQuery(this.identities(address.kind, !hasResource), this.#features);
  }

  items(address: Address, node?: string): Element {
    if (node) throw new IqError('item-not-found');
    const items = address.kind === 'domain' ? this.#bots.map((b) => xml('item', { jid: b.jid, name: b.name })) : [];
    return xml('query', { xmlns: NS_DISCO_ITEMS }, ...items);
  }

  register(router: Router): void {
    router.iq('get', NS_DISCO_INFO, 'query', ({ address, to, payload }) =>
      this.info(address, to.resource !== '', payload.attrs.node ? String(payload.attrs.node) : undefined),
    );
    router.iq('get', NS_DISCO_ITEMS, 'query', ({ address, payload }) => this.items(address, payload.attrs.node ? String(payload.attrs.node) : undefined));
    router.iq('get', NS_PING, 'ping', () => undefined);
  }

  get domain(): string {
    return this.#domain;
  }
}
