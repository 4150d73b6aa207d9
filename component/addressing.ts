// What a JID under the gateway's domain stands for: the domain itself (commands for humans), a bot,
// or a proxy for a remote user (the remote bare JID escaped into the localpart, XEP-0106; the older
// `%` form is accepted on input). Proxies exist only for domains in bridge.allowed_domains.
import { GatewayError } from '../errors.js';
import { bareOf, escapeLocal, parseJid, unescapeLocal, type Jid } from './jid.js';

export type Address =
  | { kind: 'domain' }
  | { kind: 'bot'; local: string; localpart: string }
  | { kind: 'proxy'; local: string; remote: string };

export const RESOURCE = 'gw';

export class Addressing {
  readonly domain: string;
  readonly #bots: Set<string>;
  readonly #allowed: Set<string>;

  constructor(domain: string, botLocalparts: Iterable<string>, allowedDomains: Iterable<string>) {
    this.domain = domain;
    this.#bots = new Set(botLocalparts);
    this.#allowed = new Set(allowedDomains);
  }

  isAllowedDomain(domain: string): boolean {
    return this.#allowed.has(domain.toLowerCase());
  }

  /** Whether a (bare or full) JID string belongs to a domain the gateway may talk to. */
  isAllowedJid(jid: string): boolean {
    try {
      return this.isAllowedDomain(parseJid(jid).domain);
    } catch {
      return false;
    }
  }

  /** The proxy JID (bare, escaped) standing for the remote bare JID `remote`. */
  proxyFor(remote: string): string {
    const r = parseJid(remote);
    if (!r.local) throw new GatewayError('jid_malformed', 'a proxy stands for a user JID (local@domain)');
    if (r.domain === this.domain) throw new GatewayError('jid_malformed', 'a proxy cannot stand for a gateway address');
    if (!this.isAllowedDomain(r.domain)) throw new GatewayError('recipient_not_allowed', `${r.domain} is not a domain this gateway bridges`);
    return `${escapeLocal(bareOf({ ...r, resource: '' }))}@${this.domain}`;
  }

  /** The bot JID for a configured localpart. */
  botJid(localpart: string): string {
    return `${localpart}@${this.domain}`;
  }

  /**
   * Classifies a JID addressed to the gateway. Throws GatewayError: jid_malformed, not_hosted (no
   * such bot or not a proxy form), recipient_not_allowed (a proxy for a domain we do not bridge).
   */
  classify(jid: string | Jid): Address {
    const j = typeof jid === 'string' ? parseJid(jid) : jid;
    if (j.domain !== this.domain) throw new GatewayError('not_hosted', `${j.domain} is not this gateway`);
    if (!j.local) return { kind: 'domain' };
    if (this.#bots.has(j.local)) return { kind: 'bot', local: `${j.local}@${this.domain}`, localpart: j.local };
    const remote = this.#remoteOf(j.local);
    if (!remote) throw new GatewayError('not_hosted', 'no such bot or proxy at this gateway');
    const r = parseJid(remote);
    if (!r.local || r.resource) throw new GatewayError('not_hosted', 'a proxy stands for a bare user JID');
    if (!this.isAllowedDomain(r.domain)) throw new GatewayError('recipient_not_allowed', `${r.domain} is not a domain this gateway bridges`);
    const remoteBare = bareOf(r);
    // Canonical (escaped) form, whatever form the JID arrived in.
    return { kind: 'proxy', local: `${escapeLocal(remoteBare)}@${this.domain}`, remote: remoteBare };
  }

  #remoteOf(local: string): string | null {
    const unescaped = unescapeLocal(local);
    if (unescaped.includes('@')) return unescaped;
    // The `%` convention of older transports: user%domain. Domains cannot contain '%'.
    const pct = local.lastIndexOf('%');
    if (pct > 0 && pct < local.length - 1) return `${unescapeLocal(local.slice(0, pct))}@${local.slice(pct + 1)}`;
    return null;
  }
}
