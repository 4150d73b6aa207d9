// One room message for occupants whose devices speak different OMEMO versions (XEP-0384 v0.3 and
// v0.8+): every device gets the newest version it lists, in one groupchat stanza per version, and
// no device gets the same message twice (DESIGN.md, "Protocol names"). The engines are asked in
// order, newest first; each one leaves out the devices a newer one already gave a key to, so a
// device in both device lists gets OMEMO 2 only, and one whose OMEMO 2 session could not be built
// (no usable bundle) still gets legacy OMEMO if it lists it.
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { GatewayError } from '../../errors.js';
import { errorSummary } from '../../log.js';
import type { GroupEngine } from '../engine.js';
import type { Encryption } from '../outbound.js';

export interface RoomStanza {
  encryption: Encryption;
  children: Element[];
}

export interface RoomEncrypted {
  /** Newest version first; never empty. */
  stanzas: RoomStanza[];
  /** Occupants that got no key in any version (sorted). */
  undelivered: string[];
}

/**
 * Encrypts `body` from hosted JID `local` to the occupants `peers` (real bare JIDs) of `room`.
 * Throws GatewayError no_encryption_available when no occupant gets a key.
 */
export async function encryptForRoom(engines: readonly GroupEngine[], local: string, room: string, peers: readonly string[], body: string, log: Logger): Promise<RoomEncrypted> {
  const unique = [...new Set(peers)].filter((p) => p !== local).sort();
  if (engines.length === 0) throw new GatewayError('no_encryption_available', 'No group chat encryption is enabled.');
  if (unique.length === 0) throw new GatewayError('no_encryption_available', 'The room has no other occupant to encrypt for.');
  /** Per peer, the device ids a newer version gave a key to. */
  const keyed = new Map<string, Set<number>>();
  const delivered = new Set<string>();
  const stanzas: RoomStanza[] = [];
  for (const engine of engines) {
    const only = new Map<string, readonly number[]>();
    const targets: string[] = [];
    for (const peer of unique) {
      const listed = await engine.listedDevices(local, peer).catch((e: unknown) => {
        log.info({ room, occupant: peer, protocol: engine.id, err: errorSummary(e) }, 'occupant device list not read');
        return null;
      });
      const done = keyed.get(peer);
      const left = (listed ?? []).filter((d) => !done?.has(d));
      if (left.length === 0) continue;
      targets.push(peer);
      if (done) only.set(peer, left);
    }
    if (targets.length === 0) continue;
    let enc;
    try {
      enc = await engine.encryptGroup(local, targets, body, { room, only });
    } catch (e) {
      if (!(e instanceof GatewayError) || e.code === 'internal') throw e;
      log.info({ room, protocol: engine.id, err: errorSummary(e) }, 'no occupant reached with this version');
      continue;
    }
    stanzas.push({ encryption: engine.id, children: enc.children });
    const missed = new Set(enc.undelivered);
    for (const peer of targets) {
      if (missed.has(peer)) continue;
      delivered.add(peer);
      const got = keyed.get(peer) ?? new Set<number>();
      for (const d of enc.keyed?.get(peer) ?? only.get(peer) ?? (await engine.listedDevices(local, peer).catch(() => null)) ?? []) got.add(d);
      keyed.set(peer, got);
    }
  }
  const undelivered = unique.filter((p) => !delivered.has(p));
  if (stanzas.length === 0) throw new GatewayError('no_encryption_available', `No occupant has a usable OMEMO device (${undelivered.join(', ')}).`);
  return { stanzas, undelivered };
}
