// Hosted JIDs with both OMEMO engines (legacy and OMEMO 2 sharing device id and identity, as the
// gateway wires them in bridges/engines.ts) on the in-memory network of omemo-net.ts.
import { Writable } from 'node:stream';
import { createProtocolStore } from '../../../keystore/protocol-store.js';
import { TrustStore } from '../../../keystore/trust-store.js';
import { ContactStore } from '../../../keystore/contact-store.js';
import type { Keystore } from '../../../keystore/keystore.js';
import { Metrics } from '../../../http/metrics.js';
import { createLogger } from '../../../log.js';
import { createOmemoEngine, type OmemoEngine } from '../../../bridges/omemo/engine.js';
import { createOmemo2Engine, type Omemo2Engine } from '../../../bridges/omemo2/engine.js';
import type { OmemoOptions } from '../../../bridges/omemo/constants.js';
import { Clock, openTestKeystore, type FakeNetwork } from './omemo-net.js';

export interface Dual {
  jid: string;
  ks: Keystore;
  legacy: OmemoEngine;
  omemo2: Omemo2Engine;
  deviceId: number;
  logs: string[];
}

export async function makeDual(net: FakeNetwork, jid: string, o: { ks?: Keystore; clock?: Clock; name?: string; options?: Partial<OmemoOptions>; logLevel?: string; label?: string } = {}): Promise<Dual> {
  const ks = o.ks ?? openTestKeystore();
  const trust = new TrustStore(ks, 'btbv');
  const metrics = new Metrics({ processMetrics: false });
  const logs: string[] = [];
  const log = createLogger(o.logLevel ?? 'debug', new Writable({ write: (c, _e, cb) => (logs.push(String(c)), cb()) }));
  const clock = o.clock ?? new Clock();
  const name = o.name ?? jid;
  const base = { trust, contacts: new ContactStore(ks), keystore: ks, metrics, log, now: clock.now, resource: 'gw' };
  const legacy = createOmemoEngine({ ...base, store: createProtocolStore(ks, 'omemo'), pubsub: net.port(name) }, o.options);
  const omemo2 = createOmemo2Engine(
    { ...base, store: createProtocolStore(ks, 'omemo2'), pubsub: net.port(name) },
    {
      ...o.options,
      legacy,
      ...(o.label !== undefined && { deviceLabel: () => o.label! }),
      identity: async (l) => {
        const id = await legacy.internals.keyring.ensure(l);
        return { deviceId: id.deviceId, priv: Buffer.from(id.keyPair.privKey) };
      },
    },
  );
  await legacy.ensureIdentity(jid);
  await omemo2.ensureIdentity(jid);
  return { jid, ks, legacy, omemo2, deviceId: (await omemo2.devices(jid))[0]!.device_id, logs };
}

