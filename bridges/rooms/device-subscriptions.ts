// Occupants' device lists followed while they share a room with a bot. PEP sends +notify events only
// to contacts with a presence subscription, and room occupants are rarely in a bot's roster: the
// bot subscribes explicitly (XEP-0060 §6.1) to each occupant's device-list nodes when the occupant
// appears, and unsubscribes (§6.2) when the occupant is in none of the bot's rooms any more. The
// events arrive as ordinary pubsub notifications and go to the engines like any other +notify.
// Subscribing is best effort: a server that refuses it leaves the engines' TTL refresh in charge.
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { errorSummary } from '../../log.js';

export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';

export function subscribeIq(from: string, owner: string, node: string): Element {
  return xml('iq', { type: 'set', from, to: owner }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('subscribe', { node, jid: from })));
}

export function unsubscribeIq(from: string, owner: string, node: string): Element {
  return xml('iq', { type: 'set', from, to: owner }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('unsubscribe', { node, jid: from })));
}

export interface DeviceSubscriptionDeps {
  request: (iq: Element, timeoutMs?: number) => Promise<Element>;
  /** The device-list nodes to follow (one per OMEMO version). */
  nodes: readonly string[];
  log: Logger;
  /** Counts a subscribe or unsubscribe result ('ok' or the error). */
  count?: (op: 'subscribe' | 'unsubscribe', result: string) => void;
}

export class DeviceSubscriptions {
  readonly #d: DeviceSubscriptionDeps;
  /** `${local}\0${peer}` of the subscriptions asked for (whatever the answer). */
  readonly #held = new Set<string>();

  constructor(d: DeviceSubscriptionDeps) {
    this.#d = d;
  }

  /** Whether hosted JID `local` follows `peer`'s device lists. */
  has(local: string, peer: string): boolean {
    return this.#held.has(`${local}\0${peer}`);
  }

  /**
   * Subscribes `local` to `peer`'s device lists. Asked again on every appearance (a rejoin, a server
   * restart that lost it): subscribing twice is harmless.
   */
  async follow(local: string, peer: string): Promise<void> {
    this.#held.add(`${local}\0${peer}`);
    await Promise.all(this.#d.nodes.map((node) => this.#ask('subscribe', subscribeIq(local, peer, node), peer, node)));
  }

  /** Unsubscribes `local` from `peer`'s device lists (the occupant left every room of the bot). */
  async unfollow(local: string, peer: string): Promise<void> {
    if (!this.#held.delete(`${local}\0${peer}`)) return;
    await Promise.all(this.#d.nodes.map((node) => this.#ask('unsubscribe', unsubscribeIq(local, peer, node), peer, node)));
  }

  async #ask(op: 'subscribe' | 'unsubscribe', iq: Element, peer: string, node: string): Promise<void> {
    try {
      await this.#d.request(iq, 10_000);
      this.#d.count?.(op, 'ok');
    } catch (e) {
      this.#d.count?.(op, 'error');
      this.#d.log.info({ occupant: peer, node, op, err: errorSummary(e) }, 'device list subscription not changed');
    }
  }
}
