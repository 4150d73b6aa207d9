// Chat commands for people, sent as plain messages to the gateway's bare domain and answered in
// plain text from it. They carry only public data (fingerprints, public keys), so plaintext is fine.
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { GatewayError, toGatewayError } from '../errors.js';
import type { Addressing } from './addressing.js';
import type { SubscriptionStore } from '../keystore/subscription-store.js';
import type { StanzaContext } from './router.js';

export interface CommandFacts {
  /** Fingerprints of a hosted JID, one line each, e.g. "OMEMO device 123: 0a1b…". */
  fingerprints(local: string): Promise<string[]>;
}

/** XEP-0027 key commands, present when the PGP engine runs. */
export interface PgpCommands {
  /** The hosted JID's armored public key and fingerprint. */
  publicKey(local: string): Promise<{ armored: string; fingerprint: string }>;
  /** Registers the sender's key (user ID checks are the engine's); returns its fingerprint. */
  register(contact: string, armored: string): Promise<{ fingerprint: string }>;
  remove(contact: string): Promise<boolean>;
}

const HELP = `Commands (send them to this address as plain messages):
help — this text
fingerprints <jid> — the fingerprints of a bot or proxy, to verify out of band
fingerprints — the fingerprints of the bots and proxies you are subscribed to
key <jid> — the XEP-0027 (OpenPGP) public key of a bot or proxy, to encrypt to it
register <armored public key> — register your XEP-0027 public key (its user ID must be xmpp:<your JID>)
unregister — remove your registered XEP-0027 key
Bots: <name>@DOMAIN. Proxies: a remote user's JID with @ written as \\40, e.g. bob\\40example.org@DOMAIN.`;

export class ChatCommands {
  readonly #send: (el: Element) => Promise<void>;
  readonly #addressing: Addressing;
  readonly #subs: SubscriptionStore;
  readonly #facts: CommandFacts;
  readonly #pgp: PgpCommands | null;
  readonly #mayAutoReply: (local: string, peer: string) => boolean;
  readonly #log: Logger;

  constructor(deps: { send: (el: Element) => Promise<void>; addressing: Addressing; subs: SubscriptionStore; facts: CommandFacts; pgp: PgpCommands | null; mayAutoReply?: (local: string, peer: string) => boolean; log: Logger }) {
    this.#send = deps.send;
    this.#addressing = deps.addressing;
    this.#subs = deps.subs;
    this.#facts = deps.facts;
    this.#pgp = deps.pgp;
    this.#mayAutoReply = deps.mayAutoReply ?? (() => true);
    this.#log = deps.log;
  }

  async handle(ctx: StanzaContext): Promise<void> {
    const body = ctx.stanza.getChildText('body');
    if (body === null || ctx.stanza.attrs.type === 'groupchat') return;
    // OTR protocol text (a client's query or AKE sent to the domain) is no command; the domain speaks no OTR.
    if (body.trimStart().startsWith('?OTR')) return;
    // Answers are automatic replies: another bot answering them ("unknown command") must not loop.
    if (!this.#mayAutoReply(this.#addressing.domain, ctx.fromBare)) {
      this.#log.debug({ sender: ctx.fromBare }, 'chat command not answered: auto-reply budget spent');
      return;
    }
    let answer: string;
    try {
      answer = await this.#run(body.trim(), ctx.fromBare);
    } catch (e) {
      const g = toGatewayError(e);
      if (g.code === 'internal') this.#log.error({ err: e }, 'chat command failed');
      answer = `Error: ${g.code === 'internal' ? 'the command failed.' : g.userText}`;
    }
    await this.#send(
      xml('message', { from: this.#addressing.domain, to: String(ctx.stanza.attrs.from), type: 'chat', id: `cmd-${Date.now().toString(36)}` }, xml('body', {}, answer)),
    );
  }

  async #run(text: string, sender: string): Promise<string> {
    const [word = '', ...rest] = text.split(/\s+/);
    const arg = text.slice(word.length).trim();
    switch (word.toLowerCase()) {
      case '':
      case 'help':
        return HELP.replaceAll('DOMAIN', this.#addressing.domain);
      case 'fingerprints': {
        const targets = arg ? [this.#hosted(arg)] : this.#subs.all().filter((s) => s.remote === sender && (s.from || s.to) && s.local !== this.#addressing.domain).map((s) => s.local);
        if (targets.length === 0) return 'You are not subscribed to any bot or proxy here; ask with: fingerprints <jid>';
        const blocks: string[] = [];
        for (const t of targets) blocks.push([t, ...(await this.#facts.fingerprints(t)).map((l) => `  ${l}`)].join('\n'));
        return blocks.join('\n');
      }
      case 'key': {
        if (!this.#pgp) return 'XEP-0027 (OpenPGP) is not enabled on this gateway.';
        if (!arg) return 'Usage: key <jid>';
        const k = await this.#pgp.publicKey(this.#hosted(arg));
        return `OpenPGP key of ${this.#hosted(arg)}, fingerprint ${k.fingerprint}:\n${k.armored}`;
      }
      case 'register': {
        if (!this.#pgp) return 'XEP-0027 (OpenPGP) is not enabled on this gateway.';
        if (!arg.includes('BEGIN PGP PUBLIC KEY BLOCK')) return 'Usage: register <your armored OpenPGP public key>';
        const { fingerprint } = await this.#pgp.register(sender, arg);
        return `Registered your OpenPGP key ${fingerprint} for ${sender}. Proxies will now encrypt to it.`;
      }
      case 'unregister':
        if (!this.#pgp) return 'XEP-0027 (OpenPGP) is not enabled on this gateway.';
        return (await this.#pgp.remove(sender)) ? `Removed the OpenPGP key registered for ${sender}.` : `No OpenPGP key was registered for ${sender}.`;
      default:
        void rest;
        return `Unknown command "${word}". Send "help" for the list.`;
    }
  }

  #hosted(jid: string): string {
    const a = this.#addressing.classify(jid);
    if (a.kind === 'domain') throw new GatewayError('not_hosted', 'Name a bot or proxy JID, not the gateway domain.');
    return a.local;
  }
}
