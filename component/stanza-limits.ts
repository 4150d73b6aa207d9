// The inbound stanza limits (limits.ts), checked by the router before anything else: a token bucket
// per sender bare JID and one per sender domain (the first stanza over a limit gets an error reply,
// later ones are dropped silently until the bucket has a token again), and the largest stanza
// processed. Stanzas from the gateway's own domain (its keepalive pings) are not counted.
// Fairness: a room the bots joined sends everyone's stanzas from its own bare JID, so in a room
// the sender is the occupant (the full JID); and the last quarter of a domain's bucket is kept for
// its quiet senders (own bucket at least half full), so a few noisy accounts that drain their
// domain's budget do not starve its other users.
import type Element from 'ltx/lib/Element.js';
import type { Metrics } from '../http/metrics.js';
import { KeyedBuckets, type Limits } from '../limits.js';

export type StanzaVerdict = { ok: true } | { ok: false; reply: 'resource-constraint' | 'policy-violation' | null; text: string };

const OK: StanzaVerdict = { ok: true };

/**
 * The size of `el` as XML text, counted from names, attributes and text without serializing;
 * counting stops once `cap` is passed.
 */
export function stanzaSize(el: Element, cap = Infinity): number {
  let n = 0;
  const stack: Array<Element | string> = [el];
  while (stack.length > 0 && n <= cap) {
    const x = stack.pop()!;
    if (typeof x === 'string') {
      n += x.length;
      continue;
    }
    n += 2 * x.name.length + 5;
    for (const k in x.attrs) {
      const v = x.attrs[k];
      n += k.length + 4 + (typeof v === 'string' ? v.length : String(v ?? '').length);
    }
    for (const c of x.children) stack.push(c as Element | string);
  }
  return n;
}

export class StanzaLimits {
  readonly #limits: Limits;
  readonly #metrics: Metrics;
  readonly #ownDomain: string;
  readonly #senders: KeyedBuckets;
  readonly #domains: KeyedBuckets;
  readonly #now: () => number;
  readonly #isRoom: (bare: string) => boolean;

  constructor(d: { limits: Limits; metrics: Metrics; ownDomain: string; now?: () => number; isRoom?: (bare: string) => boolean }) {
    this.#isRoom = d.isRoom ?? (() => false);
    this.#limits = d.limits;
    this.#metrics = d.metrics;
    this.#ownDomain = d.ownDomain.toLowerCase();
    this.#now = d.now ?? Date.now;
    this.#senders = new KeyedBuckets(d.limits.sender_stanzas_per_second, d.limits.sender_stanza_burst, d.limits.peer_cache_entries);
    this.#domains = new KeyedBuckets(d.limits.domain_stanzas_per_second, d.limits.domain_stanza_burst, d.limits.peer_cache_entries);
    d.metrics.registerCache('stanza_buckets_senders', () => this.#senders.size);
    d.metrics.registerCache('stanza_buckets_domains', () => this.#domains.size);
  }

  /** Whether an inbound stanza (not an error or iq result) may be processed. */
  check(el: Element): StanzaVerdict {
    const from = String(el.attrs.from ?? '');
    const slash = from.indexOf('/');
    const bare = (slash < 0 ? from : from.slice(0, slash)).toLowerCase();
    const at = bare.indexOf('@');
    const domain = at < 0 ? bare : bare.slice(at + 1);
    if (domain === this.#ownDomain) return OK;
    const now = this.#now();
    // The sender's own bucket first: a sender over its limit must not use up its domain's. In a
    // room the sender is the occupant.
    const sender = this.#isRoom(bare) ? from.toLowerCase() : bare;
    const s = this.#senders.admit(sender, now);
    if (s !== 'ok') return this.#refused('sender_stanzas', s === 'refuse', 'Too many stanzas from you; the gateway ignores them for a while.');
    // A quiet sender may take the domain's last quarter, a busy one only what is above it.
    const quiet = this.#senders.level(sender, now) >= this.#senders.burst / 2;
    const d = this.#domains.admitAbove(domain, quiet ? 0 : this.#domains.burst / 4, now);
    if (d !== 'ok') return this.#refused('domain_stanzas', d === 'refuse', 'Too many stanzas from your domain; the gateway ignores them for a while.');
    const max = this.#limits.max_stanza;
    if (stanzaSize(el, max) > max) {
      this.#metrics.limited.inc({ limit: 'max_stanza' });
      return { ok: false, reply: 'policy-violation', text: `The stanza is larger than this gateway accepts (${Math.round(max / 1024)} KB).` };
    }
    return OK;
  }

  #refused(limit: string, answer: boolean, text: string): StanzaVerdict {
    this.#metrics.limited.inc({ limit });
    return { ok: false, reply: answer ? 'resource-constraint' : null, text };
  }
}
