// One of several instances sharing a PostgreSQL keystore (keystore.url): standby until it takes the
// lease, then active (a Gateway on the working copy), standby again the moment the lease is lost.
//
// The HTTP server belongs to this runner and stays up across role changes; it serves the standby app
// (ha/standby-app.ts) or the active Gateway's app, whose every answer waits on the commit barrier (a
// 202 is written only once its outbox row is in PostgreSQL). The active instance renews every third
// of ha.lease and moves messages standbys accepted into its outbox; a standby tries to take the lease
// every quarter of it, so it takes over at most about ha.lease after the last renewal.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type pg from 'pg';
import type { Config } from '../config.js';
import { publicView } from '../config.js';
import { Gateway } from '../context.js';
import { Metrics } from '../http/metrics.js';
import { PgBackend, WriteThrough, type FencedError } from '../keystore/pg/backend.js';
import { Lease } from '../keystore/pg/lease.js';
import type { KdfParams } from '../keystore/seal.js';
import { standbyApp } from './standby-app.js';
import { HandoffImporter } from './handoff.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface InstanceOptions {
  log: Logger;
  kdf?: KdfParams;
}

export class HaInstance {
  readonly config: Config;
  readonly log: Logger;
  readonly holder = `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
  readonly #kdf: KdfParams | undefined;
  #backend: PgBackend | null = null;
  #lease: Lease | null = null;
  #server: Server | null = null;
  #handler: Handler = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  #standby: Handler | null = null;
  #standbyMetrics = new Metrics();
  #gateway: Gateway | null = null;
  #wt: WriteThrough | null = null;
  #timer: NodeJS.Timeout | null = null;
  #ticking: Promise<void> | null = null;
  #reachable = false;
  #stopping = false;
  #listener: pg.PoolClient | null = null;
  #lastImport = 0;
  #importing: Promise<void> | null = null;
  #handoff: HandoffImporter | null = null;

  constructor(config: Config, opts: InstanceOptions) {
    this.config = config;
    this.log = opts.log;
    this.#kdf = opts.kdf;
  }

  get role(): 'active' | 'standby' {
    return this.#gateway ? 'active' : 'standby';
  }

  /** The active gateway's metrics, or the standby's own (gateway_active 0). */
  get metrics(): Metrics {
    return this.#gateway?.metrics ?? this.#standbyMetrics;
  }

  get gateway(): Gateway | null {
    return this.#gateway;
  }

  get httpUrl(): string {
    const a = this.#server?.address() as AddressInfo | null;
    return a ? `http://${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` : '';
  }

  async start(): Promise<void> {
    this.log.info({ config: publicView(this.config), holder: this.holder }, 'starting (keystore.url: one active instance, the others standby)');
    const backend = await PgBackend.open(this.config.keystore.url!, this.config.keystore.passphrase, { ...(this.#kdf ? { kdf: this.#kdf } : {}), queryTimeoutMs: Math.min(5000, this.config.ha.leaseMs / 2) });
    this.#backend = backend;
    this.#reachable = true;
    this.#lease = new Lease(backend.pool, this.holder, this.config.ha.leaseMs);
    this.#standbyMetrics.active.set(0);
    const app = standbyApp({ config: this.config, backend, metrics: this.#standbyMetrics, log: this.log.child({ subsystem: 'http' }), reachable: () => this.#reachable });
    this.#standby = app as unknown as Handler;
    this.#handler = this.#standby;
    const server = createServer((req, res) => this.#handler(req, res));
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.config.http.port, this.config.http.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.log.info({ address: this.httpUrl, role: 'standby' }, 'http listening');
    await this.#tick();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#stopping) return;
    const every = this.role === 'active' ? Math.floor(this.config.ha.leaseMs / 3) : Math.floor(this.config.ha.leaseMs / 4);
    this.#timer = setTimeout(() => {
      this.#ticking = this.#tick()
        .catch((err: unknown) => this.log.error({ err }, 'lease round failed'))
        .finally(() => {
          this.#ticking = null;
          this.#schedule();
        });
    }, every);
  }

  async #tick(): Promise<void> {
    const lease = this.#lease!;
    if (this.#gateway) {
      let renewed = false;
      try {
        const wt = this.#wt;
        renewed = wt ? await wt.whileRenewing(() => lease.renew()) : await lease.renew();
        this.#reachable = true;
      } catch (err) {
        this.#reachable = false;
        this.log.warn({ err }, 'lease renewal failed');
      }
      if (!renewed && !lease.valid()) await this.#stepDown(renewed ? 'renewal failed' : 'the lease was taken over or could not be renewed in time');
      return;
    }
    let won = false;
    try {
      won = await lease.tryAcquire();
      this.#reachable = true;
    } catch (err) {
      this.#reachable = false;
      this.log.warn({ err }, 'keystore unreachable (standby)');
      return;
    }
    if (won) await this.#takeOver();
  }

  async #takeOver(): Promise<void> {
    const backend = this.#backend!;
    const lease = this.#lease!;
    const started = Date.now();
    const wc = await backend.loadWorkingCopy();
    const wt = new WriteThrough(backend, wc.db, { holder: lease.holder, epoch: lease.epoch! }, { shipEverything: wc.migrated });
    this.#wt = wt;
    wt.onFenced((e: FencedError) => {
      this.log.warn({ err: e }, 'write refused: the lease has moved on');
      void this.#stepDown('fenced').catch(() => undefined);
    });
    wt.onError((err) => this.log.warn({ err }, 'write-through to PostgreSQL failed; will retry'));
    wt.start(10);
    const gateway = new Gateway(this.config, {
      log: this.log,
      ha: {
        keystore: wt.keystore,
        barrier: () => wt.barrier(),
        mayAct: () => lease.valid() && !wt.fenced,
        handOff: (el) => backend.handOff(el.toString()),
      },
    });
    this.#gateway = gateway;
    this.#handoff = new HandoffImporter({ backend, wt, handle: (el) => gateway.handleHandedOver(el), log: this.log });
    wt.onShipped((seconds, rows) => {
      gateway.metrics.keystoreBatches.inc();
      gateway.metrics.keystoreBatchRows.inc(rows);
      gateway.metrics.keystoreBatchSeconds.observe(seconds);
    });
    const app = gateway.app as unknown as Handler;
    // Every answer of the active instance waits for the commit barrier (a 202 means "in PostgreSQL").
    this.#handler = (req, res) => {
      if (!req.url?.startsWith('/v1/')) {
        app(req, res); // health and metrics answer at once, PostgreSQL or not
        return;
      }
      const end = res.end.bind(res) as (...a: unknown[]) => ServerResponse;
      res.end = ((...args: unknown[]) => {
        wt.barrier().then(
          () => end(...args),
          () => res.destroy(),
        );
        return res;
      }) as typeof res.end;
      app(req, res);
    };
    this.log.info({ epoch: lease.epoch, loadMs: Date.now() - started, rows: wc.db.prepare("SELECT count(*) AS n FROM kv").pluck().get() }, 'lease taken: now the active instance');
    await this.#listen();
    this.#importAccepted();
    try {
      await gateway.start();
    } catch (err) {
      this.log.error({ err }, 'the active instance could not start; giving the lease up');
      await this.#stepDown('start failed', true);
    }
  }

  /** LISTEN for messages standbys accept; also polled, in case a notification is missed. */
  async #listen(): Promise<void> {
    try {
      const c = await this.#backend!.pool.connect();
      this.#listener = c;
      c.on('notification', () => this.#importAccepted());
      c.on('error', () => undefined);
      await c.query('LISTEN gw_accepted');
    } catch (err) {
      this.log.warn({ err }, 'LISTEN gw_accepted failed; polling only');
    }
  }

  #importAccepted(): void {
    if (this.#importing || !this.#gateway) return;
    this.#importing = this.#importOnce()
      .catch((err: unknown) => this.log.warn({ err }, 'moving standby-accepted messages failed; will retry'))
      .finally(() => {
        this.#importing = null;
        if (this.#gateway && !this.#stopping) {
          const t = setTimeout(() => this.#importAccepted(), this.#lastImport > 0 ? 0 : 500);
          t.unref();
        }
      });
  }

  async #importOnce(): Promise<void> {
    const gateway = this.#gateway;
    const wt = this.#wt;
    if (!gateway || !wt || wt.fenced) return;
    // Stanzas a former active instance read after its lease had gone: handled here as if the server
    // had sent them to us (they were meant for the component domain all along); each row is deleted
    // with the batch that ships what handling it changed (ha/handoff.ts).
    const handedOver = this.#handoff && this.#lease!.valid() ? await this.#handoff.poll(200) : 0;
    const batch = await this.#backend!.acceptedBatch(200);
    this.#lastImport = batch.length + handedOver;
    if (!batch.length || this.#gateway !== gateway) return;
    for (const m of batch) {
      if (!gateway.outbox.get(m.id)) {
        const r = gateway.outbox.enqueue(m, m.createdAt);
        if (!r.created) this.log.warn({ id: m.id, existing: r.message.id }, 'a standby-accepted message repeats an Idempotency-Key the active instance saw first; kept the first');
      }
      wt.dropAccepted(m.id);
    }
    await wt.barrier();
    gateway.sender.kick();
  }

  async #stepDown(reason: string, release = false): Promise<void> {
    const gateway = this.#gateway;
    if (!gateway) return;
    this.#gateway = null;
    this.#handoff = null;
    this.#handler = this.#standby!;
    const wt = this.#wt;
    this.#wt = null;
    wt?.stop();
    if (release) await this.#lease!.release().catch(() => undefined);
    else this.#lease!.drop();
    this.#listener?.release(true);
    this.#listener = null;
    this.log.warn({ reason }, 'now a standby');
    await gateway.abandon();
  }

  /** A clean stop: the active instance finishes, ships its last changes and gives the lease up. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#ticking;
    const gateway = this.#gateway;
    const server = this.#server;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    server?.closeIdleConnections();
    if (gateway) {
      await this.#importing;
      await this.#handoff?.settled();
      await gateway.stop();
      await this.#wt?.drain().catch((err: unknown) => this.log.warn({ err }, 'last changes not shipped'));
      this.#wt?.stop();
      this.#listener?.release(true);
      await this.#lease?.release().catch(() => undefined);
      this.#gateway = null;
    }
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000).unref())]);
    server?.closeAllConnections();
    await this.#backend?.close();
    this.log.info('stopped');
  }
}
