// The leadership lease in PostgreSQL (gw_lease, one row): a holder, an epoch that grows by one at
// every takeover, and an expiry on the database's clock. A standby takes the row only once it has
// expired; the holder renews it every third of the lease.
//
// Locally the holder trusts its lease only until (start of its last successful renewal) + lease,
// less a tenth for clock-rate drift, on the monotonic clock: the database set the expiry later than
// that instant, so the holder stops acting before anyone else may start. A process paused past that
// point (SIGSTOP, a VM freeze) finds the lease invalid the moment it runs again, before any timer.
import { performance } from 'node:perf_hooks';
import type pg from 'pg';

export class Lease {
  readonly #pool: pg.Pool;
  readonly holder: string;
  readonly leaseMs: number;
  #epoch: string | null = null;
  #validUntil = 0;

  constructor(pool: pg.Pool, holder: string, leaseMs: number) {
    this.#pool = pool;
    this.holder = holder;
    this.leaseMs = leaseMs;
  }

  get epoch(): string | null {
    return this.#epoch;
  }

  /** Held and locally still valid: this instance may write and send. */
  valid(): boolean {
    return this.#epoch !== null && performance.now() < this.#validUntil;
  }

  #margin(): number {
    return Math.max(Math.floor(this.leaseMs / 10), 100);
  }

  /** Takes the lease if it is free or expired; true when this instance now holds it (a new epoch). */
  async tryAcquire(): Promise<boolean> {
    const t0 = performance.now();
    const r = await this.#pool.query<{ epoch: string }>(
      `UPDATE gw_lease SET holder = $1, epoch = epoch + 1, expires_at = now() + $2 * interval '1 millisecond'
        WHERE id = 1 AND (holder IS NULL OR expires_at <= now()) RETURNING epoch`,
      [this.holder, this.leaseMs],
    );
    if (!r.rowCount) return false;
    this.#epoch = String(r.rows[0]!.epoch);
    this.#validUntil = t0 + this.leaseMs - this.#margin();
    return true;
  }

  /** Extends the lease; false when it has been taken over (this instance must stop at once). */
  async renew(): Promise<boolean> {
    if (this.#epoch === null) return false;
    const t0 = performance.now();
    const r = await this.#pool.query(
      `UPDATE gw_lease SET expires_at = now() + $3 * interval '1 millisecond' WHERE id = 1 AND holder = $1 AND epoch = $2 RETURNING 1`,
      [this.holder, this.#epoch, this.leaseMs],
    );
    if (!r.rowCount) {
      this.#epoch = null;
      return false;
    }
    this.#validUntil = t0 + this.leaseMs - this.#margin();
    return true;
  }

  /** Gives the lease up (a clean stop): a standby takes over at its next attempt, not after the lease. */
  async release(): Promise<void> {
    const epoch = this.#epoch;
    this.#epoch = null;
    if (epoch === null) return;
    await this.#pool.query('UPDATE gw_lease SET holder = NULL, expires_at = now() WHERE id = 1 AND holder = $1 AND epoch = $2', [this.holder, epoch]);
  }

  /** Forgets the lease without touching the database (fenced, or the renewals stopped). */
  drop(): void {
    this.#epoch = null;
  }
}
