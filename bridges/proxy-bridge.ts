// Bridging through proxy JIDs: a message from remote user A to the proxy of B is re-encrypted to B
// from the proxy of A, in the protocol chosen for B (explicit preference, reply in kind, then what B
// supports). XEP-0184 receipts are bridged both ways: A's request travels on, and B's ack comes back
// to A from B's proxy with A's original id. When nothing fits, A gets an error reply from B's proxy
// saying why (and, where possible, an encrypted notice it can read); nothing goes out in plaintext.
import { randomBytes } from 'node:crypto';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { toGatewayError } from '../errors.js';
import type { Addressing } from '../component/addressing.js';
import { NS_STANZAS } from '../component/stanza.js';
import type { InboundMessage } from './core.js';
import { NS_RECEIPTS, type OutboundSender } from './outbound.js';

interface PendingReceipt {
  /** A's full JID and the id of A's message. */
  to: string;
  id: string;
  /** B's proxy, which acknowledges to A. */
  from: string;
}

export class ProxyBridge {
  readonly #addressing: Addressing;
  readonly #outbound: OutboundSender;
  readonly #send: (el: Element) => Promise<void>;
  readonly #resource: string;
  readonly #allowPlaintext: boolean;
  readonly #log: Logger;
  /** Bridged message id -> whom to acknowledge when the recipient's receipt arrives. */
  readonly #receipts = new LRUCache<string, PendingReceipt>({ max: 100000, ttl: 7 * 86400 * 1000 });

  constructor(deps: { addressing: Addressing; outbound: OutboundSender; send: (el: Element) => Promise<void>; resource: string; allowPlaintext: boolean; log: Logger }) {
    this.#addressing = deps.addressing;
    this.#outbound = deps.outbound;
    this.#send = deps.send;
    this.#resource = deps.resource;
    this.#allowPlaintext = deps.allowPlaintext;
    this.#log = deps.log;
  }

  /** Forwards `msg` (from A, decrypted at B's proxy) to B, the user `remote`. */
  async forward(remote: string, msg: InboundMessage): Promise<void> {
    const fromProxy = this.#addressing.proxyFor(msg.from);
    const id = `br-${randomBytes(9).toString('base64url')}`;
    try {
      const res = await this.#outbound.send({
        from: fromProxy,
        to: remote,
        body: msg.body,
        id,
        requestReceipt: msg.receiptRequested,
        allowPlaintext: this.#allowPlaintext,
      });
      if (msg.receiptRequested && msg.stanzaId) this.#receipts.set(id, { to: msg.fromFull, id: msg.stanzaId, from: msg.local });
      this.#log.debug({ from: msg.from, to: remote, in: msg.encryption, out: res.encryption }, 'message bridged');
    } catch (e) {
      const g = toGatewayError(e);
      if (g.code === 'internal') this.#log.error({ err: e }, 'bridging failed');
      else this.#log.info({ from: msg.from, to: remote, code: g.code }, 'message not bridged');
      await this.#tellSender(msg, remote, g.condition, `Your message was not delivered to ${remote}: ${g.code === 'internal' ? 'the gateway failed to process it.' : g.userText}`);
    }
  }

  /** A receipt from B for a bridged message: acknowledge to A from B's proxy. Returns whether it was ours. */
  async receipt(from: string, id: string): Promise<boolean> {
    const p = this.#receipts.get(id);
    if (!p) return false;
    // Only the recipient of the bridged message may acknowledge it.
    const expectedProxy = this.#addressing.proxyFor(from);
    if (p.from !== expectedProxy) return false;
    this.#receipts.delete(id);
    await this.#send(xml('message', { from: `${p.from}/${this.#resource}`, to: p.to, id: `rcpt-${id}` }, xml('received', { xmlns: NS_RECEIPTS, id: p.id })));
    return true;
  }

  async #tellSender(msg: InboundMessage, remote: string, condition: string, text: string): Promise<void> {
    // The error reply every client understands as "this message failed", with the reason.
    const error = xml(
      'message',
      { type: 'error', from: `${msg.local}/${this.#resource}`, to: msg.fromFull, ...(msg.stanzaId ? { id: msg.stanzaId } : {}) },
      xml('error', { type: 'cancel' }, xml(condition, { xmlns: NS_STANZAS }), xml('text', { xmlns: NS_STANZAS, 'xml:lang': 'en' }, text)),
    );
    await this.#send(error).catch(() => undefined);
    // And a notice from the proxy the sender can read in their chat, encrypted the way they wrote.
    if (msg.encryption === 'none') return;
    try {
      await this.#outbound.send({ from: msg.local, to: msg.from, body: `[gateway] ${text}`, id: `ntc-${randomBytes(6).toString('base64url')}`, encryption: msg.encryption });
    } catch (e) {
      this.#log.debug({ err: e, remote }, 'could not send the failure notice');
    }
  }
}
