// A receiving OMEMO user for the bots benchmark, fast enough not to be the bottleneck: @xmpp/client
// logged in to Prosody plus the gateway's own OMEMO engine (createOmemoEngine) on an in-memory
// keystore. Its PubsubPort is the user's own PEP on the server (device list and bundle published
// with access_model=open) and iq reads of contacts' nodes. It answers receipts (XEP-0184) and sends
// the engine's protocol replies (session completion, heartbeats) as a real client would.
// A benchmark tool only: no reconnects, no roster or presence handling beyond going online.
import { client, xml, type Client } from '@xmpp/client';
import type Element from 'ltx/lib/Element.js';
import type { PubsubPort, PublishOptions } from '../bridges/engine.js';
import { createOmemoEngine, type OmemoEngine } from '../bridges/omemo/engine.js';
import { NODE_DEVICELIST, NS_OMEMO } from '../bridges/omemo/constants.js';
import { buildDeviceList } from '../bridges/omemo/wire.js';
import { GatewayError } from '../errors.js';
import { Metrics } from '../http/metrics.js';
import { Keystore } from '../keystore/keystore.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { TrustStore } from '../keystore/trust-store.js';
import { ContactStore } from '../keystore/contact-store.js';
import { createLogger } from '../log.js';
import type { Prosody } from '../test/harness/prosody.js';

const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const NS_RECEIPTS = 'urn:xmpp:receipts';
const NOT_OFFERED = new Set(['item-not-found', 'service-unavailable', 'feature-not-implemented', 'forbidden', 'not-authorized', 'not-allowed']);

export interface ClientMessage {
  from: string;
  body: string;
}

export class BenchOmemoClient {
  readonly jid: string;
  readonly client: Client;
  readonly engine: OmemoEngine;
  readonly counts = { decrypted: 0, protocolOnly: 0, failed: 0, repliesSent: 0, receiptsSent: 0 };
  /** Called with each decrypted body, as soon as it is decrypted. */
  onMessage: (m: ClientMessage) => void = () => {};
  readonly #ks: Keystore;
  readonly #items = new Map<string, Map<string, Element>>();
  readonly #pending = new Set<Promise<unknown>>();
  readonly #receipts: boolean;
  #publishErrors: string[] = [];

  private constructor(c: Client, jid: string, receipts: boolean) {
    this.client = c;
    this.jid = jid;
    this.#receipts = receipts;
    this.#ks = Keystore.open(':memory:', 'bench-client-keystore', { kdf: { N: 1024, r: 8, p: 1 } });
    const port: PubsubPort = {
      publish: (owner, node, itemId, payload, opts) => this.#publish(owner, node, itemId, payload, opts),
      retract: (_owner, node, itemId) => {
        const n = this.#items.get(node);
        if (itemId === undefined) n?.clear();
        else n?.delete(itemId);
      },
      localItems: (_owner, node) => [...(this.#items.get(node) ?? new Map<string, Element>())].map(([id, payload]) => ({ id, payload })),
      fetch: (_from, to, node, opts) => this.#fetch(to, node, opts),
    };
    this.engine = createOmemoEngine({
      store: createProtocolStore(this.#ks, 'omemo'),
      trust: new TrustStore(this.#ks, 'btbv'),
      contacts: new ContactStore(this.#ks),
      keystore: this.#ks,
      pubsub: port,
      metrics: new Metrics({ processMetrics: false }),
      log: createLogger('silent'),
      now: () => Date.now(),
      resource: 'bench',
    });
  }

  /** Creates the account, logs in, publishes the OMEMO device list and bundle, goes online. */
  static async start(server: Prosody, localpart: string, opts: { receipts?: boolean; resource?: string } = {}): Promise<BenchOmemoClient> {
    const { jid, password } = server.addUser(localpart);
    const c = client({ service: server.c2sService, domain: server.domain, username: localpart, password, resource: opts.resource ?? 'bench' });
    c.on('error', () => {});
    const u = new BenchOmemoClient(c, jid, opts.receipts !== false);
    c.on('stanza', (el: Element) => {
      if (el.name === 'message') u.#onMessage(el);
      else if (el.name === 'presence') u.#onPresence(el);
    });
    await c.start();
    c.reconnect.stop();
    await u.engine.ensureIdentity(jid);
    await Promise.all([...u.#pending]);
    if (u.#publishErrors.length) throw new Error(`bench client ${jid}: publishing failed: ${u.#publishErrors.join('; ')}`);
    await c.send(xml('presence'));
    return u;
  }

  async deviceId(): Promise<number> {
    return (await this.engine.devices(this.jid))[0]!.device_id;
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p)).catch(() => {});
    return p;
  }

  #publish(owner: string, node: string, itemId: string, payload: Element, opts: PublishOptions = {}): void {
    let n = this.#items.get(node);
    if (!n) this.#items.set(node, (n = new Map()));
    n.set(itemId, payload);
    const form = xml(
      'x',
      { xmlns: 'jabber:x:data', type: 'submit' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${NS_PUBSUB}#publish-options`)),
      xml('field', { var: 'pubsub#access_model' }, xml('value', {}, opts.accessModel ?? 'open')),
    );
    const iq = xml('iq', { type: 'set', to: owner }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node }, xml('item', { id: itemId }, payload)), xml('publish-options', {}, form)));
    this.#track(this.client.iqCaller.request(iq, 10000)).catch((e: unknown) => this.#publishErrors.push(`${node}: ${(e as Error).message}`));
  }

  async #fetch(to: string, node: string, opts: { itemId?: string; maxItems?: number } = {}): Promise<Element[] | null> {
    const items = xml('items', { node, ...(opts.maxItems ? { max_items: String(opts.maxItems) } : {}) }, opts.itemId ? xml('item', { id: opts.itemId }) : null);
    let res: Element;
    try {
      res = await this.client.iqCaller.request(xml('iq', { type: 'get', to }, xml('pubsub', { xmlns: NS_PUBSUB }, items)), 10000);
    } catch (e) {
      const cond = (e as { condition?: string }).condition;
      if (cond && NOT_OFFERED.has(cond)) return null;
      throw new GatewayError('remote_timeout', `pubsub read of ${node} at ${to} failed`, { cause: e });
    }
    return res.getChild('pubsub', NS_PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
  }

  // ---- group chats (XEP-0045): occupants' real JIDs from their presence ----

  /** room -> nick -> real bare JID. */
  readonly #occupants = new Map<string, Map<string, string>>();

  /** Joins `room` as `nick` (no history); resolves on our own presence (status 110). */
  async joinRoom(room: string, nick: string, timeoutMs = 20000): Promise<void> {
    this.#occupants.set(room, new Map());
    const joined = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.jid}: no self-presence from ${room}`)), timeoutMs);
      const onStanza = (el: Element) => {
        if (el.name !== 'presence' || String(el.attrs.from ?? '') !== `${room}/${nick}`) return;
        const x = el.getChild('x', NS_MUC_USER);
        if (el.attrs.type === 'error') reject(new Error(`${this.jid}: join of ${room} refused`));
        else if (!x?.getChildren('status').some((st) => st.attrs.code === '110')) return;
        clearTimeout(timer);
        this.client.off('stanza', onStanza);
        resolve();
      };
      this.client.on('stanza', onStanza);
    });
    await this.client.send(xml('presence', { to: `${room}/${nick}` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' }, xml('history', { maxstanzas: '0' }))));
    await joined;
  }

  /** As the room's owner: gives `jid` an affiliation (members-only rooms). */
  async setAffiliation(room: string, jid: string, affiliation: string): Promise<void> {
    await this.client.iqCaller.request(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/muc#admin' }, xml('item', { jid, affiliation }))), 10000);
  }

  /** Publishes the account's device list with these ids (several bench clients of one account). */
  async publishDeviceList(ids: readonly number[]): Promise<void> {
    this.#publish(this.jid, NODE_DEVICELIST, 'current', buildDeviceList(ids));
    await Promise.all([...this.#pending]);
    if (this.#publishErrors.length) throw new Error(`bench client ${this.jid}: publishing failed: ${this.#publishErrors.join('; ')}`);
  }

  #onPresence(el: Element): void {
    const from = String(el.attrs.from ?? '');
    const slash = from.indexOf('/');
    const occ = slash > 0 ? this.#occupants.get(from.slice(0, slash)) : undefined;
    if (!occ) return;
    const nick = from.slice(slash + 1);
    const real = el.getChild('x', NS_MUC_USER)?.getChild('item')?.attrs.jid;
    if (el.attrs.type === 'unavailable') occ.delete(nick);
    else if (typeof real === 'string') occ.set(nick, real.split('/')[0]!);
  }

  #onMessage(el: Element): void {
    const from = String(el.attrs.from ?? '');
    if (el.attrs.type === 'error' || !el.getChild('encrypted', NS_OMEMO)) return;
    const wantsReceipt = this.#receipts && el.getChild('request', NS_RECEIPTS) !== undefined && el.attrs.id && el.attrs.type !== 'groupchat';
    let sender = from;
    let roomFrom: string | null = null;
    if (el.attrs.type === 'groupchat') {
      const slash = from.indexOf('/');
      const real = slash > 0 ? this.#occupants.get(from.slice(0, slash))?.get(from.slice(slash + 1)) : undefined;
      if (!real || real === this.jid) return; // a reflection of our own, or a hidden sender
      sender = real;
      roomFrom = from.slice(0, slash);
    }
    void this.engine.decryptFrom(this.jid, el, sender).then(
      (d) => {
        for (const r of d.replies) {
          delete r.attrs.from; // the server stamps our full JID
          this.counts.repliesSent++;
          this.client.send(r).catch(() => {});
        }
        if (!d.ok) {
          this.counts.failed++;
          return;
        }
        if (d.body === null) {
          this.counts.protocolOnly++;
          return;
        }
        this.counts.decrypted++;
        this.onMessage({ from: roomFrom ?? from.split('/')[0]!, body: d.body });
        if (wantsReceipt) {
          this.counts.receiptsSent++;
          this.client.send(xml('message', { to: from, id: `r${this.counts.receiptsSent}` }, xml('received', { xmlns: NS_RECEIPTS, id: String(el.attrs.id) }))).catch(() => {});
        }
      },
      () => {
        this.counts.failed++;
      },
    );
  }

  async stop(): Promise<void> {
    try {
      await this.client.stop();
    } catch {
      /* already gone */
    }
    this.#ks.close();
  }
}
