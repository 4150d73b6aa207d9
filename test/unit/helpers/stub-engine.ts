// A ProtocolEngine test double for the outbound choice: identity and decryption do nothing; the
// caller gives encrypt and reachability.
import type { ProtocolEngine, ProtocolId } from '../../../bridges/engine.js';

export function stubEngine(id: ProtocolId, parts: Pick<ProtocolEngine, 'encrypt' | 'reachability'>): ProtocolEngine {
  return {
    id,
    features: [],
    recognizes: () => false,
    ensureIdentity: async () => undefined,
    identity: async () => ({}),
    decrypt: async () => ({ ok: false, reason: 'internal', replies: [] }),
    ...parts,
  };
}
