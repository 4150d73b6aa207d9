// The real gateway, in-process, connected to the fake XEP-0114 server (fake-component-server.ts):
// stanzas in through the real connection and router, stanzas out captured. A temporary keystore
// file, so a test can restart the gateway on the same state.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig, type Config } from '../../config.js';
import { Gateway } from '../../context.js';
import { createLogger } from '../../log.js';
import type { Element } from '../../component/xml.js';
import { FakeComponentServer } from './fake-component-server.js';
import { LogCapture, TEST_KDF, waitUntil } from './gateway.js';

export const ADMIN_TOKEN = 'admin-token-for-scenarios-0001';
export const BOT_TOKEN = 'alerts-bot-token-scenario-0001';

export interface ScenarioOptions {
  bridge?: Record<string, unknown>;
  bots?: Array<Record<string, unknown>>;
  extra?: Record<string, unknown>;
}

export class Scenario {
  readonly server: FakeComponentServer;
  readonly dir: string;
  readonly opts: ScenarioOptions;
  gateway!: Gateway;
  config!: Config;
  logs!: LogCapture;

  private constructor(server: FakeComponentServer, dir: string, opts: ScenarioOptions) {
    this.server = server;
    this.dir = dir;
    this.opts = opts;
  }

  static async start(opts: ScenarioOptions = {}): Promise<Scenario> {
    const server = await new FakeComponentServer().listen();
    const s = new Scenario(server, mkdtempSync(join(tmpdir(), 'gw-scenario-')), opts);
    await s.startGateway();
    return s;
  }

  get domain(): string {
    return this.server.domain;
  }

  /** (Re)starts the gateway on the same keystore and waits until the server saw its handshake. */
  async startGateway(): Promise<void> {
    const before = this.server.connections;
    this.config = validateConfig({
      component: { service: this.server.service, domain: this.server.domain, secret: this.server.secret, reconnect_max_delay: '1s', keepalive: 0 },
      http: { host: '127.0.0.1', port: 0, admin_token: ADMIN_TOKEN },
      keystore: { path: join(this.dir, 'gateway.db'), passphrase: 'keystore-passphrase-for-scenarios' },
      bridge: { allowed_domains: ['example.org', 'legacy.example'], ...(this.opts.bridge ?? {}) },
      bots: this.opts.bots ?? [{ localpart: 'alerts', token: BOT_TOKEN }],
      log: { level: 'debug' },
      ...(this.opts.extra ?? {}),
    });
    this.logs = new LogCapture();
    this.gateway = new Gateway(this.config, { log: createLogger('debug', this.logs), keystore: { kdf: TEST_KDF } });
    await this.gateway.start();
    await waitUntil(() => this.server.connections > before && this.gateway.conn.online, 15_000, 'gateway connected to the fake server');
  }

  async stopGateway(): Promise<void> {
    await this.gateway.stop();
  }

  /** Injects a stanza and waits (up to `timeoutMs`) for a stanza answering its id, if any. */
  async exchange(stanza: Element, timeoutMs = 10_000): Promise<Element | null> {
    const id = String(stanza.attrs.id ?? '');
    const mark = this.server.received.length;
    this.server.inject(stanza);
    if (!id) return null;
    const found = () => this.server.since(mark).find((e) => e.attrs.id === id) ?? null;
    await waitUntil(() => found() !== null, timeoutMs, `an answer to ${stanza.name} ${id}`);
    return found();
  }

  /** Resolves once every stanza injected so far has been handled (the gateway's in-flight set drained). */
  async settle(timeoutMs = 30_000): Promise<void> {
    // A ping iq answered means the connection read everything before it; then wait for handlers.
    const id = `settle-${Math.random().toString(36).slice(2)}`;
    const { xml } = await import('../../component/xml.js');
    await this.exchange(xml('iq', { type: 'get', id, from: 'settle@example.org/x', to: this.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })), timeoutMs);
    await waitUntil(() => this.gateway.idle(), timeoutMs, 'gateway handlers idle');
  }

  async destroy(): Promise<void> {
    await this.gateway.stop().catch(() => undefined);
    await this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
