// Starts a throwaway PostgreSQL (Debian's postgresql-15 binaries) for the tests: initdb in a temporary
// directory, pg_ctl on a free loopback port, trust authentication on loopback only, fsync off. Never
// the system's cluster. initdb refuses to run as root, so as root the cluster runs as the `postgres`
// user (created by the Debian package).
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './ports.js';

/** Debian's layout: /usr/lib/postgresql/<major>/bin; the newest major installed. */
function findBin(): string {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root) ? readdirSync(root).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a)) : [];
  return join(root, majors[0] ?? '15', 'bin');
}

const BIN = process.env.PG_BIN ?? findBin();

export function postgresAvailable(): boolean {
  return existsSync(join(BIN, 'initdb')) && existsSync(join(BIN, 'pg_ctl'));
}

export class Postgres {
  readonly dir: string;
  port = 0;
  #asUser: { uid: number; gid: number; name: string } | null = null;
  #dbs = 0;
  #running = false;

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'gw-pg-'));
  }

  static async start(): Promise<Postgres> {
    if (!postgresAvailable()) throw new Error(`PostgreSQL not found in ${BIN}: install the Debian package (apt-get install postgresql), as scripts/install-deps.sh does`);
    const p = new Postgres();
    try {
      if (process.getuid?.() === 0) {
        const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
        const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
        if (id.status !== 0) throw new Error('running as root and there is no postgres user to run initdb as');
        p.#asUser = { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()), name: 'postgres' };
        chownSync(p.dir, p.#asUser.uid, p.#asUser.gid);
      }
      p.port = await freePort();
      p.#run('initdb', ['-D', join(p.dir, 'data'), '-A', 'trust', '-U', 'gateway', '-E', 'UTF8', '--no-sync', '--locale=C']);
      const opts = `-p ${p.port} -k ${p.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60`;
      p.#run('pg_ctl', ['-D', join(p.dir, 'data'), '-o', opts, '-l', join(p.dir, 'postgres.log'), '-w', '-t', '60', 'start']);
      p.#running = true;
      return p;
    } catch (e) {
      await p.stop();
      throw e;
    }
  }

  #run(tool: string, args: string[]): void {
    const cmd = this.#asUser ? 'runuser' : join(BIN, tool);
    const full = this.#asUser ? ['-u', this.#asUser.name, '--', join(BIN, tool), ...args] : args;
    const r = spawnSync(cmd, full, { encoding: 'utf8', timeout: 90_000 });
    if (r.status !== 0) throw new Error(`${tool} failed (${r.status}): ${r.stderr || r.stdout}`);
  }

  url(db = 'postgres'): string {
    return `postgresql://gateway@127.0.0.1:${this.port}/${db}`;
  }

  /** A new empty database (one per test keeps tests apart); its URL. */
  async createDatabase(prefix = 'gw'): Promise<string> {
    const name = `${prefix}_${process.pid}_${++this.#dbs}`;
    const c = new pg.Client({ connectionString: this.url() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }

  /** Stops the cluster (immediately: nothing in it is worth a checkpoint) and removes its directory. */
  async stop(): Promise<void> {
    if (this.#running) {
      this.#running = false;
      try {
        this.#run('pg_ctl', ['-D', join(this.dir, 'data'), '-m', 'immediate', '-w', '-t', '30', 'stop']);
      } catch {
        // already gone
      }
    }
    if (!process.env.KEEP_POSTGRES) rmSync(this.dir, { recursive: true, force: true });
  }
}
