// Shared set-up for the XEP-0027 engine's unit tests: engine ports over an in-memory keystore, captured
// logs (to check that no plaintext reaches them), and stanza helpers.
import { Writable } from 'node:stream';
import { Keystore } from '../../keystore/keystore.js';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { TrustStore } from '../../keystore/trust-store.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { parseXml, xml, type Element } from '../../component/xml.js';
import type { EnginePorts, PubsubPort } from '../../bridges/engine.js';
import { createPgpEngine, type PgpEngine, type PgpEngineOptions } from '../../bridges/pgp/engine.js';
import type { TrustPolicy } from '../../config.js';

export const GW = 'gw.example.org';
export const BOT = `alerts@${GW}`;
export const PROXY = `bob\\40example.org@${GW}`;

export const openTestKeystore = (): Keystore => Keystore.open(':memory:', 'passphrase-for-tests', { kdf: { N: 1024, r: 8, p: 1 } });

const noPubsub: PubsubPort = {
  publish: () => undefined,
  retract: () => undefined,
  localItems: () => [],
  fetch: () => Promise.reject(new Error('no pubsub in unit tests')),
};

export interface TestRig {
  ks: Keystore;
  ports: EnginePorts;
  engine: PgpEngine;
  metrics: Metrics;
  logs: string[];
  /** Moves the engine's clock. */
  clock: { offsetMs: number };
  /** A second engine on the same keystore (as after a restart). */
  restart(opts?: Partial<PgpEngineOptions>): PgpEngine;
}

export function makeRig(opts: Partial<PgpEngineOptions> & { ks?: Keystore; trust?: TrustPolicy } = {}): TestRig {
  const ks = opts.ks ?? openTestKeystore();
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString('utf8'));
      cb();
    },
  });
  const metrics = new Metrics({ processMetrics: false });
  const clock = { offsetMs: 0 };
  const ports: EnginePorts = {
    store: createProtocolStore(ks, 'pgp'),
    trust: new TrustStore(ks, opts.trust ?? 'btbv'),
    contacts: new ContactStore(ks),
    keystore: ks,
    pubsub: noPubsub,
    metrics,
    log: createLogger('debug', sink),
    now: () => Date.now() + clock.offsetMs,
    resource: 'gw',
  };
  const engineOpts: PgpEngineOptions = {
    keyType: opts.keyType ?? 'curve25519',
    allowUnverifiedKeys: opts.allowUnverifiedKeys ?? false,
    replayWindowDays: opts.replayWindowDays ?? 30,
    ...(opts.requireSignedMessages !== undefined ? { requireSignedMessages: opts.requireSignedMessages } : {}),
  };
  return {
    ks,
    ports,
    engine: createPgpEngine(ports, engineOpts),
    metrics,
    logs,
    clock,
    restart: (o = {}) => createPgpEngine(ports, { ...engineOpts, ...o }),
  };
}

/** An inbound XEP-0027 message as it arrives: serialized and parsed again, like off the wire. */
export function encryptedStanza(from: string, to: string, stripped: string): Element {
  const el = xml(
    'message',
    { from, to, type: 'chat', id: `m${Math.random().toString(36).slice(2)}` },
    xml('body', {}, '[This message is encrypted]'),
    xml('x', { xmlns: 'jabber:x:encrypted' }, stripped),
  );
  return parseXml(el.toString());
}

/** Sums a counter's values whose labels include `labels`. */
export async function counterValue(c: { get(): Promise<{ values: Array<{ value: number; labels: Record<string, unknown> }> }> }, labels: Record<string, string>): Promise<number> {
  const { values } = await c.get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}
