// The protocol engines this build runs, created from config. Explicit on purpose (see STYLE.md).
import type { Config } from '../config.js';
import type { EnginePorts, ProtocolEngine, ProtocolId } from './engine.js';
import { createPgpEngine, type PgpEngine } from './pgp/engine.js';
import { createOmemoEngine, type OmemoEngine } from './omemo/engine.js';

export interface Engines {
  all: ProtocolEngine[];
  pgp: PgpEngine | null;
  omemo: OmemoEngine | null;
}

export function createEngines(config: Config, portsFor: (id: ProtocolId) => EnginePorts): Engines {
  const pgp = createPgpEngine(portsFor('pgp'), {
    keyType: config.bridge.pgpKeyType,
    allowUnverifiedKeys: config.bridge.allowUnverifiedPgpKeys,
    replayWindowDays: config.bridge.replayWindowDays,
  });
  const omemo = createOmemoEngine(portsFor('omemo'));
  return { all: [omemo, pgp], pgp, omemo };
}
