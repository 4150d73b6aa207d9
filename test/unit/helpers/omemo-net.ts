// An in-memory stand-in for XMPP around OMEMO engines: a pubsub network where engines publish their
// device lists and bundles and read each other's, and a way to deliver encrypted messages.
// Several engines may host the same bare JID (a contact with several devices): their device lists
// are merged as one account's list would be.
import { Writable } from 'node:stream';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { parse } from 'ltx';
import type { PubsubPort, PublishOptions } from '../../../bridges/engine.js';
import { GatewayError } from '../../../errors.js';
import { Keystore } from '../../../keystore/keystore.js';
import { createProtocolStore } from '../../../keystore/protocol-store.js';
import { TrustStore } from '../../../keystore/trust-store.js';
import { ContactStore } from '../../../keystore/contact-store.js';
import { Metrics } from '../../../http/metrics.js';
import { createLogger } from '../../../log.js';
import type { TrustPolicy } from '../../../config.js';
import { NODE_DEVICELIST, NS_OMEMO } from '../../../bridges/omemo/constants.js';
import { NODE_DEVICES as OMEMO2_DEVICES, NS_OMEMO2 } from '../../../bridges/omemo2/constants.js';
import { createOmemoEngine, type OmemoEngine, type OmemoEngineOptions } from '../../../bridges/omemo/engine.js';

export const reparse = (el: Element): Element => parse(el.toString()) as unknown as Element;

export interface FetchRecord {
  from: string;
  to: string;
  node: string;
}

/**
 * A published item as the gateway's pubsub service keeps it (component/pubsub.ts stores
 * payload.toString()): the serialized form, parsed on the first local read.
 */
interface Stored {
  xml: string;
  el?: Element;
}
const stored = (payload: Element): Stored => ({ xml: payload.toString() });
const parsed = (s: Stored): Element => (s.el ??= parse(s.xml) as unknown as Element);

export class FakeNetwork {
  /** owner -> node -> itemId -> payload, per publisher (engine name). */
  readonly #items = new Map<string, Map<string, Map<string, Map<string, Stored>>>>();
  readonly fetches: FetchRecord[] = [];
  readonly publishes: Array<{ publisher: string; owner: string; node: string; opts?: PublishOptions }> = [];
  /** Lets a test fail or change answers: return an Error to reject, an array to replace the items. */
  intercept: ((f: FetchRecord, items: Element[] | null) => Error | Element[] | null | undefined) | null = null;

  port(publisher: string): PubsubPort {
    return {
      publish: (owner, node, itemId, payload, opts) => {
        this.publishes.push({ publisher, owner, node, opts });
        this.#node(owner, node, publisher).set(itemId, stored(payload));
      },
      retract: (owner, node, itemId) => {
        const n = this.#node(owner, node, publisher);
        if (itemId === undefined) n.clear();
        else n.delete(itemId);
      },
      localItems: (owner, node) => [...this.#node(owner, node, publisher).entries()].map(([id, payload]) => ({ id, payload: parsed(payload) })),
      fetch: async (from, to, node) => {
        const f = { from, to, node };
        this.fetches.push(f);
        const items = this.items(to, node);
        const x = this.intercept?.(f, items);
        if (x instanceof Error) throw x;
        return x === undefined ? items : x;
      },
    };
  }

  #node(owner: string, node: string, publisher: string): Map<string, Stored> {
    let o = this.#items.get(owner);
    if (!o) this.#items.set(owner, (o = new Map()));
    let n = o.get(node);
    if (!n) o.set(node, (n = new Map()));
    let p = n.get(publisher);
    if (!p) n.set(publisher, (p = new Map()));
    return p;
  }

  /** What a reader of `owner`'s PEP node gets: <item> elements, or null when nobody published it. */
  items(owner: string, node: string): Element[] | null {
    const byPublisher = this.#items.get(owner)?.get(node);
    if (!byPublisher || [...byPublisher.values()].every((m) => m.size === 0)) return null;
    if (node === NODE_DEVICELIST || node === OMEMO2_DEVICES) {
      // One list merged from every publisher (as one account's devices share the node); a device's
      // other attributes (OMEMO 2 labels) are kept.
      const devices = new Map<string, Record<string, string>>();
      for (const m of byPublisher.values()) for (const p of m.values()) for (const d of parsed(p).getChildren('device')) if (!devices.has(String(d.attrs.id))) devices.set(String(d.attrs.id), { ...d.attrs, id: String(d.attrs.id) });
      const [name, ns] = node === NODE_DEVICELIST ? ['list', NS_OMEMO] : ['devices', NS_OMEMO2];
      return [xml('item', { id: 'current' }, xml(name, { xmlns: ns }, ...[...devices.values()].map((attrs) => xml('device', attrs))))];
    }
    const out: Element[] = [];
    for (const m of byPublisher.values()) for (const [id, p] of m) out.push(xml('item', { id }, parse(p.xml) as unknown as Element));
    return out;
  }

  /** Publishes a device list for `owner` as if from a client outside the test (e.g. after a device left). */
  setDeviceList(owner: string, ids: number[], publisher = `external:${owner}`): void {
    for (const m of this.#items.get(owner)?.get(NODE_DEVICELIST)?.values() ?? []) m.clear();
    this.#node(owner, NODE_DEVICELIST, publisher).set('current', stored(xml('list', { xmlns: NS_OMEMO }, ...ids.map((id) => xml('device', { id: String(id) })))));
  }

  fetchCount(to: string, nodePrefix: string): number {
    return this.fetches.filter((f) => f.to === to && f.node.startsWith(nodePrefix)).length;
  }
}

export const timeoutError = (): GatewayError => new GatewayError('remote_timeout');

export class Clock {
  t = 1_700_000_000_000;
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export interface Peer {
  name: string;
  jid: string;
  engine: OmemoEngine;
  ks: Keystore;
  trust: TrustStore;
  metrics: Metrics;
  logs: string[];
  clock: Clock;
  deviceId: number;
}

export interface PeerOptions {
  policy?: TrustPolicy;
  clock?: Clock;
  ks?: Keystore;
  engine?: OmemoEngineOptions;
  /** Publisher name in the FakeNetwork (defaults to `name`): a restarted engine keeps its name. */
  name?: string;
  /** Log level (tests read the debug lines; the bench runs at the gateway's default, info). */
  logLevel?: string;
}

export function openTestKeystore(path = ':memory:'): Keystore {
  return Keystore.open(path, 'passphrase-for-tests', { kdf: { N: 1024, r: 8, p: 1 } });
}

/** An engine hosting `jid`, with its own keystore, talking through `net`. */
export async function makePeer(net: FakeNetwork, jid: string, o: PeerOptions = {}): Promise<Peer> {
  const name = o.name ?? `${jid}#${Math.random().toString(36).slice(2, 8)}`;
  const ks = o.ks ?? openTestKeystore();
  const trust = new TrustStore(ks, o.policy ?? 'btbv');
  const metrics = new Metrics({ processMetrics: false });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const clock = o.clock ?? new Clock();
  const engine = createOmemoEngine(
    {
      store: createProtocolStore(ks, 'omemo'),
      trust,
      contacts: new ContactStore(ks),
      keystore: ks,
      pubsub: net.port(name),
      metrics,
      log: createLogger(o.logLevel ?? 'debug', sink),
      now: clock.now,
      resource: 'gw',
    },
    o.engine,
  );
  await engine.ensureIdentity(jid);
  const [dev] = await engine.devices(jid);
  return { name, jid, engine, ks, trust, metrics, logs, clock, deviceId: dev!.device_id };
}

/** The <message> a hosted JID sends: the engine's children under from/to. */
export function chat(from: Peer, to: string, children: Element[], id = `m${Math.random().toString(36).slice(2, 10)}`): Element {
  return reparse(xml('message', { from: `${from.jid}/gw`, to, type: 'chat', id }, ...children));
}

/** Encrypts from `a` to `b.jid` and returns the stanza as the network would deliver it. */
export async function send(a: Peer, to: string, body: string): Promise<Element> {
  const enc = await a.engine.encrypt(a.jid, to, body);
  return chat(a, to, enc.children);
}

export const encryptedOf = (stanza: Element): Element => stanza.getChild('encrypted', NS_OMEMO)!;
