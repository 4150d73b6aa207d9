// The prekey bookkeeping both OMEMO keyrings share (legacy keyring.ts, omemo2/keyring.ts): the rows'
// kinds and forms in their ProtocolStore, and the upkeep that reads them all (used one-time prekeys
// deleted after their grace period, retired signed prekeys after a rotation period, the unused
// prekeys a bundle lists). Each version keeps its own identity/counter row and its own key formats.
//   kind 'prekey'/<id>  one-time prekeys   kind 'spk'/<id>  signed prekeys   owner '' kind 'locals'/<jid>
import type { ProtocolStore } from '../../keystore/protocol-store.js';

export const INDEX_OWNER = '';
export const K_PREKEY = 'prekey';
export const K_SPK = 'spk';
export const K_LOCALS = 'locals';
export const SELF = 'self';

export interface PreKeyRow {
  pub: string;
  priv: string;
  /** When a key exchange consumed it; the private key is deleted after the grace period. */
  usedAt?: number;
}
export interface SignedPreKeyRow extends PreKeyRow {
  sig: string;
  createdAt: number;
  retiredAt?: number;
}

const rowsOf = <T>(store: ProtocolStore, local: string, kind: string): Array<{ id: number; key: string; r: T }> =>
  store.list(local, kind).map((x) => ({ id: Number(x.key), key: x.key, r: JSON.parse(x.value.toString('utf8')) as T }));

/** The unused one-time prekeys in id order, public keys decoded (what a bundle lists). */
export function unusedPreKeys(store: ProtocolStore, local: string): Array<{ id: number; pub: Buffer }> {
  return rowsOf<PreKeyRow>(store, local, K_PREKEY)
    .filter((x) => x.r.usedAt === undefined)
    .sort((a, b) => a.id - b.id)
    .map((x) => ({ id: x.id, pub: Buffer.from(x.r.pub, 'base64') }));
}

/** Deletes used one-time prekeys whose grace period is over; returns how many. */
export function pruneUsedPreKeys(store: ProtocolStore, local: string, deletableBefore: number): number {
  let n = 0;
  for (const x of rowsOf<PreKeyRow>(store, local, K_PREKEY)) {
    if (x.r.usedAt !== undefined && x.r.usedAt <= deletableBefore) {
      store.delete(local, K_PREKEY, x.key);
      n++;
    }
  }
  return n;
}

/** Deletes signed prekeys retired at least `period` ago; returns their ids. */
export function pruneRetiredSignedPreKeys(store: ProtocolStore, local: string, now: number, period: number): number[] {
  const gone: number[] = [];
  for (const x of rowsOf<SignedPreKeyRow>(store, local, K_SPK)) {
    if (x.r.retiredAt !== undefined && now - x.r.retiredAt >= period) {
      store.delete(local, K_SPK, x.key);
      gone.push(x.id);
    }
  }
  return gone;
}

/** Ids of one-time prekeys held (used or not), for tests and diagnostics. */
export function preKeyIds(store: ProtocolStore, local: string): { unused: number[]; used: number[] } {
  const unused: number[] = [];
  const used: number[] = [];
  for (const x of rowsOf<PreKeyRow>(store, local, K_PREKEY)) (x.r.usedAt === undefined ? unused : used).push(x.id);
  return { unused: unused.sort((a, b) => a - b), used: used.sort((a, b) => a - b) };
}
