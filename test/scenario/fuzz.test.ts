// Issue 15, item 2: fuzzing the real gateway (connection, router, engines, keystore) through the fake
// XEP-0114 server, and its HTTP API. Seeded and reproducible: the seed is printed; FUZZ_SEED=<n>
// replays a run, FUZZ_STANZAS=<n> sets the stanzas per engine (default 10000).
// For each engine in FUZZ_ENGINES (test/harness/fuzz/engines.ts, which says how to add one): valid
// messages made by an engine of ours as a remote client, each followed by mutants of it. Then
// pubsub, disco, presence and command stanzas with odd values, then HTTP requests.
// Asserted: no exception escapes and no promise rejection goes unhandled; every iq get/set with an
// addressable sender is answered (result or error); a body reaches the bot's webhook at most once,
// and only from the sender who encrypted it; no plaintext body leaves the gateway; the connection is
// never cut; the heap after a GC stays bounded; the HTTP API never answers 500.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Element } from '../../component/xml.js';
import { parseJid } from '../../component/jid.js';
import { Scenario } from '../harness/scenario.js';
import { WebhookReceiver } from '../harness/webhook-receiver.js';
import { RemoteUsers } from '../harness/fuzz/remote.js';
import { FUZZ_ENGINES, otherStanza } from '../harness/fuzz/engines.js';
import { GENERIC, clone, type Mutator } from '../harness/fuzz/mutate.js';
import { Rng, fuzzSeed } from '../harness/fuzz/rng.js';
import { httpCase } from '../harness/fuzz/http.js';

const SEED = fuzzSeed();
const PER_ENGINE = Number(process.env.FUZZ_STANZAS ?? 10_000);
const MUTANTS_PER_VALID = 19;
const OTHER_STANZAS = Number(process.env.FUZZ_OTHER ?? 3000);
const HTTP_REQUESTS = Number(process.env.FUZZ_HTTP ?? 2000);
const BOT = 'alerts@gw.example.org';
const HOSTED = [BOT, 'bob\\40example.org@gw.example.org', 'carol\\40legacy.example@gw.example.org', 'zoe%example.org@gw.example.org'];
const HEAP_GROWTH_LIMIT = 200 * 1024 * 1024;

process.stdout.write(`# fuzz seed ${SEED} (FUZZ_SEED=${SEED} replays this run), ${PER_ENGINE} stanzas per engine\n`);

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const heap = () => {
  gc();
  return process.memoryUsage().heapUsed;
};

let s: Scenario;
let hook: WebhookReceiver;
let remote: RemoteUsers;
let heapStart = 0;
const rejections: unknown[] = [];
const onRejection = (r: unknown) => rejections.push(r);
/** body -> the bare JID that validly encrypted it */
const valid = new Map<string, string>();
/** ids of iqs that must be answered */
const mustAnswer = new Set<string>();
const connectionsAtStart = { n: 0 };

/** Waits until the gateway has read and handled everything injected so far (fast polling). */
async function settle(timeoutMs = 60_000): Promise<void> {
  const id = `settle-${Math.random().toString(36).slice(2)}`;
  const mark = s.server.received.length;
  const { xml } = await import('../../component/xml.js');
  s.server.inject(xml('iq', { type: 'get', id, from: 'settle@example.org/x', to: s.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  const deadline = Date.now() + timeoutMs;
  const answered = () => s.server.received.slice(mark).some((e) => e.attrs.id === id);
  while (!answered() || !s.gateway.idle()) {
    if (Date.now() > deadline) {
      const out = s.server.received.slice(mark);
      const last = out.slice(-3).map((e) => e.toString().slice(0, 300)).join('\n  ');
      throw new Error(`gateway did not settle within ${timeoutMs} ms (seed ${SEED}): ping answered ${answered()}, handlers idle ${s.gateway.idle()}, ${out.length} stanzas sent meanwhile; the last:\n  ${last}`);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

before(async () => {
  process.on('unhandledRejection', onRejection);
  hook = await WebhookReceiver.start();
  s = await Scenario.start({
    bots: [{ localpart: 'alerts', token: 'alerts-bot-token-scenario-0001', webhook: { url: hook.url, secret: hook.secret } }],
    // The engines are under test here, not the rate limits (test/scenario/limits.test.ts): at the
    // default 20 stanzas/s per sender most of the run would be refused before reaching them.
    extra: {
      limits: {
        sender_stanzas_per_second: 1_000_000,
        sender_stanza_burst: 1_000_000,
        domain_stanzas_per_second: 1_000_000,
        domain_stanza_burst: 1_000_000,
        identities_per_requester_per_minute: 1_000_000,
        identities_per_minute: 1_000_000,
        message_errors_per_contact_per_minute: 1_000_000,
      },
    },
  });
  remote = new RemoteUsers(s);
  connectionsAtStart.n = s.server.connections;
});

after(async () => {
  process.removeListener('unhandledRejection', onRejection);
  await s?.destroy();
  await hook?.stop();
});

const failAt = (what: string) => `${what} (seed ${SEED}; rerun with FUZZ_SEED=${SEED})`;

for (const engine of FUZZ_ENGINES) {
  test(`fuzz ${engine.name}: ${PER_ENGINE} stanzas (valid messages and mutants) through the real router into the real engine`, async () => {
    const rng = new Rng(SEED).fork(engine.name);
    const src = await engine.setup(s, remote);
    if (heapStart === 0) heapStart = heap();
    const mutators: Array<[string, Mutator]> = [...Object.entries(GENERIC), ...Object.entries(src.mutators)];
    const labels = new Map<string, number>();
    let sent = 0;
    let n = 0;
    try {
      while (sent < PER_ENGINE) {
        const body = `fz-${engine.name}-${n++}-${rng.bytes(6).toString('hex')}`;
        const { stanza, from } = await src.message(BOT, body);
        valid.set(body, from);
        s.server.inject(stanza);
        sent++;
        // The genuine copy first: a replay can only follow what it copies.
        await settle();
        for (let i = 0; i < MUTANTS_PER_VALID && sent < PER_ENGINE; i++) {
          const [name, mutate] = rng.pick(mutators);
          const m: Element = clone(stanza);
          // one mutation, sometimes two stacked
          mutate(m, rng);
          if (rng.chance(0.2)) rng.pick(mutators)[1](m, rng);
          labels.set(name, (labels.get(name) ?? 0) + 1);
          s.server.inject(m);
          sent++;
        }
        await settle();
      }
    } finally {
      await src.close();
    }
    process.stdout.write(`# ${engine.name}: ${sent} stanzas, ${n} valid; mutators used: ${[...labels].map(([k, v]) => `${k} ${v}`).join(', ')}\n`);
    assert.deepEqual(rejections, [], failAt('unhandled rejections'));
    assert.equal(s.server.connections, connectionsAtStart.n, failAt('the component connection was cut'));
    assert.equal(s.server.notWellFormed, 0, failAt('the gateway wrote XML a server refuses'));
    await waitForWebhooks();
    checkWebhooks();
    const mine = hook.messages().filter((m) => String(m.body).startsWith(`fz-${engine.name}-`));
    process.stdout.write(`# ${engine.name}: ${mine.length} of ${n} valid messages delivered\n`);
    // the pipeline works (else the fuzz would prove nothing), and where no known bug interferes,
    // every valid message got through exactly once: the mutants neither blocked nor duplicated it
    assert.ok(mine.length > 0, failAt(`no valid ${engine.name} message delivered`));
    if (engine.deliversEvery) assert.equal(mine.length, n, failAt(`each of the ${n} valid ${engine.name} messages delivered once`));
  });
}

test(`fuzz: ${OTHER_STANZAS} pubsub, disco, presence and command stanzas with odd values; every iq get/set is answered`, async () => {
  const rng = new Rng(SEED).fork('other');
  for (let i = 0; i < OTHER_STANZAS; i++) {
    const { el, mustAnswer: must } = otherStanza(rng, s.domain, i, HOSTED);
    if (rng.chance(0.15)) GENERIC[rng.pick(['odd from', 'odd to', 'absurd attribute', 'element removed', 'element repeated'])]!(el, rng);
    const type = String(el.attrs.type ?? '');
    let addressable = false;
    try {
      parseJid(String(el.attrs.from ?? ''));
      parseJid(String(el.attrs.to ?? ''));
      addressable = true;
    } catch {
      // the router may not be able to answer an address it cannot parse
    }
    if (must && addressable && el.name === 'iq' && (type === 'get' || type === 'set') && String(el.attrs.id ?? '').startsWith('fz-iq-')) mustAnswer.add(String(el.attrs.id));
    s.server.inject(el);
    if (i % 100 === 99) await settle();
  }
  await settle();
  const answered = new Map<string, string>();
  for (const e of s.server.received) if (e.name === 'iq' && mustAnswer.has(String(e.attrs.id))) answered.set(String(e.attrs.id), String(e.attrs.type));
  const missing = [...mustAnswer].filter((id) => !answered.has(id));
  assert.deepEqual(missing.slice(0, 10), [], failAt(`${missing.length} of ${mustAnswer.size} iq get/set unanswered`));
  assert.ok([...answered.values()].every((t) => t === 'result' || t === 'error'), failAt('answers are results or errors'));
  assert.deepEqual(rejections, [], failAt('unhandled rejections'));
  assert.equal(s.server.connections, connectionsAtStart.n, failAt('the component connection was cut'));
  assert.equal(s.server.notWellFormed, 0, failAt('the gateway wrote XML a server refuses'));
});

test(`fuzz: ${HTTP_REQUESTS} HTTP requests (malformed JSON, odd encodings, paths and JIDs) never get a 500`, async () => {
  const rng = new Rng(SEED).fork('http');
  const base = s.gateway.httpUrl;
  const statuses = new Map<number, number>();
  for (let i = 0; i < HTTP_REQUESTS; i++) {
    const c = httpCase(rng, i);
    const res = await fetch(`${base}${c.path}`, { method: c.method, headers: c.headers, ...(c.body !== undefined ? { body: c.body } : {}) }).catch((e: unknown) => e as Error);
    if (res instanceof Error) throw new Error(failAt(`request ${c.method} ${c.path.slice(0, 80)} failed: ${res.message}`));
    const text = await res.text();
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    assert.ok(res.status < 500 || res.status === 503, failAt(`${c.what}: ${c.method} ${c.path.slice(0, 80)} -> ${res.status} ${text.slice(0, 200)}`));
    if (res.status >= 400 && c.path.startsWith('/v1')) {
      assert.match(text, /^\{"error":\{"code":"[a-z_]+","message":/, failAt(`${c.what}: JSON error for ${res.status}`));
    }
    assert.doesNotMatch(text, /\bat [^\s]+\.js:\d+/, failAt(`${c.what}: a stack trace in the answer`));
  }
  process.stdout.write(`# http: ${[...statuses].sort((a, b) => a[0] - b[0]).map(([k, v]) => `${k}: ${v}`).join(', ')}\n`);
  assert.deepEqual(rejections, [], failAt('unhandled rejections'));
});

test('fuzz: nothing reached a webhook unless validly encrypted by its sender; no plaintext left the gateway; memory bounded', async () => {
  await settle();
  checkWebhooks();
  // No body we encrypted appears in anything the gateway sent (error replies quote no payloads).
  const bodies = [...valid.keys()];
  for (const e of s.server.received) {
    const text = e.toString();
    if (!text.includes('fz-')) continue;
    const leaked = bodies.find((b) => text.includes(b));
    assert.equal(leaked, undefined, failAt(`a plaintext body left the gateway in a <${e.name}> to ${e.attrs.to}`));
  }
  // What the fake server kept of the gateway's output (100k+ stanzas) is the harness's memory, not
  // the gateway's: let it go before measuring.
  const out = s.server.received.length;
  s.server.received.length = 0;
  const growth = heap() - heapStart;
  process.stdout.write(`# heap growth after GC: ${(growth / 1048576).toFixed(1)} MB; stanzas out: ${out}\n`);
  assert.ok(growth < HEAP_GROWTH_LIMIT, failAt(`heap grew by ${(growth / 1048576).toFixed(0)} MB`));
});

/** Waits until the webhook queue has nothing pending (every decrypted message was POSTed). */
async function waitForWebhooks(): Promise<void> {
  const deadline = Date.now() + 60_000;
  const pending = () => s.gateway.webhookStore.counts().filter((c) => c.status === 'pending').reduce((a, c) => a + c.n, 0);
  while (pending() > 0) {
    if (Date.now() > deadline) throw new Error(failAt('webhook deliveries still pending after 60 s'));
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Every delivered body was validly encrypted, by the sender it is delivered as, and only once. */
function checkWebhooks(): void {
  const count = new Map<string, number>();
  for (const m of hook.messages()) {
    const body = String(m.body);
    const sender = valid.get(body);
    assert.ok(sender !== undefined, failAt(`a webhook delivery of a body nobody validly encrypted (${body.slice(0, 40)})`));
    assert.equal(m.from, sender, failAt(`"${body}" delivered as from ${String(m.from)}, encrypted by ${sender}`));
    count.set(body, (count.get(body) ?? 0) + 1);
  }
  const twice = [...count].filter(([, c]) => c > 1);
  assert.deepEqual(twice, [], failAt('bodies delivered more than once (a replay got through)'));
  assert.deepEqual(hook.badSignatures, []);
}
