// Preloaded into the gateway process by the bots benchmark (`--import` through NODE_OPTIONS, which
// does not allow --cpu-prof) when BENCH_GATEWAY_CPU_PROF=DIR is set. It writes into DIR, for each
// segment of the process's life:
//   gateway-<pid>-<n>.cpuprofile   CPU profile (Chrome DevTools, or speedscope; summary:
//                                  node dist/bench/profile-summary.js FILE)
//   gateway-<pid>-<n>.heapprofile  sampled allocations, collected ones included (where garbage comes from)
//   gateway-<pid>-<n>.gc.json      every GC pause of the segment: kind, start and duration in ms
//   gateway-<pid>-<n>.stalls.json  every event-loop turn over 20 ms: when it began (ms since the
//                                  segment's profile started: line it up with the samples) and how long
//   gateway-<pid>-<n>.done         written last: the segment's files are complete
// A segment ends at SIGUSR2 (the bench sends it around the runs it wants profiled on their own, and
// before it stops the gateway, so a slow exit under SIGTERM cannot lose the profile; profiling
// then starts again for the next segment) and at exit (what is left, if the exit leaves time).
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver, constants } from 'node:perf_hooks';

const dir = process.env.BENCH_GATEWAY_CPU_PROF;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.enable');
  session.post('HeapProfiler.enable');
  let profiledAt = performance.now();
  const start = () => {
    session.post('Profiler.start');
    profiledAt = performance.now();
    session.post('HeapProfiler.startSampling', { samplingInterval: 64 * 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
  };
  start();
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  let gcs: Array<{ kind: string; at: number; ms: number }> = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push({ kind: kinds[(e as unknown as { detail: { kind: number } }).detail.kind] ?? 'other', at: Math.round(e.startTime), ms: Number(e.duration.toFixed(2)) });
  });
  obs.observe({ entryTypes: ['gc'] });
  // A 5 ms timer: when it fires more than 20 ms late, the turns since it last ran took that long.
  let stalls: Array<{ at: number; ms: number }> = [];
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    if (now - last > 25) stalls.push({ at: Math.round(last - profiledAt), ms: Math.round(now - last - 5) });
    last = now;
  }, 5).unref();
  let segment = 0;
  // Same-thread session: callbacks run synchronously, so this works inside 'exit' too.
  const flush = () => {
    const base = join(dir, `gateway-${process.pid}-${++segment}`);
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(`${base}.cpuprofile`, JSON.stringify(res.profile));
    });
    session.post('HeapProfiler.stopSampling', (err, res) => {
      if (!err) writeFileSync(`${base}.heapprofile`, JSON.stringify(res.profile));
    });
    writeFileSync(`${base}.gc.json`, JSON.stringify(gcs));
    gcs = [];
    writeFileSync(`${base}.stalls.json`, JSON.stringify(stalls));
    stalls = [];
    writeFileSync(`${base}.done`, '');
  };
  process.on('SIGUSR2', () => {
    flush();
    start();
  });
  process.once('exit', flush);
}
