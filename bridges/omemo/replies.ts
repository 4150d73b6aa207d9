// Protocol-only messages the engine sends on its own (XEP-0384 v0.3.0 key transport elements): they
// carry a random key and no body, and go out as whole <message> stanzas in Decrypted.replies.
//  * completion: right after accepting a PreKey message, so the contact's device learns the session
//    is confirmed and stops wrapping its messages in PreKey messages (and its ratchet turns);
//  * heartbeat: after `heartbeatAfter` messages on one of the contact's sending chains with nothing
//    from us, so its ratchet turns and its chain (and our skipped keys) stay short;
//  * repair: a message we cannot decrypt (no session, unknown prekey, bad MAC) is answered with a
//    key transport on a fresh session built from the device's bundle, at most once per device per
//    `repairIntervalMs`. It replaces the contact's broken session with a working one.
// These carry no message content, so they also go to untrusted devices (receiving from them must
// work); never to distrusted ones.
import { randomBytes, randomInt } from 'node:crypto';
import type Element from 'ltx/lib/Element.js';
import { errorSummary } from '../../log.js';
import { deviceKey, observe, type OmemoContext } from './context.js';
import type { LocalIdentity } from './keyring.js';
import { keyTransportMaterial } from './payload.js';
import { buildEncrypted, protocolMessage } from './wire.js';

const stanzaId = (): string => randomBytes(9).toString('base64url');

/**
 * A key-transport message to one device on its current session (null if that fails). The session's
 * new state is written here, or with `flushedByCaller` by the caller before the message leaves: the
 * completion and the heartbeat are built while a message is decrypted, whose commit (decrypt.ts,
 * with the replay digest) writes the session row once for both.
 */
export async function keyTransport(ctx: OmemoContext, id: LocalIdentity, contact: string, deviceId: number, why: string, flushedByCaller = false): Promise<Element | null> {
  const { keyMaterial, iv } = keyTransportMaterial();
  try {
    const k = await ctx.sessions.encrypt(id, contact, deviceId, keyMaterial);
    if (!flushedByCaller) ctx.sessions.flush();
    ctx.metrics.message('out', why);
    ctx.log.debug({ local: id.local, contact, deviceId, why }, 'omemo key transport');
    const enc = buildEncrypted({ sid: id.deviceId, keys: [{ rid: deviceId, prekey: k.prekey, data: k.data }], iv, payload: null });
    return protocolMessage(`${id.local}/${ctx.ports.resource}`, contact, stanzaId(), enc);
  } catch (e) {
    ctx.log.warn({ local: id.local, contact, deviceId, why, err: errorSummary(e) }, 'omemo key transport not built');
    return null;
  } finally {
    keyMaterial.fill(0);
  }
}

/** Repairs the session with a device that sent something we cannot decrypt (throttled). */
export async function repair(ctx: OmemoContext, id: LocalIdentity, contact: string, deviceId: number): Promise<Element | null> {
  const k = deviceKey(id.local, contact, deviceId);
  const now = ctx.ports.now();
  const last = ctx.repairs.get(k);
  if (last !== undefined && now - last < ctx.opts.repairIntervalMs) return null;
  // A device id missing from the contact's (cached) list is not repaired: made-up ids would each
  // cost a bundle fetch. The list is refreshed in the background; a real new device is repaired
  // on its next message.
  const list = ctx.devices.cached(contact);
  if (list !== undefined && !(list ?? []).includes(deviceId)) {
    ctx.log.debug({ local: id.local, contact, deviceId }, 'omemo session repair skipped: device not in the contact list');
    return null;
  }
  ctx.repairs.set(k, now);
  try {
    const bundle = await ctx.devices.bundle(id.local, contact, deviceId);
    if (!bundle) {
      ctx.log.info({ local: id.local, contact, deviceId }, 'omemo session repair: no bundle');
      return null;
    }
    if (observe(ctx, contact, deviceId, bundle.identityKey).trust === 'distrusted') return null;
    const preKey = bundle.preKeys[randomInt(bundle.preKeys.length)]!;
    await ctx.ports.metrics.timeCrypto('omemo', 'session_build', () => ctx.sessions.build(id, contact, deviceId, bundle, preKey));
  } catch (e) {
    ctx.log.info({ local: id.local, contact, deviceId, err: errorSummary(e) }, 'omemo session repair failed');
    return null;
  }
  return keyTransport(ctx, id, contact, deviceId, 'repair');
}

/**
 * Whether a message on the contact's sending chain `ratchetKey` with index `counter` calls for a
 * heartbeat; remembers the chain so one is sent at most once per chain.
 */
export function wantsHeartbeat(ctx: OmemoContext, local: string, contact: string, deviceId: number, ratchetKey: Buffer, counter: number): boolean {
  if (counter < ctx.opts.heartbeatAfter) return false;
  const k = deviceKey(local, contact, deviceId);
  if (ctx.heartbeats.get(k)?.equals(ratchetKey)) return false;
  ctx.heartbeats.set(k, Buffer.from(ratchetKey));
  return true;
}
