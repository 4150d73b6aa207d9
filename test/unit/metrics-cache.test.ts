// CachedCounter/CachedHistogram (http/metrics.ts) must be indistinguishable from prom-client's own
// Counter/Histogram: the same operations give the same /metrics text and the same errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Histogram, Registry } from 'prom-client';
import { CachedCounter, CachedHistogram, Metrics } from '../../http/metrics.js';

type Pair = { registry: Registry; c: Counter<'protocol' | 'result'>; h: Histogram<'op'>; u: Histogram<string> };

function pair(cached: boolean): Pair {
  const registry = new Registry();
  const C = cached ? CachedCounter : Counter;
  const H = cached ? CachedHistogram : Histogram;
  return {
    registry,
    c: new C({ name: 'c_total', help: 'c', labelNames: ['protocol', 'result'] as const, registers: [registry] }),
    h: new H({ name: 'h_seconds', help: 'h', labelNames: ['op'] as const, buckets: [0.001, 0.01, 0.1], registers: [registry] }),
    u: new H({ name: 'u_seconds', help: 'u', buckets: [1, 2], registers: [registry] }),
  };
}

function errorOf(fn: () => void): string {
  try {
    fn();
    return 'none';
  } catch (e) {
    return (e as Error).message;
  }
}

async function script(p: Pair): Promise<string[]> {
  const out: string[] = [];
  const ok = p.c.labels({ protocol: 'omemo', result: 'ok' });
  out.push(await p.registry.metrics()); // a child not yet counted shows nothing
  p.c.inc({ protocol: 'omemo', result: 'ok' });
  ok.inc();
  ok.inc(2.5);
  ok.inc(0);
  p.c.labels('pgp', 'failed').inc();
  p.c.inc({ result: 'partial' });
  p.c.labels({ protocol: 'otr', result: 'ok' }).inc(0);
  // An empty label value is a label set of its own, not a missing label; a number is its String().
  p.c.inc({ protocol: '', result: 'ok' });
  p.c.inc({ result: 'ok' }, 2);
  p.c.inc({ protocol: 7 as unknown as string, result: 'ok' });
  p.c.labels('7', 'ok').inc(2);
  out.push(errorOf(() => ok.inc(-1)));
  out.push(errorOf(() => ok.inc(Number.POSITIVE_INFINITY)));
  out.push(errorOf(() => p.c.inc({ protocol: 'x', nope: 'y' } as never)));
  out.push(errorOf(() => p.c.labels('only-one')));
  const enc = p.h.labels({ op: 'encrypt' });
  for (const v of [0.0005, 0.001, 0.005, 0.5, 0]) enc.observe(v);
  p.h.observe({ op: 'encrypt' }, 0.02);
  p.h.observe({ op: 'decrypt' }, 0.002);
  p.u.observe(1.5);
  p.u.observe(3);
  out.push(errorOf(() => enc.observe(Number.POSITIVE_INFINITY)));
  out.push(await p.registry.metrics());
  p.c.reset();
  p.h.reset();
  ok.inc();
  enc.observe(0.05);
  out.push(await p.registry.metrics());
  p.c.remove({ protocol: 'omemo', result: 'ok' });
  ok.inc(3);
  p.h.remove('encrypt');
  enc.observe(0.0001);
  out.push(await p.registry.metrics());
  return out;
}

test('cached counters and histograms render exactly as prom-client, through reset() and remove()', async () => {
  const plain = await script(pair(false));
  const cached = await script(pair(true));
  assert.deepEqual(cached, plain);
  // The script did count something (a test that compares two empty outputs could not fail).
  assert.match(plain.at(-3)!, /c_total\{protocol="omemo",result="ok"\} 4.5/);
  assert.match(plain.at(-3)!, /h_seconds_bucket\{le="0.01",op="encrypt"\} 4/);
});

test('a timer of a cached histogram observes into its label set', async () => {
  const m = new Metrics({ processMetrics: false });
  const end = m.cryptoSeconds.startTimer({ protocol: 'omemo', operation: 'encrypt' });
  const seconds = end();
  assert.ok(seconds >= 0);
  const v = (await m.cryptoSeconds.get()).values.find((x) => x.metricName === 'gateway_crypto_operation_seconds_count');
  assert.deepEqual(v?.labels, { protocol: 'omemo', operation: 'encrypt' });
  assert.equal(v?.value, 1);
});

test('label sets beyond the cached ones are still counted', async () => {
  const m = new Metrics({ processMetrics: false });
  for (let i = 0; i < 1100; i++) m.stanzasIn.inc({ kind: `k${i}` });
  for (let i = 0; i < 1100; i++) m.cryptoSeconds.observe({ protocol: 'p', operation: `o${i}` }, 0.001);
  m.stanzasIn.inc({ kind: 'k1099' });
  m.cryptoSeconds.startTimer({ protocol: 'p', operation: 'o1099' })();
  const ins = (await m.stanzasIn.get()).values;
  assert.equal(ins.length, 1100);
  assert.equal(ins.find((v) => v.labels.kind === 'k1099')?.value, 2);
  const counts = (await m.cryptoSeconds.get()).values.filter((v) => v.metricName === 'gateway_crypto_operation_seconds_count');
  assert.equal(counts.length, 1100);
  assert.equal(counts.find((v) => v.labels.operation === 'o1099')?.value, 2);
});

test('a histogram without labels takes the cached path (its entry is made by prom-client before any observation)', async () => {
  const m = new Metrics({ processMetrics: false });
  const h = m.acceptToSentSeconds as unknown as { hashMap: Record<string, { count: number }> };
  m.acceptToSentSeconds.observe(0.003);
  // prom-client's own observe() stores the entry again on every call; the cached path never does.
  let stores = 0;
  h.hashMap = new Proxy(h.hashMap, { set: (t, k, v) => ((stores++, (t as Record<string | symbol, unknown>)[k] = v), true) });
  m.acceptToSentSeconds.observe(0.3);
  assert.equal(stores, 0);
  assert.match((await m.render()).body, /gateway_accept_to_sent_seconds_count 2/);
});
