// What the OMEMO 2 engine's parts share.
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { EnginePorts } from '../engine.js';
import type { TrustLevel } from '../../keystore/trust-store.js';
import type { DeviceLists } from '../omemo/device-cache.js';
import { PROTOCOL, type Omemo2Options } from './constants.js';
import { fingerprintOf, type Keyring } from './keyring.js';
import type { PeerBundle } from './session.js';
import type { Sessions } from './sessions.js';
import type { ReplayGuard } from '../pgp/replay-guard.js';

/**
 * The replay digest of an OMEMO 2 message for hosted JID `local`: SHA-256 over the serialized
 * OMEMOMessage that its MAC covers (inside an OMEMOKeyExchange too), whoever sends it, so a copy
 * re-sent by someone else, or re-wrapped with fields outside the MAC changed, is the same digest.
 */
export const replayDigest = (local: string, macCovered: Buffer): Buffer =>
  // One-shot (no Hash object per message), over the same bytes as the streamed form before.
  hash('sha256', Buffer.concat([Buffer.from(`omemo2\0${local}\0`, 'utf8'), macCovered]), 'buffer');

export interface Omemo2Context {
  ports: EnginePorts;
  opts: Omemo2Options;
  log: Logger;
  keyring: Keyring;
  sessions: Sessions;
  devices: DeviceLists<PeerBundle>;
  /**
   * Digests of what the MAC of each accepted message covers (replayDigest): a replay answers
   * `duplicate` at once, after a restart too, for bridge.replay_window (rows under 'omemo2').
   */
  replay: ReplayGuard;
  /** Last repair sent per (hosted JID, contact, device). */
  repairs: LRUCache<string, number>;
  /** Per (hosted JID, contact, device): the ratchet key we last sent a heartbeat for. */
  heartbeats: LRUCache<string, string>;
  /** Session builds in flight, per (hosted JID, contact, device). */
  building: Map<string, Promise<void>>;
}

export const deviceKey = (local: string, contact: string, deviceId: number): string => `${local}\0${contact}\0${deviceId}`;

export function newCaches(): Pick<Omemo2Context, 'repairs' | 'heartbeats' | 'building'> {
  return { repairs: new LRUCache({ max: 20_000 }), heartbeats: new LRUCache({ max: 20_000 }), building: new Map() };
}

/** Records the contact's identity key for this device in the TrustStore and returns its trust. */
export function observe(ctx: Omemo2Context, contact: string, deviceId: number, ik: Buffer): { trust: TrustLevel; fingerprint: string } {
  const fingerprint = fingerprintOf(ik);
  return { trust: ctx.ports.trust.observe(contact, PROTOCOL, String(deviceId), fingerprint, ctx.ports.now()), fingerprint };
}
