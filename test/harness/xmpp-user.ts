// A real XMPP user for tests: @xmpp/client logged in to the test Prosody, with helpers to wait for
// stanzas matching a predicate.
import { client, xml, type Client } from '@xmpp/client';
import type Element from 'ltx/lib/Element.js';
import type { XmppServer } from './prosody.js';

export { xml };

export class XmppUser {
  readonly client: Client;
  readonly jid: string;
  readonly received: Element[] = [];
  #waiters: Array<{ pred: (el: Element) => boolean; resolve: (el: Element) => void }> = [];

  private constructor(c: Client, jid: string) {
    this.client = c;
    this.jid = jid;
    c.on('stanza', (el: Element) => {
      this.received.push(el);
      for (const w of [...this.#waiters]) {
        if (w.pred(el)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve(el);
        }
      }
    });
    c.on('error', () => {});
  }

  static async connect(server: XmppServer, localpart: string, opts: { resource?: string; domain?: string; presence?: boolean } = {}): Promise<XmppUser> {
    const domain = opts.domain ?? server.domain;
    const { password } = server.addUser(localpart, 'password', domain);
    const resource = opts.resource ?? 'test';
    const c = client({ service: server.c2sService, domain, username: localpart, password, resource });
    const u = new XmppUser(c, `${localpart}@${domain}/${resource}`);
    await c.start();
    c.reconnect.stop();
    // Fetching the roster makes this an "interested resource" (RFC 6121 §2.1.6): only those get
    // subscription approvals delivered.
    await u.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    if (opts.presence !== false) await c.send(xml('presence'));
    return u;
  }

  get bare(): string {
    return this.jid.split('/')[0]!;
  }

  /** Resolves with the first stanza (already received or future) matching `pred`. */
  waitFor(pred: (el: Element) => boolean, timeoutMs = 10000, what = 'stanza'): Promise<Element> {
    const seen = this.received.find(pred);
    if (seen) {
      this.received.splice(this.received.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (el: Element) => {
          clearTimeout(timer);
          this.received.splice(this.received.indexOf(el), 1);
          resolve(el);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(new Error(`${this.jid}: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  send(el: Element): Promise<void> {
    return this.client.send(el);
  }

  iq(el: Element, timeoutMs = 10000): Promise<Element> {
    return this.client.iqCaller.request(el, timeoutMs);
  }

  async stop(): Promise<void> {
    try {
      await this.client.stop();
    } catch {
      /* already gone */
    }
  }
}
