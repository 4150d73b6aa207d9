// What the OMEMO engine's parts share: ports, options, key material, sessions, device lists.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { ReplayGuard } from '../pgp/replay-guard.js';
import type { Logger } from 'pino';
import type { EnginePorts } from '../engine.js';
import type { TrustLevel } from '../../keystore/trust-store.js';
import { PROTOCOL, type OmemoOptions } from './constants.js';
import type { DeviceLists } from './device-cache.js';
import { fingerprintOf, type Keyring } from './keyring.js';
import type { Sessions } from './sessions.js';

export interface OmemoContext {
  ports: EnginePorts;
  metrics: OmemoMetrics;
  opts: OmemoOptions;
  log: Logger;
  keyring: Keyring;
  sessions: Sessions;
  devices: DeviceLists;
  /**
   * Digests of WhisperMessages already decrypted, per hosted JID whoever sent them (see
   * replayDigest): a replay answers `duplicate` at once, after a restart too, for bridge.replay_window.
   */
  replay: ReplayGuard;
  /** Last repair sent per (hosted JID, contact, device). */
  repairs: LRUCache<string, number>;
  /** Per (hosted JID, contact, device): the ratchet key we last sent a heartbeat for. */
  heartbeats: LRUCache<string, Buffer>;
  /** Session builds in flight, per (hosted JID, contact, device). */
  building: Map<string, Promise<void>>;
}

/** Metric children per label set, looked up once (prom-client hashes the labels on every call otherwise). */
export class OmemoMetrics {
  readonly #m: EnginePorts['metrics'];
  readonly #timers = new Map<string, { startTimer(): () => void }>();
  readonly #counters = new Map<string, { inc(): void }>();
  constructor(m: EnginePorts['metrics']) {
    this.#m = m;
  }
  /** Starts a crypto timing; call the result when done. */
  time(operation: string): () => void {
    let t = this.#timers.get(operation);
    if (!t) this.#timers.set(operation, (t = this.#m.cryptoSeconds.labels({ protocol: PROTOCOL, operation })));
    return t.startTimer();
  }
  message(direction: 'in' | 'out', result: string): void {
    const k = `${direction}\0${result}`;
    let c = this.#counters.get(k);
    if (!c) this.#counters.set(k, (c = this.#m.messages.labels({ protocol: PROTOCOL, direction, result })));
    c.inc();
  }
}

export const deviceKey = (local: string, contact: string, deviceId: number): string => `${local}\0${contact}\0${deviceId}`;

/**
 * The replay digest of a message to `local`: over the bytes its MAC covers (see decrypt.ts), not
 * over the sender's JID or device id, which are outside the MAC: the same message re-sent by
 * another user of the domain, under their JID, is the same digest (issue 15).
 */
export const replayDigest = (local: string, macCovered: Buffer): Buffer =>
  createHash('sha256').update('omemo\0').update(local).update('\0').update(macCovered).digest();

/** Fingerprints of identity keys held by session records (the same object every message of a session). */
const fingerprints = new WeakMap<ArrayBuffer | Uint8Array, string>();

/** Records the contact's key for this device in the TrustStore and returns its trust. */
export function observe(ctx: OmemoContext, contact: string, deviceId: number, identityKey: ArrayBuffer | Uint8Array): { trust: TrustLevel; fingerprint: string } {
  let fingerprint = fingerprints.get(identityKey);
  if (fingerprint === undefined) fingerprints.set(identityKey, (fingerprint = fingerprintOf(identityKey)));
  const trust = ctx.ports.trust.observe(contact, PROTOCOL, String(deviceId), fingerprint, ctx.ports.now());
  return { trust, fingerprint };
}
