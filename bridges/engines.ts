// The protocol engines this build runs, created from config. Explicit on purpose (see STYLE.md).
import type { Config } from '../config.js';
import type { EnginePorts, ProtocolEngine, ProtocolId } from './engine.js';

export function createEngines(_config: Config, _portsFor: (id: ProtocolId) => EnginePorts): ProtocolEngine[] {
  return [];
}
