// Runs the real gateway in-process against a test Prosody: a temporary keystore, a config built for
// the server's ports, and helpers to wait for readiness. For the process-level tests see
// test/e2e/cli.test.ts, which spawns `node dist/main.js` itself.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { validateConfig, type Config } from '../../config.js';
import { Gateway } from '../../context.js';
import { createLogger } from '../../log.js';
import type { XmppServer } from './prosody.js';

export const TEST_KDF = { N: 1024, r: 8, p: 1 };

export interface GatewayHarnessOptions {
  /** Extra component keys (e.g. keepalive). */
  component?: Record<string, unknown>;
  bots?: Array<Record<string, unknown>>;
  bridge?: Record<string, unknown>;
  extra?: Record<string, unknown>;
  dir?: string;
}

/** A raw config object for `server`, as the YAML would give it. */
export function rawConfig(server: XmppServer, dir: string, opts: GatewayHarnessOptions = {}): Record<string, unknown> {
  return {
    component: { service: server.componentService, domain: server.componentDomain, secret: server.componentSecret, reconnect_max_delay: '2s', ...(opts.component ?? {}) },
    http: { host: '127.0.0.1', port: 0, admin_token: 'admin-token-for-tests-0001' },
    keystore: { path: join(dir, 'gateway.db'), passphrase: 'keystore-passphrase-for-tests' },
    bridge: { allowed_domains: [server.domain], ...(opts.bridge ?? {}) },
    bots: opts.bots ?? [{ localpart: 'alerts', token: 'alerts-bot-token-0001' }],
    log: { level: process.env.GW_TEST_LOG ?? 'silent' },
    ...(opts.extra ?? {}),
  };
}

/** Captures every log line the gateway writes, so tests can assert what never reaches a log. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.lines.push(chunk.toString('utf8'));
    if (process.env.GW_TEST_LOG) process.stderr.write(chunk);
    cb();
  }
  text(): string {
    return this.lines.join('');
  }
}

export class TestGateway {
  readonly gateway: Gateway;
  readonly config: Config;
  readonly dir: string;
  readonly logs: LogCapture;
  #ownDir: boolean;

  private constructor(gateway: Gateway, config: Config, dir: string, logs: LogCapture, ownDir: boolean) {
    this.gateway = gateway;
    this.config = config;
    this.dir = dir;
    this.logs = logs;
    this.#ownDir = ownDir;
  }

  /** Builds and starts a gateway for `server`; resolves once the component is online. */
  static async start(server: XmppServer, opts: GatewayHarnessOptions = {}): Promise<TestGateway> {
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'gw-test-'));
    const config = validateConfig(rawConfig(server, dir, opts));
    const logs = new LogCapture();
    const gateway = new Gateway(config, { log: createLogger(process.env.GW_TEST_LEVEL ?? 'debug', logs), keystore: { kdf: TEST_KDF } });
    await gateway.start();
    const t = new TestGateway(gateway, config, dir, logs, !opts.dir);
    await t.waitOnline();
    return t;
  }

  get url(): string {
    return this.gateway.httpUrl;
  }

  get domain(): string {
    return this.config.component.domain;
  }

  async waitOnline(timeoutMs = 15000): Promise<void> {
    await waitUntil(() => this.gateway.conn.online, timeoutMs, 'gateway component online');
  }

  async stop(): Promise<void> {
    await this.gateway.stop();
  }

  async destroy(): Promise<void> {
    await this.gateway.stop();
    if (this.#ownDir && !process.env.KEEP_GATEWAY) rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
