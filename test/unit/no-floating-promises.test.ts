// No discarded promise in the gateway's code (issue 15: one presence stanza ended the process through
// an unhandled rejection). See test/harness/floating-promises.ts for what counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { findFloatingPromises } from '../harness/floating-promises.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

test('no promise in the gateway is discarded (floating, void-ed, or handed to a void callback)', () => {
  const found = findFloatingPromises(`${root}tsconfig.build.json`);
  assert.deepEqual(found.map((f) => `${f.file}:${f.line} ${f.rule}: ${f.text}`), []);
});

test('the lint sees each kind of discarded promise (fixture)', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(`${tmpdir()}/lint-`);
  try {
    writeFileSync(`${dir}/tsconfig.json`, JSON.stringify({ compilerOptions: { strict: true, target: 'ES2022', module: 'NodeNext', lib: ['ES2023'], types: [] }, include: ['*.ts'] }));
    writeFileSync(
      `${dir}/x.ts`,
      [
        'declare function p(): Promise<number>;',
        'declare function on(cb: () => void): void;',
        'interface L { hit(): void }',
        'export async function f() {',
        '  p();', // floating
        '  void p();', // void-promise
        '  p().then(() => 1);', // floating (no rejection handler)
        '  on(async () => { await p(); });', // promise-to-void-callback
        '  const l: L = { async hit() { await p(); } };', // promise-to-void-callback
        '  p().catch(() => 0);', // fine
        '  void p().then(() => 1, () => 2);', // fine
        '  await p();', // fine
        '  return l;',
        '}',
      ].join('\n'),
    );
    const found = findFloatingPromises(`${dir}/tsconfig.json`);
    assert.deepEqual(found.map((f) => `${f.line} ${f.rule}`), ['5 floating', '6 void-promise', '7 floating', '8 promise-to-void-callback', '9 promise-to-void-callback']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
