// The XEP-0114 stream to the XMPP server: connect, handshake, reconnect with exponential backoff
// and jitter, send, and iq requests with timeouts. https://xmpp.org/extensions/xep-0114.html
// We drive @xmpp/component-core's Component ourselves (a fresh one per attempt) instead of the
// @xmpp/component bundle, whose reconnect has a fixed delay and whose middleware would answer iqs
// behind the router's back.
import { EventEmitter } from 'node:events';
import { Component } from '@xmpp/component-core';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { GatewayError } from '../errors.js';
import type { Metrics } from '../http/metrics.js';
import { isXmlSafe } from './jid.js';
import { NS_STANZAS } from './stanza.js';
import { StreamComponent } from './stream-parser.js';
import { OutputPacer, type PacerLimits } from './output-pacer.js';

export interface ConnectionOptions {
  service: string;
  domain: string;
  secret: string;
  log: Logger;
  metrics: Metrics;
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** How long one connect + handshake may take. */
  attemptTimeoutMs?: number;
  /**
   * Every so often, a XEP-0199 ping from the component's domain to itself, which the server must
   * route back: a server that stopped answering (and sent nothing since the ping) is noticed and
   * the connection dropped (and retried) instead of looking connected forever. 0 turns it off.
   */
  keepaliveMs?: number;
  /**
   * Connects and sends only while this says yes (keystore.url: while this instance holds the lease),
   * so a former active instance that wakes up neither reconnects nor writes a stanza.
   */
  allowed?: () => boolean;
  /** Output pacing (output-pacer.ts): low-priority output held while the server is behind. Unset: none. */
  pacing?: PacerLimits;
}

/** Stream errors that mean the configuration is wrong, not that the server is away. */
const FATAL_CONDITIONS: Record<string, string> = {
  'not-authorized': 'the XMPP server refused the component secret (component.secret)',
  'host-unknown': 'the XMPP server has no component entry for this domain (component.domain)',
};

interface Pending {
  resolve: (el: Element) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  to: string;
}

export interface ConnectionEvents {
  online: [];
  offline: [reason: string];
  stanza: [el: Element];
  /** The server confirmed reading more of the output (output pacing): `outputBehind` may have changed. */
  progress: [];
}

export class ComponentConnection extends EventEmitter<ConnectionEvents> {
  readonly domain: string;
  #opts: Required<Omit<ConnectionOptions, 'log' | 'metrics' | 'allowed' | 'pacing'>> & Pick<ConnectionOptions, 'log' | 'metrics' | 'allowed' | 'pacing'>;
  #entity: Component | null = null;
  #pacer: OutputPacer | null = null;
  #online = false;
  /** The socket is corked until the end of this event-loop turn (send). */
  #corked = false;
  #stopping = false;
  #attempt = 0;
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  #pending = new Map<string, Pending>();
  #nextId = 0;
  /** Why the gateway is not connected, for /readyz. */
  lastError: string | null = 'not connected yet';

  constructor(opts: ConnectionOptions) {
    super();
    this.domain = opts.domain;
    this.#opts = { initialDelayMs: 500, maxDelayMs: 60000, attemptTimeoutMs: 15000, keepaliveMs: 30000, ...opts };
  }

  get online(): boolean {
    return this.#online;
  }

  /**
   * Starts connecting. Resolves once the first attempt has ended: online, or failed for a reason
   * that retrying may cure (the loop keeps going in the background). Rejects with
   * GatewayError('component_auth_failed') when the server refuses the secret or the domain, which
   * no retry will fix.
   */
  start(): Promise<void> {
    if (this.#loop) throw new Error('already started');
    return new Promise((resolve, reject) => {
      let first = true;
      this.#loop = this.#run((outcome) => {
        if (!first) return;
        first = false;
        if (outcome instanceof GatewayError) reject(outcome);
        else resolve();
      });
    });
  }

  async #run(firstOutcome: (o: true | Error) => void): Promise<void> {
    let firstAttempt = true;
    while (!this.#stopping) {
      if (this.#opts.allowed?.() === false) break;
      let entity: Component | null = null;
      try {
        entity = await this.#connectOnce();
        this.#attempt = 0;
        firstOutcome(true);
        const keepalive = this.#keepalive(entity);
        await new Promise<void>((resolve) => entity!.once('disconnect', () => resolve()));
        clearInterval(keepalive);
        this.#wentOffline(this.#silent ? 'the XMPP server stopped answering' : 'connection to the XMPP server lost');
        this.#silent = false;
      } catch (e) {
        const fatal = e instanceof GatewayError && e.code === 'component_auth_failed';
        this.lastError = e instanceof GatewayError ? e.userText : `cannot connect to ${this.#opts.service}: ${(e as Error).message}`;
        this.#opts.log.warn({ err: e, attempt: this.#attempt }, 'component connection attempt failed');
        this.#opts.metrics.errors.inc({ kind: fatal ? 'component_auth' : 'component_connect' });
        this.#wentOffline(this.lastError);
        // The first attempt decides startup: a refused secret there ends it. Later ones keep
        // retrying with backoff (the server may be reconfigured); /readyz tells why.
        if (fatal && firstAttempt) this.#stopping = true;
        firstOutcome(e as Error);
        try {
          await entity?.stop();
        } catch {
          /* already closed */
        }
      }
      firstAttempt = false;
      if (this.#stopping) break;
      const delay = this.#backoff();
      this.#opts.metrics.componentReconnects.inc();
      this.#opts.log.info({ delayMs: delay }, 'reconnecting to the XMPP server');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  #silent = false;
  /** When the server last sent anything on the current stream (performance.now()). */
  #lastInput = 0;

  #keepalive(entity: Component): NodeJS.Timeout | undefined {
    const every = this.#opts.keepaliveMs;
    if (!every) return undefined;
    let busy = false;
    const t = setInterval(() => {
      if (busy || this.#entity !== entity) return;
      busy = true;
      const ping = xml('iq', { type: 'get', from: this.domain, to: this.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
      const sentAt = performance.now();
      this.request(ping, Math.min(10000, every))
        .catch((e) => {
          if (!(e instanceof GatewayError && e.code === 'remote_timeout') || this.#entity !== entity) return;
          // A server that kept sending since the ping is busy, not gone: its answer waits behind
          // what it has still to read from us (a flood). Reconnecting would throw that away and
          // then announce every presence again, making it busier still (npm run bench -- storm).
          if (this.#lastInput > sentAt) {
            this.#opts.log.warn({ timeoutMs: Math.min(10000, every) }, 'the XMPP server is slow to answer a ping but still sending; keeping the connection');
            this.#opts.metrics.errors.inc({ kind: 'component_keepalive_slow' });
            return;
          }
          this.#silent = true;
          this.#opts.log.warn({ timeoutMs: Math.min(10000, every) }, 'the XMPP server did not answer a ping; reconnecting');
          this.#opts.metrics.errors.inc({ kind: 'component_keepalive' });
          entity.socket?.destroy();
        })
        .finally(() => (busy = false))
        .catch((e: unknown) => this.#opts.log.error({ err: e }, 'keepalive failed'));
    }, every);
    t.unref();
    return t;
  }

  #backoff(): number {
    const base = Math.min(this.#opts.maxDelayMs, this.#opts.initialDelayMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  async #connectOnce(): Promise<Component> {
    const { service, domain, secret } = this.#opts;
    // Linear in the input whatever the chunking (ltx alone is quadratic in long text runs), and
    // UTF-8 decoded across chunk boundaries (stream-parser.ts).
    const entity = new StreamComponent({ service, domain });
    entity.timeout = 10000;
    this.#entity = entity;
    let streamError: string | null = null;
    entity.on('open', (el: Element) => {
      entity.authenticate(String(el.attrs.id ?? ''), secret).catch((err: Error) => entity.emit('error', err));
    });
    entity.on('error', (err: Error & { condition?: string }) => {
      if (err.condition) streamError = err.condition;
    });
    entity.on('input', () => {
      if (this.#entity === entity) this.#lastInput = performance.now();
    });
    entity.on('stanza', (el: Element) => {
      this.#opts.metrics.stanzasIn.inc({ kind: el.name });
      if (this.#pacer?.onInbound(el)) return;
      if (el.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error') && this.#settle(el)) return;
      this.emit('stanza', el);
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        entity.start(),
        new Promise((_r, reject) => {
          timer = setTimeout(() => reject(new Error(`no handshake within ${this.#opts.attemptTimeoutMs} ms`)), this.#opts.attemptTimeoutMs);
        }),
      ]);
    } catch (e) {
      const condition = streamError ?? (e as { condition?: string }).condition;
      if (condition && FATAL_CONDITIONS[condition]) {
        throw new GatewayError('component_auth_failed', FATAL_CONDITIONS[condition], { cause: e });
      }
      if (condition === 'conflict') throw new Error('another component is already connected for this domain', { cause: e });
      throw e;
    } finally {
      clearTimeout(timer);
    }
    // Every write is a whole stanza, often the answer to one just read: Nagle's algorithm only holds
    // it back until the server acknowledges the previous one, which a delayed ACK makes up to 40 ms.
    entity.socket?.setNoDelay(true);
    const pacing = this.#opts.pacing;
    this.#pacer?.close();
    this.#pacer = pacing
      ? new OutputPacer({
          domain: this.domain,
          limits: pacing,
          metrics: this.#opts.metrics,
          write: (text, name) => {
            if (this.#entity !== entity || this.#opts.allowed?.() === false) return;
            this.#cork(entity);
            entity.write(text).catch(() => undefined);
            this.#opts.metrics.stanzasOut.inc({ kind: name });
          },
          onProgress: () => this.emit('progress'),
        })
      : null;
    this.#online = true;
    this.lastError = null;
    this.#opts.metrics.componentConnected.set(1);
    this.#opts.log.info({ service, domain }, 'component connected');
    this.emit('online');
    return entity;
  }

  #wentOffline(reason: string): void {
    const was = this.#online;
    this.#online = false;
    this.#entity = null;
    this.#pacer?.close();
    this.#pacer = null;
    this.#opts.metrics.componentConnected.set(0);
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new GatewayError('not_ready'));
      this.#pending.delete(id);
    }
    if (was) {
      this.lastError = reason;
      this.#opts.log.warn({ reason }, 'component offline');
      this.emit('offline', reason);
    }
  }

  /** Sends a stanza; throws GatewayError('not_ready') while offline. */
  async send(el: Element): Promise<void> {
    const entity = this.#entity;
    if (!this.#online || !entity) throw new GatewayError('not_ready');
    if (this.#opts.allowed?.() === false) throw new GatewayError('standby');
    // Component.send's default (XEP-0114: a stanza carries a 'from').
    if (!el.attrs.from && (el.name === 'message' || el.name === 'presence' || el.name === 'iq')) el.attrs.from = this.domain;
    // Serialized once: checked, then written as is. Checked before writing: the server would answer
    // XML it cannot parse by closing the stream, and a queued message would then cut the connection
    // again on every attempt (issue 15).
    const text = el.toString();
    if (!isXmlSafe(text)) {
      this.#opts.metrics.errors.inc({ kind: 'stanza_unserializable' });
      throw new GatewayError('stanza_unserializable');
    }
    // Low-priority output waits (or is shed) while the server is behind (output-pacer.ts).
    const pacer = this.#pacer;
    if (pacer && !pacer.offer(text, el)) return;
    this.#cork(entity);
    try {
      const written = entity.write(text);
      pacer?.wrote(text.length);
      await written;
    } catch (e) {
      throw new GatewayError('not_ready', undefined, { cause: e });
    }
    this.#opts.metrics.stanzasOut.inc({ kind: el.name });
  }

  /** The stanzas of one event-loop turn leave in one write (a syscall per stanza was ~7% of the gateway's CPU at 300 messages/s, issue 16). */
  #cork(entity: Component): void {
    const socket = entity.socket;
    if (socket && !this.#corked) {
      this.#corked = true;
      socket.cork();
      setImmediate(() => {
        this.#corked = false;
        socket.uncork();
      });
    }
  }

  /**
   * The server is more than a few output windows behind reading what was written (output-pacer.ts
   * `behind`): inbound handling should wait for 'progress'. False while offline or unpaced.
   */
  get outputBehind(): boolean {
    return this.#pacer?.behind ?? false;
  }

  /** Output held back by pacing now: stanzas, bytes, and bytes written the server has not confirmed reading. */
  get paced(): { held: number; heldBytes: number; unconfirmed: number } {
    const p = this.#pacer;
    return { held: p?.heldCount ?? 0, heldBytes: p?.heldBytes ?? 0, unconfirmed: p?.unconfirmed ?? 0 };
  }

  /**
   * Sends an iq get/set and resolves with the result stanza. Rejects with GatewayError:
   * remote_timeout, remote_error (carrying the condition in `cause`), not_ready.
   */
  request(iq: Element, timeoutMs = 10000): Promise<Element> {
    if (!iq.attrs.id) iq.attrs.id = `gw-${Date.now().toString(36)}-${(this.#nextId++).toString(36)}`;
    const id = String(iq.attrs.id);
    return new Promise<Element>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new GatewayError('remote_timeout'));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer, to: String(iq.attrs.to ?? '') });
      this.send(iq).catch((e) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(e);
      });
    });
  }

  #settle(el: Element): boolean {
    const id = String(el.attrs.id ?? '');
    const p = this.#pending.get(id);
    if (!p) return false;
    // A reply must come from whom we asked (the bare JID's server answers for an account).
    const from = String(el.attrs.from ?? '');
    if (p.to && from && from !== p.to && from.toLowerCase() !== p.to.toLowerCase()) return false;
    clearTimeout(p.timer);
    this.#pending.delete(id);
    if (el.attrs.type === 'result') p.resolve(el);
    else p.reject(new RemoteError(el));
    return true;
  }

  /** Closes the stream (if open) and stops reconnecting. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    const entity = this.#entity;
    if (entity) {
      // Close the stream politely, but do not wait long for a server that may be gone too.
      entity.timeout = 2000;
      await Promise.race([entity.stop().catch(() => undefined), new Promise((r) => setTimeout(r, 3000).unref())]);
      // A server that stopped answering never closes its side: drop the socket ourselves.
      entity.socket?.destroy();
    }
    this.#wentOffline('stopped');
    await this.#loop;
  }
}

/** An iq error answer from a remote entity; `condition` is the defined condition element's name. */
export class RemoteError extends GatewayError {
  readonly remoteCondition: string;
  readonly stanza: Element;
  constructor(el: Element) {
    // The defined condition is the child in the stanzas namespace: ejabberd writes an application
    // condition (e.g. pubsub#errors presence-subscription-required) before it.
    const children = el.getChild('error')?.getChildElements() ?? [];
    const cond = (children.find((c) => c.attrs.xmlns === NS_STANZAS && c.name !== 'text') ?? children.find((c) => c.name !== 'text'))?.name ?? 'undefined-condition';
    super('remote_error', `the remote entity answered ${cond}`);
    this.remoteCondition = cond;
    this.stanza = el;
  }
}

export { xml };
