// Preloaded into the gateway process by the bots benchmark (`--import` through NODE_OPTIONS, which
// does not allow --cpu-prof) when BENCH_GATEWAY_CPU_PROF=DIR is set. At exit it writes into DIR:
//   gateway-<pid>.cpuprofile   CPU profile of the whole process (Chrome DevTools, or speedscope)
//   gateway-<pid>.heapprofile  sampled allocations, collected ones included (where garbage comes from)
//   gateway-<pid>.gc.json      every GC pause: kind, start and duration in ms
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
  session.post('Profiler.start');
  session.post('HeapProfiler.enable');
  session.post('HeapProfiler.startSampling', { samplingInterval: 64 * 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  const gcs: Array<{ kind: string; at: number; ms: number }> = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push({ kind: kinds[(e as unknown as { detail: { kind: number } }).detail.kind] ?? 'other', at: Math.round(e.startTime), ms: Number(e.duration.toFixed(2)) });
  });
  obs.observe({ entryTypes: ['gc'] });
  process.once('exit', () => {
    // Same-thread session: callbacks run synchronously, so this works inside 'exit'.
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(join(dir, `gateway-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
    session.post('HeapProfiler.stopSampling', (err, res) => {
      if (!err) writeFileSync(join(dir, `gateway-${process.pid}.heapprofile`), JSON.stringify(res.profile));
    });
    writeFileSync(join(dir, `gateway-${process.pid}.gc.json`), JSON.stringify(gcs));
  });
}
