// The production build (Dockerfile, tsconfig.build.json) must carry every folder of gateway code:
// a new top-level folder that main.ts imports but the image does not copy builds here (tsc follows
// the import) and fails only in `docker build`, which CI cannot run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('../../../', import.meta.url).pathname;
const NOT_SHIPPED = new Set(['test', 'bench', 'scripts', 'types', 'dist', 'node_modules']);

function hasTs(dir: string): boolean {
  return readdirSync(dir).some((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? hasTs(p) : n.endsWith('.ts');
  });
}

test('every top-level folder of gateway code is copied by the Dockerfile and compiled by tsconfig.build.json', () => {
  const folders = readdirSync(root).filter((n) => !n.startsWith('.') && !NOT_SHIPPED.has(n) && statSync(join(root, n)).isDirectory() && hasTs(join(root, n)));
  assert.ok(folders.includes('component') && folders.includes('keystore'), `found ${folders.join(', ')}`);
  const docker = readFileSync(join(root, 'Dockerfile'), 'utf8');
  const build = JSON.parse(readFileSync(join(root, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
  for (const f of folders) {
    assert.match(docker, new RegExp(`^COPY ${f} \\./${f}$`, 'm'), `Dockerfile: COPY ${f} ./${f}`);
    assert.ok(build.include.includes(`${f}/**/*.ts`), `tsconfig.build.json: include ${f}/**/*.ts`);
  }
  assert.match(docker, /^COPY \*\.ts \.\/$/m, 'Dockerfile: the top-level modules');
});
