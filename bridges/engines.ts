// The protocol engines this build runs, created from config. Explicit on purpose (see STYLE.md).
import type { Config } from '../config.js';
import { ReplayStore } from '../keystore/replay-store.js';
import type { EnginePorts, ProtocolEngine, ProtocolId } from './engine.js';
import { createPgpEngine, type PgpEngine } from './pgp/engine.js';
import { ReplayGuard } from './pgp/replay-guard.js';
import { createOmemoEngine, type OmemoEngine } from './omemo/engine.js';
import { createOxEngine, type OxEngine } from './ox/engine.js';
import { createOmemo2Engine, type Omemo2Engine } from './omemo2/engine.js';
import { createOtrEngine, type OtrEngine } from './otr/engine.js';

export interface Engines {
  all: ProtocolEngine[];
  pgp: PgpEngine | null;
  omemo: OmemoEngine | null;
  ox: OxEngine | null;
  omemo2: Omemo2Engine | null;
  otr: OtrEngine | null;
}

export function createEngines(config: Config, portsFor: (id: ProtocolId) => EnginePorts): Engines {
  const pgpPorts = portsFor('pgp');
  // One replay store for both OpenPGP protocols (rows kept under 'pgp', as before OX existed): the
  // same ciphertext sent once as XEP-0027 and once as OX is a replay too.
  const replay = new ReplayGuard(new ReplayStore(pgpPorts.keystore), 'pgp', config.bridge.replayWindowDays, () => pgpPorts.now());
  const pgp = createPgpEngine(pgpPorts, {
    keyType: config.bridge.pgpKeyType,
    allowUnverifiedKeys: config.bridge.allowUnverifiedPgpKeys,
    replayWindowDays: config.bridge.replayWindowDays,
    replay,
  });
  const omemoPorts = portsFor('omemo');
  // Its own rows ('omemo'): a restart keeps refusing replays for the window, without a session repair.
  const omemo = createOmemoEngine(omemoPorts, {
    replay: new ReplayGuard(new ReplayStore(omemoPorts.keystore), 'omemo', config.bridge.replayWindowDays, () => omemoPorts.now()),
  });
  const botJids = new Set(config.bots.map((b) => `${b.localpart}@${config.component.domain}`));
  const plaintextBots = new Set(config.bots.filter((b) => b.allowPlaintext).map((b) => `${b.localpart}@${config.component.domain}`));
  const ox = createOxEngine(portsFor('ox'), {
    replay,
    maxClockSkewMs: config.bridge.oxMaxClockSkewMs,
    plaintextAllowed: (local) => config.bridge.allowPlaintext || plaintextBots.has(local),
    contactKeys: { cacheEntries: config.limits.peer_cache_entries },
  });
  // OMEMO 2 shares each hosted JID's device id and identity key with legacy OMEMO (see README).
  const omemo2Ports = portsFor('omemo2');
  const omemo2 = createOmemo2Engine(omemo2Ports, {
    legacy: omemo,
    replay: new ReplayGuard(new ReplayStore(omemo2Ports.keystore), 'omemo2', config.bridge.replayWindowDays, () => omemo2Ports.now()),
    identity: async (local) => {
      const id = await omemo.internals.keyring.ensure(local);
      return { deviceId: id.deviceId, priv: Buffer.from(id.keyPair.privKey) };
    },
    // Says what the device is, so a user looking at a bot's or proxy's OMEMO 2 devices (Kaidan shows
    // labels) sees that messages end at a gateway: a proxy re-encrypts what it receives.
    deviceLabel: (local) => (botJids.has(local) ? 'bot (E2EE gateway)' : 'bridge (E2EE gateway, re-encrypts)'),
  });
  const otr = createOtrEngine(portsFor('otr'), { maxMessageSize: config.bridge.otrMaxMessageSize });
  return { all: [omemo2, omemo, ox, pgp, otr], pgp, omemo, omemo2, ox, otr };
}
