// Dispatches every stanza the server routes to the component. Like the xmpp.js iq callee: an iq
// nobody handles gets service-unavailable, a GatewayError its condition, anything else
// internal-server-error plus a log line (never the error's text). Addressing is checked first: an
// address we do not host, a proxy for a domain we do not bridge, or a sender from such a domain
// gets an error stanza, never a relay.
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { GatewayError, toGatewayError } from '../errors.js';
import { stanzaSummary } from '../log.js';
import type { Metrics } from '../http/metrics.js';
import type { Addressing, Address } from './addressing.js';
import { bareOf, parseJid, type Jid } from './jid.js';
import { errorReply, iqResult } from './stanza.js';
import { asRequester, LimitError } from '../limits.js';
import type { StanzaLimits } from './stanza-limits.js';

export interface StanzaContext {
  stanza: Element;
  from: Jid;
  /** Bare sender JID, normalised. */
  fromBare: string;
  to: Jid;
  address: Address;
}

export interface IqContext extends StanzaContext {
  payload: Element;
}

/** Returns the result payload (or nothing for an empty result). Throw a GatewayError to refuse. */
export type IqHandler = (ctx: IqContext) => Promise<Element | Element[] | void> | Element | Element[] | void;
export type StanzaHandler = (ctx: StanzaContext) => Promise<void> | void;

/** Namespaces anyone may query, whatever their domain (public facts, needed by servers for caps). */
const PUBLIC_IQ = new Set(['http://jabber.org/protocol/disco#info', 'urn:xmpp:ping']);

export class Router {
  readonly #iq = new Map<string, IqHandler>();
  #message: StanzaHandler | null = null;
  #presence: StanzaHandler | null = null;
  readonly #claims: Array<(ctx: StanzaContext) => StanzaHandler | null> = [];
  readonly #send: (el: Element) => Promise<void>;
  readonly #addressing: Addressing;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #limits: StanzaLimits | undefined;

  constructor(deps: { send: (el: Element) => Promise<void>; addressing: Addressing; log: Logger; metrics: Metrics; limits?: StanzaLimits }) {
    this.#limits = deps.limits;
    this.#send = deps.send;
    this.#addressing = deps.addressing;
    this.#log = deps.log;
    this.#metrics = deps.metrics;
  }

  /** Registers the handler for iq `type` whose payload is <name xmlns=xmlns/>. */
  iq(type: 'get' | 'set', xmlns: string, name: string, handler: IqHandler): void {
    this.#iq.set(`${type} ${xmlns} ${name}`, handler);
  }

  message(handler: StanzaHandler): void {
    this.#message = handler;
  }

  presence(handler: StanzaHandler): void {
    this.#presence = handler;
  }

  /**
   * Lets a service take message and presence stanzas (errors included) before the sender's domain
   * is checked: rooms the bots joined (the MUC service's domain need not be a bridged one). A claimed
   * stanza is never answered with an error by the router; the handler must not throw.
   */
  claim(fn: (ctx: StanzaContext) => StanzaHandler | null): void {
    this.#claims.push(fn);
  }

  /** Handles one inbound stanza; never throws. */
  async handle(el: Element): Promise<void> {
    if (this.#log.isLevelEnabled('trace')) this.#log.trace({ stanza: stanzaSummary(el) }, 'stanza in');
    try {
      // Work a stanza causes (identities created, ...) is charged to its sender (limits.ts).
      await asRequester(String(el.attrs.from ?? '').split('/')[0]!.toLowerCase(), () => this.#dispatch(el));
    } catch (e) {
      this.#log.error({ err: e, stanza: stanzaSummary(el) }, 'stanza handling failed');
      this.#metrics.errors.inc({ kind: 'stanza_handler' });
    }
  }

  async #dispatch(el: Element): Promise<void> {
    const type = String(el.attrs.type ?? '');
    if (type === 'error' || (el.name === 'iq' && type === 'result')) {
      if (el.name !== 'iq' && this.#claims.length > 0) await this.#claimed(el);
      return; // never answer errors or results
    }
    const verdict = this.#limits?.check(el);
    if (verdict && !verdict.ok) {
      if (verdict.reply && this.#answerable(el)) await this.#reply(el, errorReply(el, verdict.reply, verdict.text));
      return;
    }
    let from: Jid;
    let to: Jid;
    try {
      from = parseJid(String(el.attrs.from ?? ''));
      to = parseJid(String(el.attrs.to ?? ''));
    } catch {
      this.#metrics.errors.inc({ kind: 'malformed_stanza' });
      if (el.attrs.from) await this.#reply(el, errorReply(el, 'jid-malformed'));
      return;
    }
    let address: Address;
    try {
      address = this.#addressing.classify(to);
    } catch (e) {
      const g = toGatewayError(e);
      this.#metrics.errors.inc({ kind: g.code });
      if (this.#answerable(el)) await this.#reply(el, errorReply(el, g.code === 'not_hosted' ? 'item-not-found' : g.condition, g.userText));
      return;
    }
    const ctx: StanzaContext = { stanza: el, from, fromBare: bareOf(from), to, address };
    if (el.name === 'iq') return this.#handleIq(ctx);
    for (const c of this.#claims) {
      const h = c(ctx);
      if (h) return void (await h(ctx));
    }
    if (address.kind !== 'domain' && !this.#addressing.isAllowedDomain(from.domain)) {
      this.#metrics.errors.inc({ kind: 'sender_not_allowed' });
      if (this.#answerable(el)) await this.#reply(el, errorReply(el, 'forbidden', 'Your domain is not one this gateway bridges.'));
      return;
    }
    const handler = el.name === 'message' ? this.#message : el.name === 'presence' ? this.#presence : null;
    if (!handler) return;
    try {
      await handler(ctx);
    } catch (e) {
      if (e instanceof LimitError && e.silent) return; // told once already (limits.ts)
      const g = toGatewayError(e);
      if (g.code === 'internal') this.#log.error({ err: e, stanza: stanzaSummary(el) }, `${el.name} handler failed`);
      this.#metrics.errors.inc({ kind: `${el.name}_handler` });
      if (this.#answerable(el)) await this.#reply(el, errorReply(el, g.condition, g.userText));
    }
  }

  async #handleIq(ctx: StanzaContext): Promise<void> {
    const el = ctx.stanza;
    const type = String(el.attrs.type ?? '');
    const children = el.getChildElements();
    if ((type !== 'get' && type !== 'set') || children.length !== 1) {
      await this.#reply(el, errorReply(el, 'bad-request'));
      return;
    }
    const payload = children[0]!;
    const xmlns = String(payload.attrs.xmlns ?? '');
    // Hosted JIDs may query each other (bots in one room read each other's device lists).
    const ownDomain = ctx.from.domain === this.#addressing.domain;
    if (ctx.address.kind !== 'domain' && !PUBLIC_IQ.has(xmlns) && !ownDomain && !this.#addressing.isAllowedDomain(ctx.from.domain)) {
      this.#metrics.errors.inc({ kind: 'sender_not_allowed' });
      await this.#reply(el, errorReply(el, 'forbidden', 'Your domain is not one this gateway bridges.'));
      return;
    }
    const handler = this.#iq.get(`${type} ${xmlns} ${payload.name}`);
    if (!handler) {
      await this.#reply(el, errorReply(el, 'service-unavailable'));
      return;
    }
    let reply: Element;
    try {
      const out = await handler({ ...ctx, payload });
      reply = iqResult(el, ...(out ? (Array.isArray(out) ? out : [out]) : []));
    } catch (e) {
      if (e instanceof LimitError && e.silent) return; // told once already (limits.ts)
      const g = e instanceof GatewayError ? e : toGatewayError(e);
      if (g.code === 'internal') this.#log.error({ err: e, stanza: stanzaSummary(el) }, 'iq handler failed');
      this.#metrics.errors.inc({ kind: 'iq_handler' });
      reply = g instanceof IqError ? errorReply(el, g.xmppCondition, g.userText, g.app) : errorReply(el, g.condition, g.code === 'internal' ? undefined : g.userText);
    }
    await this.#reply(el, reply);
  }

  /** An error stanza for a claiming service (a join refused by a room), else dropped. */
  async #claimed(el: Element): Promise<void> {
    let ctx: StanzaContext;
    try {
      const from = parseJid(String(el.attrs.from ?? ''));
      const to = parseJid(String(el.attrs.to ?? ''));
      ctx = { stanza: el, from, fromBare: bareOf(from), to, address: this.#addressing.classify(to) };
    } catch {
      return;
    }
    for (const c of this.#claims) {
      const h = c(ctx);
      if (h) return void (await h(ctx));
    }
  }

  #answerable(el: Element): boolean {
    if (el.name === 'presence') return el.attrs.type === 'subscribe' || el.attrs.type === 'probe';
    return true;
  }

  async #reply(_to: Element, reply: Element): Promise<void> {
    try {
      await this.#send(reply);
    } catch (e) {
      this.#log.debug({ err: e }, 'could not send reply');
    }
  }
}

/** A refusal with an exact XMPP condition (and optional application condition), e.g. pubsub errors. */
export class IqError extends GatewayError {
  readonly xmppCondition: string;
  readonly app: Element | undefined;
  constructor(condition: string, text?: string, app?: Element) {
    super('bad_request', text);
    this.xmppCondition = condition;
    this.app = app;
  }
}
