// A legacy XEP-0027 user for tests: a real XMPP login (@xmpp/client) whose OpenPGP is GnuPG, as in
// Psi or old Gajim: it registers its key with the gateway by chat command, fetches a proxy's key
// with `key <jid>`, sends jabber:x:encrypted messages and decrypts what it receives.
import type Element from 'ltx/lib/Element.js';
import { GpgUser } from './gpg.js';
import type { Prosody } from './prosody.js';
import { XmppUser, xml } from './xmpp-user.js';

const NS_ENC = 'jabber:x:encrypted';
let counter = 0;

export class LegacyPgpUser {
  readonly xmpp: XmppUser;
  readonly gpg: GpgUser;

  private constructor(xmpp: XmppUser, gpg: GpgUser) {
    this.xmpp = xmpp;
    this.gpg = gpg;
  }

  static async create(server: Prosody, localpart: string, opts: { uid?: string } = {}): Promise<LegacyPgpUser> {
    const gpg = await GpgUser.create(opts.uid ?? `xmpp:${localpart}@${server.domain}`);
    const xmpp = await XmppUser.connect(server, localpart, { resource: 'psi' });
    return new LegacyPgpUser(xmpp, gpg);
  }

  get bare(): string {
    return this.xmpp.bare;
  }

  /** Sends a chat command to the gateway domain and returns the text of its answer. */
  async command(domain: string, text: string): Promise<string> {
    const id = `cmd${++counter}`;
    await this.xmpp.send(xml('message', { to: domain, type: 'chat', id }, xml('body', {}, text)));
    const reply = await this.xmpp.waitFor((el) => el.is('message') && el.attrs.from === domain && el.getChildText('body') !== null, 15000, `answer to "${text.slice(0, 20)}"`);
    return reply.getChildText('body')!;
  }

  async register(domain: string): Promise<string> {
    return this.command(domain, `register ${await this.gpg.exportPublic()}`);
  }

  /** Fetches a hosted JID's key with the `key` command and imports it; returns its fingerprint. */
  async fetchKey(domain: string, jid: string): Promise<string> {
    const text = await this.command(domain, `key ${jid}`);
    const armored = text.slice(text.indexOf('-----BEGIN PGP PUBLIC KEY BLOCK-----'));
    const [fpr] = await this.gpg.importKey(armored);
    if (!fpr) throw new Error(`no key in answer: ${text.slice(0, 200)}`);
    return fpr;
  }

  /** The stanza a XEP-0027 client sends: placeholder body, stripped armor, optional receipt request. */
  async encryptedMessage(to: string, body: string, recipientFpr: string, opts: { sign?: boolean; receipt?: boolean; id?: string } = {}): Promise<Element> {
    const stripped = await this.gpg.encrypt(body, recipientFpr, { sign: opts.sign ?? true });
    return xml(
      'message',
      { to, type: 'chat', id: opts.id ?? `pgp${++counter}` },
      xml('body', {}, '[This message is encrypted]'),
      xml('x', { xmlns: NS_ENC }, stripped),
      opts.receipt ? xml('request', { xmlns: 'urn:xmpp:receipts' }) : null,
    );
  }

  async sendEncrypted(to: string, body: string, recipientFpr: string, opts: { sign?: boolean; receipt?: boolean; id?: string } = {}): Promise<Element> {
    const el = await this.encryptedMessage(to, body, recipientFpr, opts);
    await this.xmpp.send(el);
    return el;
  }

  /** Waits for an encrypted message from `from` (bare JID prefix) and decrypts it with gpg. */
  async receiveEncrypted(from: string, timeoutMs = 15000): Promise<{ stanza: Element; text: string; signature: string; signer?: string }> {
    const stanza = await this.xmpp.waitFor((el) => el.is('message') && String(el.attrs.from).split('/')[0] === from && !!el.getChild('x', NS_ENC), timeoutMs, `encrypted message from ${from}`);
    const d = await this.gpg.decrypt(stanza.getChildText('x', NS_ENC)!);
    return { stanza, text: d.text, signature: d.signature, ...(d.signer ? { signer: d.signer } : {}) };
  }

  async stop(): Promise<void> {
    await this.xmpp.stop();
    this.gpg.destroy();
  }
}
