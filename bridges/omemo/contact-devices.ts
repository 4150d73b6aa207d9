// A contact's devices as an OMEMO engine (either version) knows them: the ids in its current device
// list and those we hold sessions with, each with the fingerprint of its identity key when known
// (from the session, or from its bundle when asked) and its trust. Shared by both versions' engines.
import type { TrustLevel, TrustStore } from '../../keystore/trust-store.js';

/** A contact's device as the engine knows it. */
export interface ContactDevice {
  device_id: number;
  /** null until we have seen its identity key (bundle or session). */
  fingerprint: string | null;
  trust: TrustLevel | null;
  /** In the contact's current device list. */
  active: boolean;
  /** We hold a session with it. */
  session: boolean;
}

export interface ContactDeviceSources {
  trust: TrustStore;
  protocol: string;
  contact: string;
  now: number;
  /** The contact's current device list (null: none known). */
  listed: readonly number[] | null;
  /** Devices we hold a session with (also those no longer listed). */
  withSessions: Iterable<number>;
  /** The fingerprint of the session's identity key, or null without a session. */
  sessionFingerprint(deviceId: number): string | null;
  /** Reads a listed device's bundle for its fingerprint (only when the caller asked for bundles). */
  bundleFingerprint?: (deviceId: number) => Promise<string | null>;
}

export async function listContactDevices(s: ContactDeviceSources): Promise<ContactDevice[]> {
  const listed = new Set(s.listed ?? []);
  const all = new Set<number>([...listed, ...s.withSessions]);
  const records = s.trust.list(s.contact, s.protocol);
  const out: ContactDevice[] = [];
  for (const deviceId of [...all].sort((a, b) => a - b)) {
    const sessionFpr = s.sessionFingerprint(deviceId);
    let fingerprint = sessionFpr;
    if (!fingerprint && s.bundleFingerprint && listed.has(deviceId)) fingerprint = await s.bundleFingerprint(deviceId).catch(() => null);
    let trust: TrustLevel | null = null;
    // A listed device's key is observed (first sight records it under the trust policy); others are
    // only looked up.
    if (fingerprint && listed.has(deviceId)) trust = s.trust.observe(s.contact, s.protocol, String(deviceId), fingerprint, s.now);
    else {
      const rec = fingerprint ? records.find((r) => r.fingerprint === fingerprint) : records.find((r) => r.deviceId === String(deviceId));
      fingerprint ??= rec?.fingerprint ?? null;
      trust = rec?.trust ?? null;
    }
    out.push({ device_id: deviceId, fingerprint, trust, active: listed.has(deviceId), session: sessionFpr !== null });
  }
  return out;
}
