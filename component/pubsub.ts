// The pubsub service the gateway runs for its hosted JIDs, acting as their PEP service (XEP-0060,
// XEP-0163): other clients read items (all, by id, max_items); only the gateway itself publishes,
// with publish-options semantics; after a publish, and when a subscribed contact comes online,
// +notify event messages go to contacts whose caps ask for the node. It also reads contacts' PEP
// nodes (iq from a hosted JID) for the engines.
import xml from '@xmpp/xml';
import { LRUCache } from 'lru-cache';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { GatewayError, KeysNotVisibleError } from '../errors.js';
import type { PubsubPort, PublishOptions } from '../bridges/engine.js';
import type { PubsubStore, NodeConfig } from '../keystore/pubsub-store.js';
import type { PresenceService } from './presence.js';
import { IqError, type IqContext, type Router } from './router.js';
import { RemoteError } from './connection.js';
import { parseXml } from './xml.js';

export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
export const NS_PUBSUB_EVENT = 'http://jabber.org/protocol/pubsub#event';
export const NS_PUBSUB_ERRORS = 'http://jabber.org/protocol/pubsub#errors';

export interface PubsubDeps {
  store: PubsubStore;
  presence: PresenceService;
  send: (el: Element) => Promise<void>;
  request: (iq: Element, timeoutMs?: number) => Promise<Element>;
  log: Logger;
  fetchTimeoutMs?: number;
  /** Parsed payloads kept (limits.peer_cache_entries); a miss re-parses the stored text. */
  parsedCacheSize?: number;
  /**
   * Called before serving a read of `node` on hosted JID `owner`: identities are created on first
   * use, and a peer fetching a proxy's device list is such a use.
   */
  beforeRead?: (owner: string, node: string) => Promise<void>;
}

/** Answers that mean the contact does not offer the node at all. */
const NOT_OFFERED = new Set(['item-not-found', 'service-unavailable', 'feature-not-implemented']);
/**
 * Answers that mean the node may exist but is not readable for the asking JID (access model
 * presence, roster, whitelist or authorize: XEP-0060 §6.5.9): it may become readable once the
 * contact approves a subscription, so it is told apart from "not offered".
 */
const NOT_READABLE = new Set(['forbidden', 'not-authorized', 'not-allowed', 'registration-required', 'subscription-required']);
/** XEP-0060 application conditions that say which access model refused (quoted in the error only when known). */
const ACCESS_DETAIL = new Set(['presence-subscription-required', 'not-in-roster-group', 'closed-node', 'not-subscribed']);

const unsupported = (feature: string) => xml('unsupported', { xmlns: NS_PUBSUB_ERRORS, feature });

export class PubsubService implements PubsubPort {
  readonly #d: PubsubDeps;
  /** Parsed payloads (bounded), so serving a 9 KB bundle does not re-parse XML text on every request. */
  readonly #parsed: LRUCache<string, Element>;

  constructor(deps: PubsubDeps) {
    this.#d = deps;
    this.#parsed = new LRUCache({ max: deps.parsedCacheSize ?? 20_000 });
    deps.presence.addListener({ contactOnline: (local, full, features) => this.#sendLastItems(local, full, features) });
  }

  /** Parsed payloads held in memory. */
  get parsedCount(): number {
    return this.#parsed.size;
  }

  register(router: Router): void {
    router.iq('get', NS_PUBSUB, 'pubsub', async (ctx) => {
      const node = ctx.payload.getChild('items')?.attrs.node;
      if (node && ctx.address.kind !== 'domain') await this.#d.beforeRead?.(ctx.address.local, String(node));
      return this.#handleGet(ctx);
    });
    router.iq('set', NS_PUBSUB, 'pubsub', (ctx) => this.#handleSet(ctx));
  }

  // ---- PubsubPort: the gateway's own side ----

  publish(owner: string, node: string, itemId: string, payload: Element, opts: PublishOptions = {}): void {
    const config: NodeConfig = {
      accessModel: opts.accessModel ?? 'open',
      maxItems: opts.maxItems === 'max' ? 0 : (opts.maxItems ?? 1),
    };
    this.#d.store.publish(owner, node, config, itemId, payload.toString());
    this.#parsed.set(`${owner}\0${node}\0${itemId}`, payload);
    this.#notify(owner, node, [{ id: itemId, payload }]);
  }

  retract(owner: string, node: string, itemId?: string): void {
    this.#d.store.retract(owner, node, itemId);
    for (const k of [...this.#parsed.keys()]) if (k.startsWith(`${owner}\0${node}\0`) && (itemId === undefined || k.endsWith(`\0${itemId}`))) this.#parsed.delete(k);
  }

  localItems(owner: string, node: string): Array<{ id: string; payload: Element }> {
    return this.#d.store.items(owner, node).map((i) => ({ id: i.id, payload: this.#payload(owner, node, i.id, i.payload) }));
  }

  async fetch(from: string, to: string, node: string, opts: { itemId?: string; maxItems?: number } = {}): Promise<Element[] | null> {
    const items = xml('items', { node, ...(opts.maxItems ? { max_items: opts.maxItems } : {}) }, opts.itemId ? xml('item', { id: opts.itemId }) : null);
    let res: Element;
    try {
      res = await this.#d.request(xml('iq', { type: 'get', from, to }, xml('pubsub', { xmlns: NS_PUBSUB }, items)), this.#d.fetchTimeoutMs ?? 10000);
    } catch (e) {
      // No such node, no such account, no PEP there: the contact does not offer it. Not readable for
      // us: a KeysNotVisibleError. Other errors (timeouts, unreachable servers) are worth a retry
      // and propagate.
      if (e instanceof RemoteError && NOT_OFFERED.has(e.remoteCondition)) return null;
      if (e instanceof RemoteError && NOT_READABLE.has(e.remoteCondition)) {
        const detail = e.stanza.getChild('error')?.getChildElements().find((c) => c.attrs.xmlns === NS_PUBSUB_ERRORS && ACCESS_DETAIL.has(c.name))?.name;
        // A plain forbidden is what Prosody answers a reader it does not know both for a node
        // (or an account) that is not there and for one it may not read: not certain.
        const certain = detail !== undefined || e.remoteCondition !== 'forbidden';
        const text = certain
          ? `${to} lets only approved contacts read ${node} (${detail ?? e.remoteCondition}): ${from} needs ${to}'s approval (a presence subscription).`
          : `${to}'s server does not let ${from} read ${node} (forbidden: there is none, or only approved contacts may read it).`;
        throw new KeysNotVisibleError(certain, text, { cause: e });
      }
      throw e;
    }
    const got = res.getChild('pubsub', NS_PUBSUB)?.getChild('items');
    if (!got) throw new GatewayError('remote_error', 'the contact answered a pubsub request without items');
    return got.getChildren('item');
  }

  // ---- serving other entities ----

  #payload(owner: string, node: string, id: string, text: string): Element {
    const k = `${owner}\0${node}\0${id}`;
    let el = this.#parsed.get(k);
    if (!el) {
      el = parseXml(text);
      this.#parsed.set(k, el);
    }
    return el;
  }

  #owner(ctx: IqContext): string {
    if (ctx.address.kind === 'domain') throw new IqError('feature-not-implemented', undefined, unsupported('retrieve-items'));
    if (ctx.to.resource) throw new IqError('bad-request', 'pubsub requests go to the bare JID');
    return ctx.address.local;
  }

  #handleGet(ctx: IqContext): Element {
    const owner = this.#owner(ctx);
    const children = ctx.payload.getChildElements();
    const items = children.length === 1 && children[0]!.name === 'items' ? children[0]! : null;
    if (!items) throw new IqError('feature-not-implemented', undefined, unsupported(children[0]?.name ?? 'unknown'));
    const node = String(items.attrs.node ?? '');
    if (!node) throw new IqError('bad-request', undefined, xml('nodeid-required', { xmlns: NS_PUBSUB_ERRORS }));
    const config = this.#d.store.node(owner, node);
    if (!config) throw new IqError('item-not-found');
    if (config.accessModel === 'presence' && !this.#d.presence.isSubscriber(owner, ctx.fromBare)) {
      throw new IqError('not-authorized', undefined, xml('presence-subscription-required', { xmlns: NS_PUBSUB_ERRORS }));
    }
    let stored = this.#d.store.items(owner, node);
    const wanted = items.getChildren('item').map((i) => String(i.attrs.id ?? ''));
    if (wanted.length > 0) {
      stored = stored.filter((i) => wanted.includes(i.id));
      if (stored.length === 0) throw new IqError('item-not-found');
    } else if (items.attrs.max_items !== undefined) {
      const n = Number(items.attrs.max_items);
      if (!Number.isInteger(n) || n < 0) throw new IqError('bad-request');
      stored = stored.slice(0, n);
    }
    return xml(
      'pubsub',
      { xmlns: NS_PUBSUB },
      xml('items', { node }, ...stored.map((i) => xml('item', { id: i.id }, this.#payload(owner, node, i.id, i.payload)))),
    );
  }

  #handleSet(ctx: IqContext): Element {
    this.#owner(ctx);
    const op = ctx.payload.getChildElements()[0]?.name ?? '';
    if (op === 'publish' || op === 'retract' || op === 'create' || op === 'delete' || op === 'purge') {
      // Only the gateway publishes for its hosted JIDs.
      throw new IqError('forbidden', 'Only the gateway publishes on this service.');
    }
    throw new IqError('feature-not-implemented', undefined, unsupported(op === 'subscribe' ? 'subscribe' : op || 'unknown'));
  }

  // ---- notifications ----

  #eventMessage(owner: string, to: string, node: string, items: Array<{ id: string; payload: Element }>): Element {
    return xml(
      'message',
      { type: 'headline', from: owner, to },
      xml('event', { xmlns: NS_PUBSUB_EVENT }, xml('items', { node }, ...items.map((i) => xml('item', { id: i.id }, i.payload)))),
    );
  }

  /** PEP: events go to contacts subscribed to the owner's presence whose caps include node+notify. */
  #notify(owner: string, node: string, items: Array<{ id: string; payload: Element }>): void {
    const notifyFeature = `${node}+notify`;
    for (const { full, features } of this.#d.presence.online(owner)) {
      if (!features.has(notifyFeature)) continue;
      if (!this.#d.presence.isSubscriber(owner, full.split('/')[0]!)) continue;
      this.#d.send(this.#eventMessage(owner, full, node, items)).catch((e) => this.#d.log.debug({ err: e }, 'pubsub notification not sent'));
    }
  }

  /** PEP sends the last item of each node a contact asks for when it comes online. */
  #sendLastItems(owner: string, full: string, features: ReadonlySet<string>): void {
    if (features.size === 0 || !this.#d.presence.isSubscriber(owner, full.split('/')[0]!)) return;
    for (const node of this.#d.store.nodes(owner)) {
      if (!features.has(`${node}+notify`)) continue;
      const last = this.#d.store.items(owner, node)[0];
      if (!last) continue;
      const item = { id: last.id, payload: this.#payload(owner, node, last.id, last.payload) };
      this.#d.send(this.#eventMessage(owner, full, node, [item])).catch((e) => this.#d.log.debug({ err: e }, 'pubsub last item not sent'));
    }
  }
}

/** A pubsub event (+notify) in a message from a contact: node and items, or null. */
export function parseEvent(message: Element): { node: string; items: Element[] } | null {
  const items = message.getChild('event', NS_PUBSUB_EVENT)?.getChild('items');
  if (!items || !items.attrs.node) return null;
  return { node: String(items.attrs.node), items: items.getChildren('item') };
}
