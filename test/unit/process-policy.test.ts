// The process policy (process-policy.ts): an unhandled rejection or an uncaught exception is ours to
// decide; libsignal's asm.js curve module installs handlers that exit with code 7 (issue 15, bug 1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const child = fileURLToPath(new URL('../harness/policy-child.js', import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [child, ...args], { encoding: 'utf8', timeout: 30_000 });

test("without our policy, libsignal's curve module ends the process on an unhandled rejection (exit 7)", () => {
  const r = run();
  assert.equal(r.status, 7, r.stderr);
});

test('with our policy the dependency handlers are gone, the process stays up, and both events are counted and logged', () => {
  const r = run('--policy');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  // what the curve module installed at import (its rejection handler is emscripten's abort)
  assert.deepEqual(out.foreignBefore.unhandledRejection, ['abort']);
  assert.equal(out.foreignBefore.uncaughtException.length, 1);
  // both of those, plus the one added later
  assert.equal(out.removed, 3);
  assert.deepEqual(out.after, { unhandledRejection: 1, uncaughtException: 1 });
  assert.deepEqual(out.counts, { unhandled_rejection: 1, uncaught_exception: 1 });
  assert.equal(out.logged, 2);
});
