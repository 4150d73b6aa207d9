// Presence for hosted JIDs (RFC 6121): the subscription handshake, probes, our availability with
// caps (XEP-0115), and which contacts' resources are online with which features, so that PEP
// notifications reach those that asked for them (+notify). The server does none of this for a
// component. Subscriptions are remembered in the keystore.
import xml from '@xmpp/xml';
import { LRUCache } from 'lru-cache';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import type { SubscriptionStore } from '../keystore/subscription-store.js';
import type { Addressing } from './addressing.js';
import { RESOURCE } from './addressing.js';
import { NS_CAPS, type RemoteCaps } from './caps.js';
import type { Disco } from './disco.js';
import type { StanzaContext } from './router.js';
import { formatJid } from './jid.js';

/** What askToFollow did: sent a request, or why not. */
export type AskOutcome = 'asked' | 'pending' | 'following' | 'declined';

/** How long a declined subscription request is not asked again. */
export const DECLINE_MEMORY_MS = 24 * 3600_000;

export interface PresenceListener {
  /** A contact's resource became available to `local` (features known, or empty when unresolved). */
  contactOnline?(local: string, full: string, features: ReadonlySet<string>): void;
  contactOffline?(local: string, full: string): void;
  /** Any available presence from a contact's resource (e.g. to check a XEP-0027 signature). */
  contactPresence?(local: string, full: string, stanza: Element): void;
  /** A contact approved `local`'s subscription request (they now let it see their presence and keys). */
  approved?(local: string, contact: string): void;
}

/** Extra children for presence sent from a hosted JID (e.g. a XEP-0027 signature of the status). */
export type PresenceExtras = (local: string, status: string) => Promise<Element[]>;

const EMPTY: ReadonlySet<string> = new Set();

export class PresenceService {
  readonly #send: (el: Element) => Promise<void>;
  readonly #subs: SubscriptionStore;
  readonly #disco: Disco;
  readonly #caps: RemoteCaps;
  readonly #addressing: Addressing;
  readonly #log: Logger;
  readonly #extras: PresenceExtras[] = [];
  readonly #listeners: PresenceListener[] = [];
  /** When a contact declined a hosted JID's request (local \0 contact; bounded, in memory: a restart forgets). */
  readonly #declined = new LRUCache<string, number>({ max: 10_000 });
  /** local bare -> remote full JID -> features. */
  readonly #online = new Map<string, Map<string, ReadonlySet<string>>>();
  /** Entries of #online in all, at most #maxOnline (limits.peer_cache_entries): beyond, a new resource is not tracked. */
  #onlineCount = 0;
  readonly #maxOnline: number;
  readonly #onUntracked: () => void;
  readonly #admit: (local: string) => void;
  status = '';

  constructor(deps: {
    send: (el: Element) => Promise<void>;
    subs: SubscriptionStore;
    disco: Disco;
    caps: RemoteCaps;
    addressing: Addressing;
    log: Logger;
    maxOnline?: number;
    onUntracked?: () => void;
    /**
     * Called before a subscription to hosted JID `local` is accepted; throws (a LimitError) when
     * `local` may not get an identity now. A subscription makes the gateway answer with signed
     * presence (a key) and subscribe back, which the contact's server writes to their roster: a
     * flood of subscribes to new proxies is refused here, with one error each, before any of it.
     */
    admit?: (local: string) => void;
  }) {
    this.#admit = deps.admit ?? (() => undefined);
    this.#maxOnline = deps.maxOnline ?? Infinity;
    this.#onUntracked = deps.onUntracked ?? (() => undefined);
    this.#send = deps.send;
    this.#subs = deps.subs;
    this.#disco = deps.disco;
    this.#caps = deps.caps;
    this.#addressing = deps.addressing;
    this.#log = deps.log;
  }

  addExtras(fn: PresenceExtras): void {
    this.#extras.push(fn);
  }

  /** Calls every listener; one that throws is logged and does not stop the others. */
  #tell(call: (l: PresenceListener) => void): void {
    for (const l of this.#listeners) {
      try {
        call(l);
      } catch (e) {
        this.#log.error({ err: e }, 'presence listener failed');
      }
    }
  }

  addListener(l: PresenceListener): void {
    this.#listeners.push(l);
  }

  /** Remote resources tracked as available, in all (bounded by limits.peer_cache_entries). */
  get onlineCount(): number {
    return this.#onlineCount;
  }

  /** Remote resources currently available to `local`, with their features. */
  online(local: string): Array<{ full: string; features: ReadonlySet<string> }> {
    return [...(this.#online.get(local) ?? new Map<string, ReadonlySet<string>>())].map(([full, features]) => ({ full, features }));
  }

  /** Bare JIDs that receive `local`'s presence (and so its PEP notifications). */
  subscribers(local: string): string[] {
    return this.#subs.forLocal(local).filter((s) => s.from).map((s) => s.remote);
  }

  /**
   * Asks `remote` to let hosted JID `local` see their presence (a subscription request), unless it
   * does, has asked already (never twice while pending) or was declined in the last
   * DECLINE_MEMORY_MS (never asked again on every message): a contact who shows their keys to
   * approved contacts only lets us read them once they approve.
   */
  async askToFollow(local: string, remote: string): Promise<AskOutcome> {
    const s = this.#subs.get(local, remote);
    if (s.to) return 'following';
    if (s.pendingOut) return 'pending';
    const declinedAt = this.#declined.get(`${local}\0${remote}`);
    if (declinedAt !== undefined && Date.now() - declinedAt < DECLINE_MEMORY_MS) return 'declined';
    this.#subs.update(local, remote, { pendingOut: true });
    await this.#send(xml('presence', { from: local, to: remote, type: 'subscribe' }));
    this.#log.info({ local, contact: remote }, 'asked a contact for a subscription: their keys are readable to approved contacts only');
    return 'asked';
  }

  isSubscriber(local: string, remote: string): boolean {
    return this.#subs.get(local, remote).from;
  }

  async handle(ctx: StanzaContext): Promise<void> {
    const { stanza, fromBare, address } = ctx;
    const local = address.kind === 'domain' ? this.#addressing.domain : address.local;
    const fromFull = formatJid(ctx.from);
    const type = String(stanza.attrs.type ?? 'available');
    switch (type) {
      case 'subscribe': {
        if (address.kind !== 'domain' && !this.#subs.get(local, fromBare).from) this.#admit(local);
        const s = this.#subs.update(local, fromBare, { from: true });
        await this.#send(xml('presence', { from: local, to: fromBare, type: 'subscribed' }));
        await this.#send(await this.presenceFor(local, fromBare));
        // Subscribe back: we want their presence (caps) and so their PEP events.
        if (!s.to && !s.pendingOut && address.kind !== 'domain') {
          this.#subs.update(local, fromBare, { pendingOut: true });
          await this.#send(xml('presence', { from: local, to: fromBare, type: 'subscribe' }));
        }
        return;
      }
      case 'subscribed': {
        const before = this.#subs.get(local, fromBare);
        this.#subs.update(local, fromBare, { to: true, pendingOut: false });
        // Now that the contact's server lets us follow them, send our presence (with caps), directed
        // if they do not follow us: their PEP service takes our +notify interest from presence
        // received under a subscription, and sends us their current items (keys a bot asked to see).
        if (!before.to) {
          await this.#send(await this.presenceFor(local, fromBare));
          this.#tell((l) => l.approved?.(local, fromBare));
        }
        return;
      }
      case 'unsubscribe':
        // RFC 6121 §3.3.3: the contact's side updates its state and goes unavailable for the user.
        this.#subs.update(local, fromBare, { from: false });
        await this.#send(xml('presence', { from: address.kind === 'domain' ? local : `${local}/${RESOURCE}`, to: fromBare, type: 'unavailable' }));
        return;
      case 'unsubscribed': {
        // Our request declined (or a subscription revoked): remembered, not asked again at once.
        const before = this.#subs.get(local, fromBare);
        if (before.pendingOut || before.to) this.#declined.set(`${local}\0${fromBare}`, Date.now());
        this.#subs.update(local, fromBare, { to: false, pendingOut: false });
        return;
      }
      case 'probe':
        if (this.#subs.get(local, fromBare).from) await this.#send(await this.presenceFor(local, fromFull));
        else await this.#send(xml('presence', { from: local, to: fromBare, type: 'unsubscribed' }));
        return;
      case 'unavailable':
        this.#removeOnline(local, fromFull);
        return;
      case 'available':
        this.#contactAvailable(local, fromFull, stanza);
        return;
      default:
        return;
    }
  }

  #contactAvailable(local: string, full: string, stanza: Element): void {
    this.#tell((l) => l.contactPresence?.(local, full, stanza));
    let map = this.#online.get(local);
    if (!map?.has(full)) {
      if (this.#onlineCount >= this.#maxOnline) {
        this.#onUntracked();
        return;
      }
      this.#onlineCount++;
    }
    if (!map) this.#online.set(local, (map = new Map()));
    const c = stanza.getChild('c', NS_CAPS);
    const known = this.#caps.known(full);
    map.set(full, known ?? EMPTY);
    if (!c) {
      this.#notifyOnline(local, full, known ?? EMPTY);
      return;
    }
    void this.#caps.resolve(`${local}/${RESOURCE}`, full, c).then((features) => {
      const m = this.#online.get(local);
      if (!m?.has(full)) return; // went offline meanwhile
      m.set(full, features ?? EMPTY);
      this.#notifyOnline(local, full, features ?? EMPTY);
    }).catch((e: unknown) => this.#log.warn({ err: e }, 'caps resolution failed'));
  }

  #notifyOnline(local: string, full: string, features: ReadonlySet<string>): void {
    this.#tell((l) => l.contactOnline?.(local, full, features));
  }

  #removeOnline(local: string, full: string): void {
    const map = this.#online.get(local);
    if (!map?.delete(full)) return;
    this.#onlineCount--;
    if (map.size === 0) this.#online.delete(local);
    this.#caps.forget(full);
    this.#tell((l) => l.contactOffline?.(local, full));
  }

  /** The available presence of hosted JID `local` (from its full JID, with caps) addressed to `to`. */
  async presenceFor(local: string, to: string): Promise<Element> {
    const isDomain = local === this.#addressing.domain;
    const kind = isDomain ? null : this.#addressing.classify(local).kind;
    const extras: Element[] = [];
    if (!isDomain) {
      for (const fn of this.#extras) {
        try {
          extras.push(...(await fn(local, this.status)));
        } catch (e) {
          this.#log.warn({ err: e, local }, 'presence extension failed');
        }
      }
    }
    return xml(
      'presence',
      { from: isDomain ? local : `${local}/${RESOURCE}`, to },
      this.status ? xml('status', {}, this.status) : null,
      kind === 'bot' || kind === 'proxy' ? this.#disco.capsElement(kind) : null,
      ...extras,
    );
  }

  /** After (re)connecting: presence to every subscriber, probes to every contact we follow. */
  async onConnected(): Promise<void> {
    this.#online.clear();
    this.#onlineCount = 0;
    for (const s of this.#subs.all()) {
      try {
        if (s.from) await this.#send(await this.presenceFor(s.local, s.remote));
        if (s.to) await this.#send(xml('presence', { from: s.local, to: s.remote, type: 'probe' }));
        else if (s.pendingOut) await this.#send(xml('presence', { from: s.local, to: s.remote, type: 'subscribe' }));
      } catch (e) {
        this.#log.debug({ err: e }, 'presence announcement failed');
        return;
      }
    }
  }

  /** Sends `local`'s current presence to all its subscribers (e.g. after a status change). */
  async broadcast(local: string): Promise<void> {
    for (const remote of this.subscribers(local)) await this.#send(await this.presenceFor(local, remote));
  }

  /** Sends unavailable presence from every hosted JID to its subscribers (shutdown). */
  async goodbye(): Promise<void> {
    for (const s of this.#subs.all()) {
      if (!s.from) continue;
      const from = s.local === this.#addressing.domain ? s.local : `${s.local}/${RESOURCE}`;
      await this.#send(xml('presence', { from, to: s.remote, type: 'unavailable' })).catch(() => undefined);
    }
  }
}
