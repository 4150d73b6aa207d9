#!/usr/bin/env node
// Runs the compiled tests with node's own test runner: `node scripts/run-tests.mjs [unit|e2e|interop ...]`.
// Node 20's runner takes no globs and treats every file under a `test` folder as a test, so we list
// the *.test.js files ourselves.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
const only = process.argv.slice(2);

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : name.endsWith('.test.js') ? [p] : [];
  });
}

const files = walk(root)
  .filter((f) => only.length === 0 || only.some((o) => relative(root, f).startsWith(o)))
  .sort();
if (files.length === 0) {
  console.error(`no test files found under ${root} for ${only.join(' ') || 'all'}`);
  process.exit(1);
}
const args = ['--enable-source-maps', '--test', `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`, ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
