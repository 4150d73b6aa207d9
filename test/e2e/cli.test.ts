// The gateway as a user starts it: `node dist/main.js --config FILE` (what `npm start` runs).
// Clear errors and exit codes for bad config, a wrong keystore passphrase and a wrong component
// secret; a clean exit 0 on SIGTERM.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Prosody } from '../harness/prosody.js';
import { rawConfig, waitUntil } from '../harness/gateway.js';
import { freePort } from '../harness/ports.js';

const MAIN = new URL('../../main.js', import.meta.url).pathname;
let server: Prosody;
let dir: string;

before(async () => {
  server = await Prosody.start();
  dir = mkdtempSync(join(tmpdir(), 'gw-cli-'));
});

after(async () => {
  await server?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}, opts: { untilLog?: RegExp; signal?: NodeJS.Signals; timeoutMs?: number; beforeSignal?: () => void } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`gateway did not finish in time; stdout: ${stdout.slice(-2000)} stderr: ${stderr}`));
    }, opts.timeoutMs ?? 20000);
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
      if (opts.untilLog && opts.signal && opts.untilLog.test(stdout)) {
        opts.untilLog = undefined;
        opts.beforeSignal?.();
        child.kill(opts.signal);
      }
    });
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function writeConfig(name: string, cfg: Record<string, unknown>): string {
  const file = join(dir, name);
  writeFileSync(file, stringify(cfg));
  return file;
}

test('no config given: usage and exit 2', async () => {
  const r = await run([]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no configuration file given/);
});

test('a bad config names the key and exits 2, without a stack trace', async () => {
  const cfg = rawConfig(server, dir);
  (cfg.component as Record<string, unknown>).secret = '${UNSET_SECRET_VAR}';
  const r = await run(['--config', writeConfig('bad.yaml', cfg)]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /configuration error: component\.secret: environment variable UNSET_SECRET_VAR is not set/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  const missing = await run(['--config', join(dir, 'nope.yaml')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /nope\.yaml: cannot be read/);
});

test('GATEWAY_CONFIG names the file; SIGTERM after connecting exits 0', async () => {
  const cfg = rawConfig(server, dir);
  (cfg.keystore as Record<string, unknown>).path = join(dir, 'sigterm.db');
  (cfg.http as Record<string, unknown>).port = await freePort();
  (cfg.log as Record<string, unknown>).level = 'info';
  const r = await run([], { GATEWAY_CONFIG: writeConfig('ok.yaml', cfg) }, { untilLog: /component connected/, signal: 'SIGTERM' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /"msg":"stopped"/);
});

test('a wrong keystore passphrase exits 3 with a clear message', async () => {
  const cfg = rawConfig(server, dir);
  const path = join(dir, 'pass.db');
  (cfg.keystore as Record<string, unknown>).path = path;
  (cfg.http as Record<string, unknown>).port = await freePort();
  (cfg.log as Record<string, unknown>).level = 'info';
  const first = await run(['--config', writeConfig('pass1.yaml', cfg)], {}, { untilLog: /component connected/, signal: 'SIGTERM' });
  assert.equal(first.code, 0, first.stderr);
  (cfg.keystore as Record<string, unknown>).passphrase = 'a different passphrase';
  const r = await run(['--config', writeConfig('pass2.yaml', cfg)]);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /keystore error: keystore\.passphrase: does not open this keystore/);
});

test('a wrong component secret exits 4 saying the server refused the secret', async () => {
  const cfg = rawConfig(server, dir);
  (cfg.component as Record<string, unknown>).secret = 'not-the-right-secret';
  (cfg.keystore as Record<string, unknown>).path = join(dir, 'secret.db');
  (cfg.http as Record<string, unknown>).port = await freePort();
  const r = await run(['--config', writeConfig('secret.yaml', cfg)]);
  assert.equal(r.code, 4);
  assert.match(r.stderr, /refused the component secret \(component\.secret\)/);
});

test('the server down at startup is not fatal: the gateway waits and connects when it appears', async () => {
  const other = await Prosody.start();
  await other.stop();
  try {
    const cfg = rawConfig(other, dir);
    (cfg.keystore as Record<string, unknown>).path = join(dir, 'late.db');
    const port = await freePort();
    (cfg.http as Record<string, unknown>).port = port;
    (cfg.log as Record<string, unknown>).level = 'info';
    const running = run(['--config', writeConfig('late.yaml', cfg)], {}, { untilLog: /component connected/, signal: 'SIGTERM', timeoutMs: 30000 });
    await waitUntil(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 503, 10000, 'readyz 503 while the server is down');
    await other.start();
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
  } finally {
    await other.destroy();
  }
});

// Not a speed test: the bound catches a shutdown that hangs on a server that no longer answers
// (it used to wait 10 s for the stream close, then 10 s more for the socket).
test('SIGTERM while the server has stopped answering still ends in a clean exit 0, without hanging', async () => {
  const other = await Prosody.start();
  try {
    const cfg = rawConfig(other, dir);
    (cfg.keystore as Record<string, unknown>).path = join(dir, 'frozen.db');
    (cfg.http as Record<string, unknown>).port = await freePort();
    (cfg.log as Record<string, unknown>).level = 'info';
    const r = await run(['--config', writeConfig('frozen.yaml', cfg)], {}, { untilLog: /component connected/, signal: 'SIGTERM', timeoutMs: 8000, beforeSignal: () => other.freeze() });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /"msg":"stopped"/);
  } finally {
    other.thaw();
    await other.destroy();
  }
});
