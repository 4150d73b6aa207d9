// What the process does with an unhandled rejection or an uncaught exception: our decision, not a
// dependency's. libsignal's asm.js curve module (emscripten output, curve25519-typescript's
// built/curveasm.js) installs, when it is first imported, an 'unhandledRejection' listener that
// aborts and an 'uncaughtException' listener that rethrows: either ends the process with exit code 7.
// One presence stanza did exactly that (issue 15). The policy:
//   - every listener on these two events that is not ours is removed, now and whenever one is
//     added later (a module instantiated lazily);
//   - each event is logged as an error summary (class, code, message, first stack lines: never a
//     body or key, which our errors do not carry) and counted in gateway_errors_total{kind};
//   - the process stays up: peer input must never be a way to stop it. Handlers are meant to turn
//     such input into values (a lint in test/unit/no-floating-promises.test.ts finds discarded
//     promises); reaching this policy is a bug to fix, which the metric makes visible.
import type { Logger } from './log.js';
import { errorSummary } from './log.js';

const EVENTS = ['unhandledRejection', 'uncaughtException'] as const;
type PolicyEvent = (typeof EVENTS)[number];

export interface PolicySinks {
  log?: Pick<Logger, 'error'>;
  count?: (kind: 'unhandled_rejection' | 'uncaught_exception') => void;
}

export interface ProcessPolicy {
  /** Where events go from now on (the logger and metrics exist only once the gateway is built). */
  bind(sinks: PolicySinks): void;
  /** How many foreign listeners were removed so far. */
  readonly removed: number;
  uninstall(): void;
}

type Listener = (...args: unknown[]) => void;

/** Installs the policy on `proc` (the real process by default). Idempotent per process object. */
export function installProcessPolicy(sinks: PolicySinks = {}, proc: NodeJS.Process = process): ProcessPolicy {
  let current = sinks;
  let removed = 0;
  const report = (kind: 'unhandled_rejection' | 'uncaught_exception', err: unknown) => {
    try {
      current.count?.(kind);
      const msg = kind === 'unhandled_rejection' ? 'unhandled rejection' : 'uncaught exception';
      if (current.log) current.log.error({ err, kind }, msg);
      else proc.stderr.write(`${JSON.stringify({ level: 'error', kind, err: errorSummary(err) })}\n`);
    } catch {
      // A failing logger must not turn the report into a second uncaught exception.
    }
  };
  const ours: Record<PolicyEvent, Listener> = {
    unhandledRejection: (reason) => report('unhandled_rejection', reason),
    uncaughtException: (err) => report('uncaught_exception', err),
  };
  const purge = (event: PolicyEvent) => {
    for (const l of (proc as NodeJS.EventEmitter).listeners(event)) {
      if (l === ours[event]) continue;
      (proc as NodeJS.EventEmitter).removeListener(event, l as Listener);
      removed++;
    }
  };
  // 'newListener' fires before the listener is added: remove it once it is in place.
  const watch = (event: string | symbol) => {
    if (event === 'unhandledRejection' || event === 'uncaughtException') queueMicrotask(() => purge(event));
  };
  for (const e of EVENTS) {
    purge(e);
    (proc as NodeJS.EventEmitter).on(e, ours[e]);
  }
  proc.on('newListener', watch);
  return {
    bind(s) {
      current = s;
    },
    get removed() {
      return removed;
    },
    uninstall() {
      proc.removeListener('newListener', watch);
      for (const e of EVENTS) (proc as NodeJS.EventEmitter).removeListener(e, ours[e]);
    },
  };
}
