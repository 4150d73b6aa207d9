// Remote users for the fuzz test: engines of our own running as if they were XMPP clients of
// example.org / legacy.example, talking to the gateway through the fake XEP-0114 server. Their PEP
// reads of the gateway go through the gateway's real pubsub service; the gateway's reads of their
// nodes are answered here, from what their engines published. Messages the gateway sends them can
// be handed to their engines (so sessions get confirmed as in a real exchange).
import { Writable } from 'node:stream';
import { parseXml, xml, type Element } from '../../../component/xml.js';
import type { PubsubPort } from '../../../bridges/engine.js';
import type { Scenario } from '../scenario.js';

const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

export const silentSink = (): Writable =>
  new Writable({
    write(_c, _e, cb) {
      cb();
    },
  });

export class RemoteUsers {
  readonly #s: Scenario;
  /** bare JID -> node -> item id -> payload */
  readonly #items = new Map<string, Map<string, Map<string, Element>>>();
  readonly #pending = new Map<string, (el: Element) => void>();
  readonly #inbox = new Map<string, (el: Element) => void>();
  #n = 0;

  constructor(s: Scenario) {
    this.#s = s;
    s.server.on('stanza', (el: Element) => this.#onStanza(el));
  }

  /** Gets messages the gateway sends to `bare`. */
  onMessage(bare: string, fn: (el: Element) => void): void {
    this.#inbox.set(bare, fn);
  }

  #onStanza(el: Element): void {
    const id = String(el.attrs.id ?? '');
    if (el.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error')) {
      const p = this.#pending.get(id);
      if (p) {
        this.#pending.delete(id);
        p(el);
      }
      return;
    }
    const to = String(el.attrs.to ?? '');
    const bare = to.split('/')[0]!;
    if (el.name === 'message') {
      this.#inbox.get(bare)?.(el);
      return;
    }
    // Every request the gateway makes of a remote entity is answered, as a server would.
    if (el.name === 'iq' && (el.attrs.type === 'get' || el.attrs.type === 'set') && bare !== this.#s.domain) {
      const items = el.getChild('pubsub', NS_PUBSUB)?.getChild('items');
      const node = items ? String(items.attrs.node ?? '') : '';
      const stored = node ? this.#items.get(bare)?.get(node) : undefined;
      const reply =
        el.attrs.type === 'get' && stored && stored.size > 0
          ? xml('iq', { type: 'result', from: to, to: el.attrs.from, id }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node }, ...[...stored].map(([iid, p]) => xml('item', { id: iid }, parseXml(p.toString()))))))
          : xml('iq', { type: 'error', from: to, to: el.attrs.from, id }, xml('error', { type: 'cancel' }, xml(items ? 'item-not-found' : 'service-unavailable', { xmlns: NS_STANZAS })));
      this.#s.server.inject(reply);
    }
  }

  /** Sends an iq from a remote user to the gateway and resolves with the answer. */
  request(iq: Element, timeoutMs = 10_000): Promise<Element> {
    const id = `remote-${++this.#n}`;
    iq.attrs.id = id;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`no answer to ${id}`));
      }, timeoutMs);
      this.#pending.set(id, (el) => {
        clearTimeout(t);
        resolve(el);
      });
      this.#s.server.inject(iq);
    });
  }

  /** The PEP port of remote user `bare` (resource `resource`) for an engine of ours. */
  port(bare: string, resource: string): PubsubPort {
    const node = (owner: string, n: string) => {
      let o = this.#items.get(owner);
      if (!o) this.#items.set(owner, (o = new Map()));
      let m = o.get(n);
      if (!m) o.set(n, (m = new Map()));
      return m;
    };
    return {
      publish: (owner, n, itemId, payload) => void node(owner, n).set(itemId, parseXml(payload.toString())),
      retract: (owner, n, itemId) => {
        if (itemId === undefined) node(owner, n).clear();
        else node(owner, n).delete(itemId);
      },
      localItems: (owner, n) => [...node(owner, n)].map(([id, payload]) => ({ id, payload })),
      fetch: async (_from, to, n, opts = {}) => {
        const res = await this.request(
          xml('iq', { type: 'get', from: `${bare}/${resource}`, to }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: n }, opts.itemId ? xml('item', { id: opts.itemId }) : null))),
        );
        if (res.attrs.type === 'error') return null;
        return res.getChild('pubsub', NS_PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
      },
    };
  }
}
