// The gateway as its own process (`node dist/main.js --config FILE`), for tests that kill it
// (SIGKILL mid-queue) and start it again on the same keystore.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { XmppServer } from './prosody.js';
import { rawConfig, waitUntil, type GatewayHarnessOptions } from './gateway.js';
import { freePort } from './ports.js';

const MAIN = new URL('../../main.js', import.meta.url).pathname;

export class GatewayProcess {
  readonly dir: string;
  readonly configFile: string;
  readonly port: number;
  output = '';
  #proc: ChildProcess | null = null;
  #exit: Promise<number | null> = Promise.resolve(null);

  private constructor(dir: string, configFile: string, port: number) {
    this.dir = dir;
    this.configFile = configFile;
    this.port = port;
  }

  static async create(server: XmppServer, opts: GatewayHarnessOptions = {}): Promise<GatewayProcess> {
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'gw-proc-'));
    const port = await freePort();
    const cfg = rawConfig(server, dir, opts);
    (cfg.http as Record<string, unknown>).port = port;
    (cfg.log as Record<string, unknown>).level = process.env.GW_TEST_LOG ?? 'info';
    const file = join(dir, 'gateway.yaml');
    writeFileSync(file, stringify(cfg));
    return new GatewayProcess(dir, file, port);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the process and waits until /readyz answers 200. */
  async start(timeoutMs = 20000): Promise<void> {
    const proc = spawn(process.execPath, ['--enable-source-maps', MAIN, '--config', this.configFile], {
      env: { ...process.env, LOG_LEVEL: process.env.GW_TEST_LOG ?? 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#proc = proc;
    proc.stdout!.on('data', (b: Buffer) => (this.output += b.toString()));
    proc.stderr!.on('data', (b: Buffer) => (this.output += b.toString()));
    this.#exit = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
    await waitUntil(
      async () => {
        if (proc.exitCode !== null) throw new Error(`gateway exited with ${proc.exitCode}: ${this.output.slice(-3000)}`);
        const r = await fetch(`${this.url}/readyz`).catch(() => null);
        return r?.status === 200;
      },
      timeoutMs,
      'gateway process ready',
    );
  }

  /** SIGKILL: no shutdown at all, as in a crash. */
  async kill(): Promise<void> {
    this.#proc?.kill('SIGKILL');
    await this.#exit;
    this.#proc = null;
  }

  /** SIGSTOP: the process freezes (a VM pause, a long GC), its sockets stay open. */
  pause(): void {
    this.#proc?.kill('SIGSTOP');
  }

  resume(): void {
    this.#proc?.kill('SIGCONT');
  }

  /** /readyz: its status and "role" (keystore.url), or null while nothing answers. */
  async readiness(): Promise<{ status: number; role: string } | null> {
    try {
      const r = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
      const body = (await r.json()) as { role?: string };
      return { status: r.status, role: String(body.role) };
    } catch {
      return null;
    }
  }

  /** SIGTERM and wait; resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (!this.#proc) return null;
    this.#proc.kill('SIGTERM');
    const code = await this.#exit;
    this.#proc = null;
    return code;
  }

  async destroy(): Promise<void> {
    this.#proc?.kill('SIGCONT');
    if (this.#proc) await this.kill();
    if (!process.env.KEEP_GATEWAY) rmSync(this.dir, { recursive: true, force: true });
  }

  async post(path: string, token: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
    const r = await fetch(`${this.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  }

  async get(path: string, token: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const r = await fetch(`${this.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  }
}

/** One of several instances on a PostgreSQL keystore (keystore.url) with `lease`, for the HA tests. */
export function haInstance(
  server: XmppServer,
  o: { url: string; leaseS: number; bot: { localpart: string; token: string }; webhook: { url: string; secret: string } },
): Promise<GatewayProcess> {
  return GatewayProcess.create(server, {
    bots: [{ ...o.bot, webhook: o.webhook, rate_limit: { per_second: 1000, burst: 1000 } }],
    extra: {
      keystore: { url: o.url, passphrase: 'keystore-passphrase-for-tests' },
      ha: { lease: `${o.leaseS}s` },
      webhooks: { retry_for: '1h', max_retry_delay: '1s', timeout: '5s' },
    },
  });
}

/** Waits until `g`'s /readyz answers 200 with that role ('active' or 'standby'). */
export function waitRole(g: GatewayProcess, want: string, what: string, timeoutMs = 30000): Promise<void> {
  return waitUntil(async () => {
    const r = await g.readiness();
    return r?.role === want && r.status === 200;
  }, timeoutMs, what);
}
