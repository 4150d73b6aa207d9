// Presence subscriptions between hosted JIDs and remote bare JIDs (RFC 6121 states, kept by the
// gateway because the server keeps no roster for a component).
import type { Keystore } from './keystore.js';

export interface Subscription {
  local: string;
  remote: string;
  /** The remote contact receives the hosted JID's presence (and PEP notifications). */
  from: boolean;
  /** The hosted JID receives the contact's presence. */
  to: boolean;
  pendingOut: boolean;
}

interface Row {
  local: string;
  remote: string;
  sub_from: number;
  sub_to: number;
  pending_out: number;
}

const toSub = (r: Row): Subscription => ({ local: r.local, remote: r.remote, from: r.sub_from === 1, to: r.sub_to === 1, pendingOut: r.pending_out === 1 });

export class SubscriptionStore {
  readonly #get;
  readonly #upsert;
  readonly #forLocal;
  readonly #all;

  constructor(ks: Keystore) {
    const db = ks.db;
    this.#get = db.prepare<[string, string], Row>('SELECT * FROM subscriptions WHERE local = ? AND remote = ?');
    this.#upsert = db.prepare(
      'INSERT INTO subscriptions (local, remote, sub_from, sub_to, pending_out, updated_at) VALUES (?, ?, ?, ?, ?, ?) ' +
        'ON CONFLICT (local, remote) DO UPDATE SET sub_from = excluded.sub_from, sub_to = excluded.sub_to, pending_out = excluded.pending_out, updated_at = excluded.updated_at',
    );
    this.#forLocal = db.prepare<[string], Row>('SELECT * FROM subscriptions WHERE local = ? ORDER BY remote');
    this.#all = db.prepare<[], Row>('SELECT * FROM subscriptions WHERE sub_from = 1 OR sub_to = 1 OR pending_out = 1 ORDER BY local, remote');
  }

  get(local: string, remote: string): Subscription {
    const r = this.#get.get(local, remote);
    return r ? toSub(r) : { local, remote, from: false, to: false, pendingOut: false };
  }

  /** Applies `change` to the current state and stores the result. */
  update(local: string, remote: string, change: Partial<Pick<Subscription, 'from' | 'to' | 'pendingOut'>>): Subscription {
    const next = { ...this.get(local, remote), ...change };
    this.#upsert.run(local, remote, next.from ? 1 : 0, next.to ? 1 : 0, next.pendingOut ? 1 : 0, Date.now());
    return next;
  }

  forLocal(local: string): Subscription[] {
    return this.#forLocal.all(local).map(toSub);
  }

  all(): Subscription[] {
    return this.#all.all().map(toSub);
  }
}
