// Inbound messages to hosted JIDs: decrypt with the engine whose payload the stanza carries, then
// route: to a bot's webhook queue, or (for a proxy) re-encrypted to the real contact from the
// sender's proxy JID. What is not a message is not delivered as one: chat states, receipts, PEP
// events and key-transport messages never reach a webhook or a contact as text. Plaintext is
// refused with a readable error unless an admin enabled it.
import { stanzaSize } from '../component/stanza-limits.js';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { toGatewayError } from '../errors.js';
import { LimitError } from '../limits.js';
import { stanzaSummary } from '../log.js';
import type { Metrics } from '../http/metrics.js';
import type { ContactStore } from '../keystore/contact-store.js';
import type { StanzaContext } from '../component/router.js';
import { errorReply } from '../component/stanza.js';
import { parseEvent } from '../component/pubsub.js';
import { formatJid } from '../component/jid.js';
import type { DecryptFailure, SenderInfo } from './engine.js';
import type { EngineRegistry } from './registry.js';
import { NS_RECEIPTS, type Encryption } from './outbound.js';

/** A decrypted message for a hosted JID, ready to route. */
export interface InboundMessage {
  /** Hosted bare JID it was addressed to. */
  local: string;
  /** Sender's bare and full JIDs. */
  from: string;
  fromFull: string;
  body: string;
  encryption: Encryption;
  sender: SenderInfo;
  /** The sender's stanza id, for receipts. */
  stanzaId: string | null;
  receiptRequested: boolean;
  receivedAt: Date;
}

/** Where decrypted messages go: bots to their webhook queue, proxies to the bridge. */
export interface InboundRoutes {
  toBot(localpart: string, msg: InboundMessage): Promise<void>;
  toProxy(remote: string, msg: InboundMessage): Promise<void>;
  /** A XEP-0184 receipt from `from` for a message the gateway sent from `local`. */
  receipt(local: string, from: string, id: string): Promise<void>;
  /** Whether plaintext from contacts is accepted for this hosted JID. */
  plaintextAllowed(local: string): boolean;
}

/** Payloads of end-to-end encryption this gateway does not run: their <body> is only a fallback notice. */
const FOREIGN_E2EE: Array<[string, string, string]> = [
  ['encrypted', 'urn:xmpp:omemo:2', 'OMEMO 2'],
  ['encrypted', 'urn:xmpp:omemo:1', 'OMEMO 1'],
  ['encrypted', 'eu.siacs.conversations.axolotl', 'OMEMO'],
  ['openpgp', 'urn:xmpp:openpgp:0', 'OpenPGP for XMPP (OX)'],
  ['x', 'jabber:x:encrypted', 'XEP-0027 OpenPGP'],
];

/** The name of an end-to-end encryption the stanza carries but no engine recognized, if any. */
function foreignEncryption(stanza: Element): string | null {
  for (const [name, ns, label] of FOREIGN_E2EE) if (stanza.getChild(name, ns)) return label;
  const eme = stanza.getChild('encryption', 'urn:xmpp:eme:0');
  if (eme) return String(eme.attrs.name ?? eme.attrs.namespace ?? 'an unknown encryption');
  if (/^\?OTR/.test(stanza.getChildText('body') ?? '')) return 'OTR';
  return null;
}

/** Failures the sender is told about; the others are quiet (not for us, replays). */
const TELL_SENDER: ReadonlySet<DecryptFailure> = new Set(['malformed', 'no-session', 'unknown-prekey', 'bad-mac', 'unknown-key', 'wrong-key', 'bad-signature', 'distrusted', 'wrong-recipient', 'stale-time', 'plaintext', 'internal']);

export class BridgeCore {
  readonly #engines: EngineRegistry;
  readonly #routes: InboundRoutes;
  readonly #contacts: ContactStore;
  readonly #send: (el: Element) => Promise<void>;
  readonly #resource: string;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  /** Per-sender chains keep inbound order while letting different senders proceed in parallel. */
  readonly #chains = new Map<string, Promise<void>>();
  /** Largest body accepted per protocol (limits.<protocol>_max_body), if it has one. */
  readonly #maxBody: (protocol: string) => number | undefined;
  readonly #mayReplyError: (local: string, peer: string) => boolean;

  constructor(deps: {
    engines: EngineRegistry;
    routes: InboundRoutes;
    contacts: ContactStore;
    send: (el: Element) => Promise<void>;
    resource: string;
    metrics: Metrics;
    log: Logger;
    maxBody?: (protocol: string) => number | undefined;
    /** Whether an error reply to `peer`'s message may be sent now (limits.message_errors_per_contact_per_minute). */
    mayReplyError?: (local: string, peer: string) => boolean;
  }) {
    this.#maxBody = deps.maxBody ?? (() => undefined);
    this.#mayReplyError = deps.mayReplyError ?? (() => true);
    this.#engines = deps.engines;
    this.#routes = deps.routes;
    this.#contacts = deps.contacts;
    this.#send = deps.send;
    this.#resource = deps.resource;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
  }

  /** Handles a <message> to a hosted JID (bot or proxy), in order per (sender, hosted JID). */
  handle(ctx: StanzaContext): Promise<void> {
    if (ctx.address.kind === 'domain') return Promise.resolve();
    const key = `${ctx.fromBare}\0${ctx.address.local}`;
    const prev = this.#chains.get(key) ?? Promise.resolve();
    const next = prev.then(() => this.#handle(ctx)).catch((e) => this.#failed(ctx, e));
    this.#chains.set(key, next);
    const done = () => {
      if (this.#chains.get(key) === next) this.#chains.delete(key);
    };
    void next.then(done, done);
    return next;
  }

  /** Resolves when every message received so far has been handled (shutdown). */
  async drain(): Promise<void> {
    while (this.#chains.size > 0) await Promise.allSettled([...this.#chains.values()]);
  }

  async #failed(ctx: StanzaContext, e: unknown): Promise<void> {
    if (e instanceof LimitError && e.silent) return; // told once already (limits.ts)
    const g = toGatewayError(e);
    if (g.code === 'internal') this.#log.error({ err: e, stanza: stanzaSummary(ctx.stanza) }, 'inbound message failed');
    this.#metrics.errors.inc({ kind: 'inbound_message' });
    await this.#sendQuietly(errorReply(ctx.stanza, g.condition, g.code === 'internal' ? 'The gateway could not process this message.' : g.userText));
  }

  async #tooLarge(ctx: StanzaContext, protocol: string, maxBody: number): Promise<void> {
    const stanza = ctx.stanza;
    this.#metrics.limited.inc({ limit: `${protocol}_max_body` });
    this.#metrics.messages.inc({ protocol, direction: 'in', result: 'too_large' });
    await this.#refuse(ctx, errorReply(stanza, 'policy-violation', `The message is larger than this gateway accepts (${Math.round(maxBody / 1024)} KB). It was not delivered.`));
  }

  /** An error reply to a message, within the contact's budget (limits.message_errors_per_contact_per_minute). */
  async #refuse(ctx: StanzaContext, el: Element): Promise<void> {
    if (ctx.address.kind !== 'domain' && !this.#mayReplyError(ctx.address.local, ctx.fromBare)) return;
    await this.#sendQuietly(el);
  }

  async #sendQuietly(el: Element): Promise<void> {
    try {
      await this.#send(el);
    } catch (e) {
      this.#log.debug({ err: e }, 'reply not sent');
    }
  }

  async #handle(ctx: StanzaContext): Promise<void> {
    const { stanza, address, fromBare } = ctx;
    if (address.kind === 'domain') return;
    const local = address.local;
    const type = String(stanza.attrs.type ?? 'normal');
    if (type === 'groupchat') return; // no MUC support: never treat room traffic as a message

    const event = parseEvent(stanza);
    if (event) {
      for (const engine of this.#engines.all()) {
        if (engine.ownsNode?.(event.node)) await engine.onPepEvent?.(local, fromBare, event.node, event.items);
      }
      return;
    }

    const received = stanza.getChild('received', NS_RECEIPTS);
    if (received?.attrs.id) await this.#routes.receipt(local, fromBare, String(received.attrs.id));

    const engine = this.#engines.recognize(stanza);
    const receiptRequested = !!stanza.getChild('request', NS_RECEIPTS) && !!stanza.attrs.id;
    let msg: InboundMessage;
    if (engine) {
      // Base64 makes a body 4/3 larger; keys, headers and a fallback body add a little.
      const maxBody = this.#maxBody(engine.id);
      if (maxBody !== undefined && stanzaSize(stanza, (maxBody * 4) / 3 + 16384) > (maxBody * 4) / 3 + 16384) return this.#tooLarge(ctx, engine.id, maxBody);
      const result = await engine.decrypt(local, stanza);
      for (const r of result.replies) await this.#sendQuietly(r);
      // Engines count their own inbound results (messages, decrypt failures); we count plaintext.
      if (!result.ok) {
        this.#log.info({ from: fromBare, local, protocol: engine.id, reason: result.reason, id: stanza.attrs.id }, 'message not decrypted');
        if (TELL_SENDER.has(result.reason)) {
          await this.#refuse(ctx, errorReply(stanza, 'not-acceptable', `The gateway could not decrypt this message (${result.reason}).`));
        }
        return;
      }
      if (result.body === null) return; // key transport, heartbeat
      if (maxBody !== undefined && Buffer.byteLength(result.body, 'utf8') > maxBody) return this.#tooLarge(ctx, engine.id, maxBody);
      if (!result.plaintext) this.#contacts.setLastProtocol(local, fromBare, engine.id);
      msg = this.#message(ctx, local, result.body, result.plaintext ? 'none' : engine.id, result.sender, receiptRequested);
    } else {
      const foreign = foreignEncryption(stanza);
      if (foreign) {
        // Its body is a fallback notice, never the message: refuse, whatever the plaintext setting.
        this.#metrics.messages.inc({ protocol: 'none', direction: 'in', result: 'unsupported_encryption' });
        await this.#refuse(ctx, errorReply(stanza, 'not-acceptable', `This gateway cannot decrypt ${foreign}. Use OMEMO (eu.siacs.conversations.axolotl) or XEP-0027 OpenPGP.`));
        return;
      }
      const body = stanza.getChildText('body');
      if (body === null) return; // chat states, receipts, markers: nothing to deliver
      if (!this.#routes.plaintextAllowed(local)) {
        this.#metrics.messages.inc({ protocol: 'none', direction: 'in', result: 'refused' });
        await this.#refuse(
          ctx,
          errorReply(stanza, 'not-acceptable', 'This gateway accepts only end-to-end encrypted messages (OMEMO or OpenPGP). Your message was not delivered.'),
        );
        return;
      }
      this.#metrics.messages.inc({ protocol: 'none', direction: 'in', result: 'ok' });
      msg = this.#message(ctx, local, body, 'none', { jid: fromBare, trust: 'untrusted' }, receiptRequested);
    }

    if (address.kind === 'proxy') {
      // The bridge forwards the receipt request and acknowledges when the real recipient does.
      await this.#routes.toProxy(address.remote, msg);
      return;
    }
    await this.#routes.toBot(address.localpart, msg);
    // XEP-0184: acknowledge only once the message is decrypted and durably queued for the bot.
    if (receiptRequested) {
      await this.#sendQuietly(
        xml('message', { from: `${local}/${this.#resource}`, to: formatJid(ctx.from), id: `rcpt-${String(stanza.attrs.id)}` }, xml('received', { xmlns: NS_RECEIPTS, id: String(stanza.attrs.id) })),
      );
    }
  }

  #message(ctx: StanzaContext, local: string, body: string, encryption: Encryption, sender: SenderInfo, receiptRequested: boolean): InboundMessage {
    return {
      local,
      from: ctx.fromBare,
      fromFull: formatJid(ctx.from),
      body,
      encryption,
      sender,
      stanzaId: ctx.stanza.attrs.id ? String(ctx.stanza.attrs.id) : null,
      receiptRequested,
      receivedAt: new Date(),
    };
  }
}
