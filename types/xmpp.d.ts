// Minimal declarations for the xmpp.js packages we use; ltx's Element carries its own types.
declare module '@xmpp/xml' {
  import Element from 'ltx/lib/Element.js';
  type Child = Element | string | null | undefined | false | Child[];
  function xml(name: string, attrs?: Record<string, string | number | undefined> | null, ...children: Child[]): Element;
  namespace xml {
    export { Element };
    export function escapeXML(s: string): string;
    export function escapeXMLText(s: string): string;
    export class Parser {
      constructor();
      write(data: string): void;
      end(data?: string): void;
      on(event: 'element' | 'start' | 'end' | 'error', listener: (arg: any) => void): this;
    }
    export class XMLError extends Error {}
  }
  export = xml;
}

declare module '@xmpp/component-core' {
  import { EventEmitter } from 'node:events';
  import Element from 'ltx/lib/Element.js';
  export class Component extends EventEmitter {
    constructor(options: { service: string; domain: string });
    status: string;
    timeout: number;
    options: { service: string; domain: string };
    jid: { toString(): string } | null;
    /** The TCP socket while connected (@xmpp/connection). */
    socket: import('node:net').Socket | null;
    /** The parser class each stream gets (@xmpp/connection: `new this.Parser()` when opening). */
    Parser: typeof import('@xmpp/xml').Parser;
    start(): Promise<unknown>;
    stop(): Promise<unknown>;
    connect(service: string): Promise<void>;
    open(options: { domain: string; lang?: string }): Promise<Element>;
    disconnect(timeout?: number): Promise<void>;
    authenticate(id: string, password: string): Promise<void>;
    send(el: Element): Promise<void>;
    write(s: string): Promise<void>;
    /** @xmpp/connection: one socket 'data' chunk (decoded there with toString() per chunk). */
    _onData(data: Buffer | string): void;
    /** @xmpp/connection: a new socket's listeners. */
    _attachSocket(socket: import('node:net').Socket): void;
    /** @xmpp/connection: a new stream parser's listeners. */
    _attachParser(parser: InstanceType<typeof import('@xmpp/xml').Parser>): void;
  }
}

declare module '@xmpp/client' {
  import { EventEmitter } from 'node:events';
  import Element from 'ltx/lib/Element.js';
  import xmlFn from '@xmpp/xml';
  export const xml: typeof xmlFn;
  export interface Client extends EventEmitter {
    jid: { toString(): string; bare(): { toString(): string } } | null;
    status: string;
    start(): Promise<unknown>;
    stop(): Promise<unknown>;
    send(el: Element): Promise<void>;
    iqCaller: { request(el: Element, timeout?: number): Promise<Element> };
    iqCallee: {
      get(ns: string, name: string, handler: (ctx: { stanza: Element; element: Element }) => Element | Promise<Element> | boolean): void;
      set(ns: string, name: string, handler: (ctx: { stanza: Element; element: Element }) => Element | Promise<Element> | boolean): void;
    };
    reconnect: { stop(): void };
  }
  export function client(options: {
    service: string; domain: string; username: string; password: string; resource?: string;
  }): Client;
}
