// Sending a body from a hosted JID to a remote contact, end-to-end encrypted. The protocol is chosen
// per DESIGN.md, in order: the one the request names; the contact's preferred protocol set by an
// admin; the one the contact last wrote to us in (reply in kind); then bridge.outbound_preference
// among what the contact is found to support. Nothing goes out in plaintext unless an admin allowed
// it, and then only when asked for or when no protocol fits.
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import type { ProtocolName } from '../config.js';
import { GatewayError, KeysNotVisibleError } from '../errors.js';
import type { ContactStore } from '../keystore/contact-store.js';
import type { Metrics } from '../http/metrics.js';
import type { EngineRegistry } from './registry.js';
import { hasHandshake, type ProtocolEngine } from './engine.js';

export const NS_RECEIPTS = 'urn:xmpp:receipts';

export type Encryption = ProtocolName | 'none';

export interface SendRequest {
  /** Hosted bare JID the message is from. */
  from: string;
  /** Remote bare JID. */
  to: string;
  body: string;
  /** Stanza id; receipts (XEP-0184) refer to it. */
  id: string;
  /** An explicit protocol, or 'none' for plaintext (only where allowed). */
  encryption?: Encryption;
  requestReceipt?: boolean;
  /** Plaintext allowed for this sender (admin setting). */
  allowPlaintext?: boolean;
}

export interface SendResult {
  encryption: Encryption;
}

/** A message encrypted and its stanzas built, not yet written (OutboundSender.prepare). */
export interface Prepared {
  encryption: Encryption;
  stanzas: Element[];
  from: string;
  to: string;
  id: string;
}

export class OutboundSender {
  readonly #engines: EngineRegistry;
  readonly #contacts: ContactStore;
  readonly #preference: readonly ProtocolName[];
  readonly #send: (el: Element) => Promise<void>;
  readonly #resource: string;
  readonly #metrics: Metrics;
  readonly #log: Logger;

  constructor(deps: {
    engines: EngineRegistry;
    contacts: ContactStore;
    preference: readonly ProtocolName[];
    send: (el: Element) => Promise<void>;
    resource: string;
    metrics: Metrics;
    log: Logger;
  }) {
    this.#engines = deps.engines;
    this.#contacts = deps.contacts;
    this.#preference = deps.preference;
    this.#send = deps.send;
    this.#resource = deps.resource;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
  }

  /** Picks the protocol for `to`; throws GatewayError (no_encryption_available, ...) if none fits. */
  async choose(from: string, to: string, explicit?: Encryption, allowPlaintext = false): Promise<{ engine: ProtocolEngine | null; encryption: Encryption }> {
    if (explicit === 'none') {
      if (!allowPlaintext) throw new GatewayError('plaintext_refused', 'Plaintext sending is not enabled for this sender.');
      return { engine: null, encryption: 'none' };
    }
    if (explicit) {
      const engine = this.#engines.get(explicit);
      if (!engine) throw new GatewayError('no_encryption_available', `This gateway does not run ${explicit}.`);
      return { engine, encryption: explicit };
    }
    const contact = this.#contacts.get(to);
    for (const p of [contact?.preferredProtocol, this.#contacts.lastProtocol(from, to)]) {
      const engine = p ? this.#engines.get(p) : undefined;
      if (engine && (await this.#reachable(engine, from, to)) !== 'no') return this.#newest(engine, from, to);
    }
    let lastError: GatewayError | null = null;
    let unreadable: KeysNotVisibleError | null = null;
    for (const p of this.#preference) {
      const engine = this.#engines.get(p);
      if (!engine) continue;
      try {
        if ((await engine.reachability(from, to)) !== 'no') return { engine, encryption: engine.id };
      } catch (e) {
        // The first error that says more than "nothing fits" is the one the sender learns
        // (keys_not_visible from OMEMO 2 is not hidden by PGP's "no key registered").
        if (!(e instanceof GatewayError)) throw e;
        if (e instanceof KeysNotVisibleError && !e.certain) unreadable ??= e;
        else if (!lastError || lastError.code === 'no_encryption_available') lastError = e;
      }
    }
    if (allowPlaintext) return { engine: null, encryption: 'none' };
    if (lastError && lastError.code !== 'no_encryption_available') throw lastError;
    const none = `${to} has no encryption this gateway can use (looked for ${this.#preference.join(', ')}).`;
    // Their server would not say whether there are keys: their approval tells (the outbox asks).
    if (unreadable) throw new KeysNotVisibleError(false, `${none} ${unreadable.userText}`);
    throw new GatewayError('no_encryption_available', none);
  }

  /** A newer version of the chosen protocol that also reaches the contact takes over (OMEMO 2 over legacy OMEMO). */
  async #newest(engine: ProtocolEngine, from: string, to: string): Promise<{ engine: ProtocolEngine; encryption: Encryption }> {
    for (const e of this.#engines.all()) {
      if (e.supersedes === engine.id && (await this.#reachable(e, from, to)) !== 'no') return { engine: e, encryption: e.id };
    }
    return { engine, encryption: engine.id };
  }

  async #reachable(engine: ProtocolEngine, from: string, to: string): Promise<'ready' | 'needs-session' | 'no'> {
    try {
      return await engine.reachability(from, to);
    } catch {
      return 'no';
    }
  }

  /** Encrypts and sends; throws GatewayError with an actionable code when it cannot. */
  async send(req: SendRequest): Promise<SendResult> {
    return this.write(await this.prepare(req));
  }

  /**
   * Writes what prepare() made, in order. The first stanza is handed to the connection before this
   * returns its promise, so messages prepared one after another and written back to back leave in
   * that order (in one socket write when they are written in one turn).
   */
  async write(p: Prepared): Promise<SendResult> {
    for (const el of p.stanzas) await this.#send(el);
    this.#metrics.messages.inc({ protocol: p.encryption, direction: 'out', result: 'sent' });
    this.#log.debug({ from: p.from, to: p.to, id: p.id, encryption: p.encryption }, 'message sent');
    return { encryption: p.encryption };
  }

  /** Chooses the protocol, encrypts and builds the stanzas (nothing is written; an OTR handshake is started if needed). */
  async prepare(req: SendRequest): Promise<Prepared> {
    const { engine, encryption } = await this.choose(req.from, req.to, req.encryption, req.allowPlaintext);
    let children: Element[];
    let to = req.to;
    let more: Element[][] = [];
    if (engine) {
      try {
        const enc = await engine.encrypt(req.from, req.to, req.body);
        children = enc.children;
        more = (enc.more ?? []).map((m) => m.children);
        if (enc.to) to = enc.to;
      } catch (e) {
        if (e instanceof GatewayError && e.code === 'no_otr_session' && hasHandshake(engine)) {
          // The message waits in the outbox (retried) while the handshake runs.
          for (const el of await engine.startSession(req.from, req.to)) await this.#send(el);
          throw e;
        }
        this.#metrics.messages.inc({ protocol: engine.id, direction: 'out', result: e instanceof GatewayError ? e.code : 'internal' });
        throw e;
      }
    } else {
      children = [xml('body', {}, req.body)];
    }
    const stanzas = [
      xml('message', { from: `${req.from}/${this.#resource}`, to, type: 'chat', id: req.id }, ...children, req.requestReceipt ? xml('request', { xmlns: NS_RECEIPTS }) : null),
    ];
    // The same body for devices on an older version, one stanza each (never to a device twice); or
    // the further fragments of an OTR message, in order.
    for (const [i, c] of more.entries()) {
      stanzas.push(xml('message', { from: `${req.from}/${this.#resource}`, to, type: 'chat', id: `${req.id}-${i + 1}` }, ...c, req.requestReceipt ? xml('request', { xmlns: NS_RECEIPTS }) : null));
    }
    return { encryption, stanzas, from: req.from, to, id: req.id };
  }
}
