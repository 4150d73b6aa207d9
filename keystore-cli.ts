#!/usr/bin/env node
// The keystore command: `npm run keystore -- copy --from <sqlite path> --to <postgresql url>`
// copies a SQLite keystore (keys, sessions, trust, queues: every row) into an empty PostgreSQL one,
// so a running deployment moves to keystore.url without re-keying. The passphrase stays the same:
// it comes from GATEWAY_KEYSTORE_PASSPHRASE, or from keystore.passphrase of --config FILE.
// Stop the gateway first. Exit codes: 0 copied, 2 usage, 3 keystore error.
import { loadConfig } from './config.js';
import { ConfigError, GatewayError } from './errors.js';
import { Keystore } from './keystore/keystore.js';
import { PgBackend } from './keystore/pg/backend.js';
import { redactPassword } from './config.js';

const USAGE = 'usage: npm run keystore -- copy --from <sqlite path> --to <postgresql url> [--config FILE]\n(the passphrase: GATEWAY_KEYSTORE_PASSPHRASE, or keystore.passphrase in --config)';

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i >= 0) return argv[i + 1];
  const eq = argv.find((a) => a.startsWith(`${name}=`));
  return eq?.slice(name.length + 1);
}

function fail(code: number, message: string): never {
  process.stderr.write(`keystore: ${message}\n`);
  process.exit(code);
}

async function copy(argv: string[]): Promise<void> {
  const from = arg(argv, '--from');
  const to = arg(argv, '--to');
  if (!from || !to) fail(2, USAGE);
  if (!/^postgres(ql)?:\/\//.test(to)) fail(2, '--to must be a postgresql:// URL');
  const configFile = arg(argv, '--config');
  let passphrase = process.env.GATEWAY_KEYSTORE_PASSPHRASE;
  if (configFile) {
    try {
      passphrase = loadConfig(configFile).keystore.passphrase;
    } catch (e) {
      if (e instanceof ConfigError) fail(2, `configuration error: ${e.userText}`);
      throw e;
    }
  }
  if (!passphrase) fail(2, `no passphrase\n${USAGE}`);
  const started = Date.now();
  const ks = Keystore.open(from, passphrase);
  try {
    const meta = new Map(ks.db.prepare<[], { key: string; value: Buffer }>('SELECT key, value FROM meta').all().map((r) => [r.key, r.value]));
    const target = await PgBackend.openAsCopyOf(to, passphrase, meta);
    try {
      const n = await target.writeAll(ks.db, '0');
      process.stdout.write(`copied ${n} rows from ${from} to ${redactPassword(to)} in ${Date.now() - started} ms\n`);
    } finally {
      await target.close();
    }
  } finally {
    ks.close();
  }
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === 'copy') return copy(rest);
  fail(2, USAGE);
}

main().catch((e) => {
  if (e instanceof GatewayError) fail(3, e.userText);
  fail(1, `unexpected error: ${(e as Error).message}`);
});
