// Child process for test/unit/process-policy.test.ts: loads libsignal's curve (its asm.js module
// installs process-wide handlers, as any emscripten dependency may), optionally installs our policy, then lets a
// promise reject unhandled and a timer throw. Prints one JSON line of what it saw, then exits 0 if
// it is still alive.
import { libraryCurve } from './libsignal-curve.js';
import { installProcessPolicy } from '../../process-policy.js';

const withPolicy = process.argv.includes('--policy');
await libraryCurve();
const foreignBefore = {
  unhandledRejection: process.listeners('unhandledRejection').map((l) => l.name || 'anonymous'),
  uncaughtException: process.listeners('uncaughtException').map((l) => l.name || 'anonymous'),
};
const counts: Record<string, number> = {};
const logged: unknown[] = [];
const policy = withPolicy
  ? installProcessPolicy({ count: (k) => void (counts[k] = (counts[k] ?? 0) + 1), log: { error: (o: unknown) => logged.push(o) } as never })
  : null;
// A listener some module adds later, the way a lazily instantiated emscripten module would.
process.on('unhandledRejection', function abort() {
  throw new Error('a dependency decided');
});
await new Promise((r) => setTimeout(r, 10));
void Promise.reject(new Error('rejected on purpose'));
setTimeout(() => {
  throw new Error('thrown on purpose');
}, 20);
await new Promise((r) => setTimeout(r, 200));
process.stdout.write(
  `${JSON.stringify({
    foreignBefore,
    removed: policy?.removed ?? 0,
    after: { unhandledRejection: process.listenerCount('unhandledRejection'), uncaughtException: process.listenerCount('uncaughtException') },
    counts,
    logged: logged.length,
  })}\n`,
);
process.exit(0);
