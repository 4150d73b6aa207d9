#!/usr/bin/env node
// Entry point: the only module that reads argv and the environment and calls process.exit.
//   npm start -- --config FILE     (or GATEWAY_CONFIG=FILE npm start)
// Exit codes: 0 clean stop, 1 unexpected error, 2 usage or configuration error, 3 keystore cannot be
// opened (e.g. wrong passphrase), 4 the XMPP server refused the component (secret or domain).
import { loadConfig } from './config.js';
import { ConfigError, GatewayError } from './errors.js';
import { createLogger, errorSummary } from './log.js';
import { Gateway } from './context.js';
import { HaInstance } from './ha/instance.js';
import { installProcessPolicy } from './process-policy.js';

const USAGE = 'usage: npm start -- --config FILE   (or set GATEWAY_CONFIG=FILE)';

function configPath(argv: string[]): string | null {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c') return argv[i + 1] ?? null;
    if (a.startsWith('--config=')) return a.slice('--config='.length);
  }
  return process.env.GATEWAY_CONFIG || null;
}

function fail(code: number, message: string): never {
  process.stderr.write(`xmpp-e2ee-gateway: ${message}\n`);
  process.exit(code);
}

async function main(): Promise<void> {
  // Before anything else can fail: our handlers, and none of a dependency's (process-policy.ts).
  const policy = installProcessPolicy();
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const file = configPath(argv);
  if (!file) fail(2, `no configuration file given\n${USAGE}`);

  let gateway: Gateway | HaInstance;
  try {
    const config = loadConfig(file);
    const log = createLogger(process.env.LOG_LEVEL ?? config.log.level);
    // keystore.url: one of several instances (active or standby); keystore.path: the only one.
    gateway = config.keystore.url ? new HaInstance(config, { log }) : new Gateway(config, { log });
  } catch (e) {
    if (e instanceof ConfigError) fail(2, `configuration error: ${e.userText}`);
    if (e instanceof GatewayError && (e.code === 'keystore_passphrase_wrong' || e.code === 'keystore_unavailable')) fail(3, `keystore error: ${e.userText}`);
    throw e;
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    gateway.log.info({ signal }, 'signal received, shutting down');
    const force = setTimeout(() => fail(1, 'shutdown took longer than 30 s; exiting'), 30000);
    force.unref();
    gateway.stop().then(
      () => process.exit(0),
      (e) => {
        gateway.log.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  policy.bind({ log: gateway.log, count: (kind) => gateway.metrics.errors.inc({ kind }) });
  if (policy.removed > 0) gateway.log.info({ removed: policy.removed }, "dependencies' process-wide error handlers removed");

  try {
    await gateway.start();
  } catch (e) {
    await gateway.stop().catch(() => undefined);
    if (e instanceof GatewayError && e.code === 'component_auth_failed') fail(4, `component error: ${e.userText}`);
    if (e instanceof GatewayError && (e.code === 'keystore_passphrase_wrong' || e.code === 'keystore_unavailable')) fail(3, `keystore error: ${e.userText}`);
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') fail(2, `configuration error: http.port: ${gateway.config.http.port} is already in use`);
    throw e;
  }
}

main().catch((e) => {
  process.stderr.write(`xmpp-e2ee-gateway: unexpected error: ${JSON.stringify(errorSummary(e))}\n`);
  process.exit(1);
});
