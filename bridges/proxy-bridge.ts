// Bridging through proxy JIDs: a message from remote user A to the proxy of B is committed to the
// durable outbox (body sealed) as soon as it is decrypted, and the outbox sender re-encrypts it to B
// from the proxy of A, in the protocol chosen for B (explicit preference, reply in kind, then what B
// supports). So a bridged message waits, like a bot's, for a session (OTR), a slow key lookup or a
// reconnect, and survives a restart. XEP-0184 receipts are bridged both ways: A's request travels on,
// and B's ack comes back to A from B's proxy with A's original id (the origin is kept in the outbox
// row, so this works after a restart too). When the message cannot be sent, A gets an error reply
// from B's proxy saying why (and, where possible, an encrypted notice it can read); nothing goes out
// in plaintext.
import { randomBytes } from 'node:crypto';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import type { GatewayError } from '../errors.js';
import type { Addressing } from '../component/addressing.js';
import { NS_STANZAS } from '../component/stanza.js';
import type { BridgeOrigin, OutboxMessage, OutboxStore } from '../keystore/outbox-store.js';
import type { InboundMessage } from './core.js';
import { NS_RECEIPTS, type Encryption, type OutboundSender } from './outbound.js';

export class ProxyBridge {
  readonly #addressing: Addressing;
  readonly #outbound: OutboundSender;
  readonly #outbox: OutboxStore;
  readonly #ttlMs: number;
  readonly #queued: () => void;
  readonly #send: (el: Element) => Promise<void>;
  readonly #resource: string;
  readonly #mayAutoReply: (local: string, peer: string) => boolean;
  readonly #log: Logger;

  constructor(deps: {
    addressing: Addressing;
    outbound: OutboundSender;
    outbox: OutboxStore;
    /** How long a bridged message may wait to be sent (outbox.message_ttl). */
    ttlMs: number;
    /** Wakes the outbox sender. */
    queued: () => void;
    send: (el: Element) => Promise<void>;
    resource: string;
    /** The shared budget of automatic text replies (limits.auto_replies_per_contact_per_minute). */
    mayAutoReply?: (local: string, peer: string) => boolean;
    log: Logger;
  }) {
    this.#addressing = deps.addressing;
    this.#outbound = deps.outbound;
    this.#outbox = deps.outbox;
    this.#ttlMs = deps.ttlMs;
    this.#queued = deps.queued;
    this.#send = deps.send;
    this.#resource = deps.resource;
    this.#mayAutoReply = deps.mayAutoReply ?? (() => true);
    this.#log = deps.log;
  }

  /** Commits `msg` (from A, decrypted at B's proxy) to the outbox, to be sent to B, the user `remote`. */
  async forward(remote: string, msg: InboundMessage): Promise<void> {
    const origin: BridgeOrigin = {
      local: msg.local,
      from: msg.from,
      fromFull: msg.fromFull,
      stanzaId: msg.stanzaId,
      encryption: msg.encryption,
      receiptRequested: msg.receiptRequested,
    };
    const { message } = this.#outbox.enqueue({ bot: this.#addressing.proxyFor(msg.from), to: remote, body: msg.body, encryption: null, idempotencyKey: null, ttlMs: this.#ttlMs, origin });
    this.#log.debug({ from: msg.from, to: remote, in: msg.encryption, id: message.id }, 'message queued for bridging');
    this.#queued();
  }

  /**
   * A receipt from `from` to hosted JID `local` for outbox message `id`. If it acknowledges a bridged
   * message (and comes from its recipient to the proxy that sent it), the original sender is
   * acknowledged from the recipient's proxy. Returns whether the id was a bridged message.
   */
  async receipt(local: string, from: string, id: string): Promise<boolean> {
    const m = this.#outbox.kindOf(id);
    if (!m || m.kind !== 'bridge') return false;
    if (m.bot !== local || !this.#outbox.markDelivered(id, from)) return true;
    const o = this.#outbox.origin(id);
    if (o?.receiptRequested && o.stanzaId) {
      await this.#send(xml('message', { from: `${o.local}/${this.#resource}`, to: o.fromFull, id: `rcpt-${id}` }, xml('received', { xmlns: NS_RECEIPTS, id: o.stanzaId })));
    }
    return true;
  }

  /** A bridged message failed for good: tell its original sender why. */
  async failed(m: OutboxMessage, g: GatewayError): Promise<void> {
    const o = this.#outbox.origin(m.id);
    if (!o) return;
    this.#log.info({ from: o.from, to: m.to, code: g.code }, 'message not bridged');
    const text = `Your message was not delivered to ${m.to}: ${g.code === 'internal' ? 'the gateway failed to process it.' : g.userText}`;
    // The error reply every client understands as "this message failed", with the reason.
    const error = xml(
      'message',
      { type: 'error', from: `${o.local}/${this.#resource}`, to: o.fromFull, ...(o.stanzaId ? { id: o.stanzaId } : {}) },
      xml('error', { type: 'cancel' }, xml(g.condition, { xmlns: NS_STANZAS }), xml('text', { xmlns: NS_STANZAS, 'xml:lang': 'en' }, text)),
    );
    await this.#send(error).catch(() => undefined);
    // And a notice from the proxy the sender can read in their chat, encrypted the way they wrote.
    // (An auto-responder answering the notice would be bridged, fail, and be noticed again: budgeted.)
    if (o.encryption === 'none' || !this.#mayAutoReply(o.local, o.from)) return;
    try {
      await this.#outbound.send({ from: o.local, to: o.from, body: `[gateway] ${text}`, id: `ntc-${randomBytes(6).toString('base64url')}`, encryption: o.encryption as Encryption });
    } catch (e) {
      this.#log.debug({ err: e, remote: m.to }, 'could not send the failure notice');
    }
  }
}
