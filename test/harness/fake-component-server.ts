// An in-process XEP-0114 server for scenario tests: accepts the gateway's component connection on a
// loopback port, checks the handshake, and lets a test inject stanzas and read what the gateway
// sends. Like a real server it refuses XML 1.0 does not allow (a stream error, then the connection
// is closed), so a gateway that writes such XML is cut off here as it would be by Prosody.
// https://xmpp.org/extensions/xep-0114.html
import { createServer, type Server, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';

// Characters XML 1.0 allows (§2.2); anything else is not well-formed.
const XML_INVALID = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

export class FakeComponentServer extends EventEmitter {
  readonly domain: string;
  readonly secret: string;
  readonly received: Element[] = [];
  /** Connections closed because the gateway wrote XML 1.0 does not allow. */
  notWellFormed = 0;
  /** Completed handshakes. */
  connections = 0;
  #server: Server;
  #socket: Socket | null = null;
  #port = 0;

  /** Routes stanzas from the component's domain to itself back, as a real server does (off: a server that never answers pings). */
  readonly routeSelf: boolean;

  constructor(domain = 'gw.example.org', secret = 'fake-component-secret', opts: { routeSelf?: boolean } = {}) {
    super();
    this.routeSelf = opts.routeSelf ?? true;
    this.domain = domain;
    this.secret = secret;
    this.#server = createServer((s) => this.#accept(s));
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.#port = (this.#server.address() as { port: number }).port;
    return this;
  }

  get service(): string {
    return `xmpp://127.0.0.1:${this.#port}`;
  }

  get online(): boolean {
    return this.#socket !== null;
  }

  #accept(socket: Socket): void {
    const streamId = randomBytes(8).toString('hex');
    const parser = new xml.Parser();
    let authed = false;
    socket.setNoDelay(true);
    const fail = (condition: string) => {
      socket.end(`<stream:error><${condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
      socket.destroy();
    };
    parser.on('start', () => {
      socket.write(
        `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='${this.domain}' id='${streamId}'>`,
      );
    });
    parser.on('element', (el: Element) => {
      if (!authed) {
        const expected = createHash('sha1').update(streamId + this.secret).digest('hex');
        if (el.name !== 'handshake' || el.getText() !== expected) return fail('not-authorized');
        authed = true;
        this.#socket = socket;
        this.connections++;
        socket.write('<handshake/>');
        this.emit('online');
        return;
      }
      this.received.push(el);
      this.emit('stanza', el);
      // Like a real server, a stanza from the component's domain to itself is routed back to it
      // (the keepalive's pings, output-pacer.ts's markers).
      if (this.routeSelf && el.attrs.to === this.domain && el.attrs.from === this.domain) socket.write(el.toString());
    });
    parser.on('error', () => fail('not-well-formed'));
    socket.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      if (XML_INVALID.test(text)) {
        this.notWellFormed++;
        return fail('not-well-formed');
      }
      try {
        parser.write(text);
      } catch {
        fail('not-well-formed');
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.#socket === socket) {
        this.#socket = null;
        this.emit('offline');
      }
    });
  }

  /** Sends a stanza (or raw XML text) to the gateway, as the server routing it from a user would. */
  inject(stanza: Element | string): void {
    if (!this.#socket) throw new Error('the gateway is not connected');
    this.#socket.write(typeof stanza === 'string' ? stanza : stanza.toString());
  }

  /** Stanzas received since `mark` (an index into `received`). */
  since(mark: number): Element[] {
    return this.received.slice(mark);
  }

  async close(): Promise<void> {
    this.#socket?.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
