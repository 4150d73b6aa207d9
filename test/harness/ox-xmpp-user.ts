// An OX (XEP-0373/0374) user in this process: a real XMPP login (@xmpp/client) whose OpenPGP is
// GnuPG (gpg binary, its own GNUPGHOME), for the bridging benchmark, where the driver must take the
// OX side's timestamps itself. It publishes its key (key node, then metadata node, access open),
// reads contacts' keys with plain items requests, writes <signcrypt> with gpg and reads it with gpg.
// (The e2e tests use test/interop/ox_user.py, the same protocol on slixmpp.)
import type Element from 'ltx/lib/Element.js';
import { parse } from 'ltx';
import { GpgUser } from './gpg.js';
import type { Prosody } from './prosody.js';
import { XmppUser, xml } from './xmpp-user.js';

export const NS_OX = 'urn:xmpp:openpgp:0';
const NODE_META = 'urn:xmpp:openpgp:0:public-keys';
const PUBSUB = 'http://jabber.org/protocol/pubsub';
const stamp = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;');
let counter = 0;

export class OxXmppUser {
  readonly xmpp: XmppUser;
  readonly gpg: GpgUser;
  readonly contactKeys = new Map<string, string[]>();

  private constructor(xmpp: XmppUser, gpg: GpgUser) {
    this.xmpp = xmpp;
    this.gpg = gpg;
  }

  static async create(server: Prosody, localpart: string): Promise<OxXmppUser> {
    const gpg = await GpgUser.create(`xmpp:${localpart}@${server.domain}`);
    const xmpp = await XmppUser.connect(server, localpart, { resource: 'ox' });
    const u = new OxXmppUser(xmpp, gpg);
    await u.publishKey();
    return u;
  }

  get bare(): string {
    return this.xmpp.bare;
  }

  async #publish(node: string, id: string, payload: Element): Promise<void> {
    const options = xml(
      'publish-options',
      {},
      xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, ...[
        ['FORM_TYPE', `${PUBSUB}#publish-options`],
        ['pubsub#access_model', 'open'],
      ].map(([v, val]) => xml('field', { var: v! }, xml('value', {}, val!)))),
    );
    await this.xmpp.iq(xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB }, xml('publish', { node }, xml('item', { id }, payload)), options)));
  }

  async publishKey(): Promise<void> {
    const date = stamp(Date.now());
    const bin = (await this.gpg.run(['--export', '--export-options', 'export-minimal', this.gpg.fingerprint])).stdout;
    await this.#publish(`${NODE_META}:${this.gpg.fingerprint}`, date, xml('pubkey', { xmlns: NS_OX }, xml('data', {}, bin.toString('base64'))));
    await this.#publish(NODE_META, 'current', xml('public-keys-list', { xmlns: NS_OX }, xml('pubkey-metadata', { 'v4-fingerprint': this.gpg.fingerprint, date })));
  }

  async #items(jid: string, node: string): Promise<Element[]> {
    const res = await this.xmpp.iq(xml('iq', { type: 'get', to: jid }, xml('pubsub', { xmlns: PUBSUB }, xml('items', { node }))));
    return res.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
  }

  /** Reads and imports `jid`'s announced keys (plain items requests); returns their fingerprints. */
  async fetchKeys(jid: string): Promise<string[]> {
    const meta = (await this.#items(jid, NODE_META))[0]?.getChild('public-keys-list', NS_OX);
    const fprs = (meta?.getChildren('pubkey-metadata') ?? []).map((m) => String(m.attrs['v4-fingerprint']).toUpperCase());
    for (const fpr of fprs) {
      const data = (await this.#items(jid, `${NODE_META}:${fpr}`))[0]?.getChild('pubkey', NS_OX)?.getChildText('data');
      const r = await this.gpg.run(['--import'], Buffer.from(data ?? '', 'base64'));
      if (!r.status.some((l) => l.startsWith('IMPORT_OK ') && l.toUpperCase().includes(fpr))) throw new Error(`${jid}: key ${fpr} not imported`);
    }
    this.contactKeys.set(jid, fprs);
    return fprs;
  }

  /** An OX <message> to `to` (signcrypt, signed and encrypted by gpg to `to`'s keys and our own). */
  async encryptedMessage(to: string, body: string, opts: { id?: string } = {}): Promise<Element> {
    const keys = this.contactKeys.get(to) ?? (await this.fetchKeys(to));
    const content =
      `<signcrypt xmlns='${NS_OX}'><to jid='${esc(to)}'/><time stamp='${stamp(Date.now())}'/><rpad>${'x'.repeat(1 + (counter % 32))}</rpad>` +
      `<payload><body xmlns='jabber:client'>${esc(body)}</body></payload></signcrypt>`;
    const args = ['--compress-algo', 'none', ...[...keys, this.gpg.fingerprint].flatMap((k) => ['--recipient', k]), '--encrypt', '--sign', '--local-user', this.gpg.fingerprint];
    const r = await this.gpg.run(args, content);
    if (r.code !== 0) throw new Error(`gpg --encrypt failed: ${r.stderr.slice(0, 300)}`);
    return xml(
      'message',
      { to, type: 'chat', id: opts.id ?? `ox${++counter}` },
      xml('openpgp', { xmlns: NS_OX }, r.stdout.toString('base64')),
      xml('encryption', { xmlns: 'urn:xmpp:eme:0', namespace: NS_OX }),
      xml('store', { xmlns: 'urn:xmpp:hints' }),
      xml('body', {}, 'This message is encrypted with OX.'),
    );
  }

  /** Decrypts an OX <message> with gpg: the body, whether the signature is good, and the signer. */
  async decrypt(el: Element): Promise<{ body: string | null; good: boolean; signer: string | null; to: string[] }> {
    const r = await this.gpg.run(['--decrypt'], Buffer.from(el.getChildText('openpgp', NS_OX) ?? '', 'base64'));
    if (!r.status.some((l) => l.startsWith('DECRYPTION_OKAY'))) throw new Error('gpg could not decrypt');
    const valid = r.status.find((l) => l.startsWith('VALIDSIG '))?.split(' ');
    const sc = parse(r.stdout.toString('utf8')) as unknown as Element;
    return {
      body: sc.getChild('payload')?.getChildText('body') ?? null,
      good: r.status.some((l) => l.startsWith('GOODSIG ')) && !!valid,
      signer: valid ? valid[valid.length - 1]!.toUpperCase() : null,
      to: sc.getChildren('to').map((t) => String(t.attrs.jid)),
    };
  }

  async stop(): Promise<void> {
    await this.xmpp.stop();
    this.gpg.destroy();
  }
}
