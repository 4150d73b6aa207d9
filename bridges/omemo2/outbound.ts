// Sending with OMEMO 2 (XEP-0384 v0.8 §"Sending a message"): the SCE envelope is encrypted once
// (payload.ts) and its key || mac goes through the session of every trusted device of the contact;
// sessions are built right before sending from bundles fetched then. Also the protocol-only empty
// messages: completion after accepting a key exchange, heartbeats, repairs.
import { randomBytes, randomInt } from 'node:crypto';
import type Element from 'ltx/lib/Element.js';
import { GatewayError } from '../../errors.js';
import { isUsable } from '../../keystore/trust-store.js';
import { errorSummary } from '../../log.js';
import { PROTOCOL } from './constants.js';
import { deviceKey, observe, type Omemo2Context } from './context.js';
import type { LocalIdentity } from './keyring.js';
import { emptyKeyMaterial, PAYLOAD_KEY, sealPayload } from './payload.js';
import { buildEnvelope, RPAD_RANDOM } from './sce.js';
import { buildSession, encryptMessage, replacing, type PeerBundle } from './session.js';
import { buildEncrypted, messageChildren, protocolMessage, type KeyElement } from './wire.js';

/** Builds a session from the device's bundle unless one exists by now (parallel sends share one). */
export function buildOnce(ctx: Omemo2Context, id: LocalIdentity, peer: string, deviceId: number, bundle: PeerBundle, replace = false): Promise<void> {
  const key = deviceKey(id.local, peer, deviceId);
  let p = ctx.building.get(key);
  if (!p) {
    p = (async () => {
      const old = ctx.sessions.get(id.local, peer, deviceId);
      if (!replace && old) return;
      const preKey = bundle.preKeys[randomInt(bundle.preKeys.length)]!;
      // Written with its first message (seal, emptyMessage): one session write per build, not two.
      await ctx.ports.metrics.timeCrypto(PROTOCOL, 'session_build', async () => ctx.sessions.stage(id.local, peer, deviceId, replacing(buildSession(id, bundle, preKey), old)));
    })().finally(() => ctx.building.delete(key));
    ctx.building.set(key, p);
  }
  return p;
}

/** Which of `ids` can be encrypted to now, building sessions where needed. */
async function targets(ctx: Omemo2Context, id: LocalIdentity, peer: string, ids: readonly number[]): Promise<{ ready: number[]; refused: number; lastError: unknown }> {
  const ready: number[] = [];
  let refused = 0;
  let lastError: unknown;
  // The stored trust records are read only for a device without a session (a steady message has none).
  let known: ReturnType<typeof ctx.ports.trust.list> | null = null;
  // Devices with a session are settled here; only those without one wait for a bundle.
  const building: number[] = [];
  for (const deviceId of ids) {
    if (peer === id.local && deviceId === id.deviceId) continue;
    const s = ctx.sessions.get(id.local, peer, deviceId);
    if (!s) building.push(deviceId);
    else if (isUsable(observe(ctx, peer, deviceId, s.theirIk).trust)) ready.push(deviceId);
    else refused++;
  }
  if (building.length === 0) return { ready: ready.sort((a, b) => a - b), refused, lastError };
  await Promise.all(
    building.map(async (deviceId) => {
      known ??= ctx.ports.trust.list(peer, PROTOCOL);
      const rec = known.find((r) => r.deviceId === String(deviceId) && r.active);
      if (rec && !isUsable(rec.trust)) {
        refused++;
        return;
      }
      try {
        const bundle = await ctx.devices.bundle(id.local, peer, deviceId);
        if (!bundle) {
          ctx.log.info({ local: id.local, contact: peer, deviceId }, 'omemo2 device has no usable bundle');
          return;
        }
        if (!isUsable(observe(ctx, peer, deviceId, bundle.ik).trust)) {
          refused++;
          return;
        }
        await buildOnce(ctx, id, peer, deviceId, bundle);
        ready.push(deviceId);
      } catch (e) {
        lastError = e;
        ctx.log.info({ local: id.local, contact: peer, deviceId, err: errorSummary(e) }, 'omemo2 session not built');
      }
    }),
  );
  return { ready: ready.sort((a, b) => a - b), refused, lastError };
}

/** Why none of `peer`'s devices can be encrypted to. */
function noTargets(peer: string, t: { refused: number; lastError: unknown }): GatewayError {
  if (t.refused > 0) return new GatewayError('no_trusted_devices', `${peer} has no trusted OMEMO 2 device (${t.refused} waiting for a trust decision).`);
  if (t.lastError instanceof GatewayError) return t.lastError;
  return new GatewayError('no_encryption_available', `No OMEMO 2 device of ${peer} could be reached.`);
}

/**
 * One SCE envelope (its <to>: the peer, or the room in a group chat), one payload and a key for
 * every ready device of every recipient, grouped per bare JID in the header.
 */
function seal(ctx: Omemo2Context, id: LocalIdentity, recipients: ReadonlyArray<{ peer: string; ready: number[] }>, body: string, to: string): Element[] {
  const end = ctx.ports.metrics.cryptoSeconds.startTimer({ protocol: PROTOCOL, operation: 'encrypt' });
  // One draw of randomness for the payload key and the envelope's padding.
  const rnd = randomBytes(PAYLOAD_KEY + RPAD_RANDOM);
  const envelope = buildEnvelope({ body, from: id.local, to, now: ctx.ports.now() }, rnd.subarray(PAYLOAD_KEY));
  const sealed = sealPayload(envelope, rnd.subarray(0, PAYLOAD_KEY));
  rnd.fill(0);
  const keys = new Map<string, KeyElement[]>();
  const devices = recipients.reduce((n, r) => n + r.ready.length, 0);
  const encryptAll = () => {
    for (const { peer, ready } of recipients) {
      const forPeer: KeyElement[] = [];
      for (const deviceId of ready) {
        const s = ctx.sessions.get(id.local, peer, deviceId)!;
        const m = encryptMessage(id, s, sealed.keyMaterial);
        ctx.sessions.put(id.local, peer, deviceId, s);
        forPeer.push({ rid: deviceId, kex: m.kex, data: m.data });
      }
      if (forPeer.length > 0) keys.set(peer, forPeer);
    }
  };
  try {
    // One row commits on its own; several (a message to many devices) share one commit. If it fails,
    // nothing is sent: the cached sessions that ran ahead only skip message keys nobody used.
    if (devices === 1) encryptAll();
    else ctx.ports.store.transaction(encryptAll);
  } finally {
    sealed.keyMaterial.fill(0);
    end();
  }
  ctx.ports.metrics.messages.inc({ protocol: PROTOCOL, direction: 'out', result: 'ok' });
  return messageChildren(buildEncrypted({ sid: id.deviceId, keys, payload: sealed.payload }), ctx.opts.fallbackBody);
}

/** The <encrypted> element for `body` to the given devices of `peer`. */
export async function encryptBody(ctx: Omemo2Context, id: LocalIdentity, peer: string, ids: readonly number[], body: string): Promise<Element[]> {
  const t = await targets(ctx, id, peer, ids);
  if (t.ready.length === 0) throw noTargets(peer, t);
  return seal(ctx, id, [{ peer, ready: t.ready }], body, peer);
}

/**
 * A group message (XEP-0384 v0.8 §"Group chats"): one envelope addressed to the room, keys for the
 * given devices of every peer (the occupants' real bare JIDs). Peers without a usable device are
 * listed in `undelivered`; it throws only when no peer gets a key.
 */
export async function encryptGroup(
  ctx: Omemo2Context,
  id: LocalIdentity,
  recipients: ReadonlyArray<{ peer: string; ids: readonly number[] }>,
  body: string,
  room: string,
): Promise<{ children: Element[]; undelivered: string[]; keyed: Map<string, number[]> }> {
  const undelivered: string[] = [];
  const ready: Array<{ peer: string; ready: number[] }> = [];
  await Promise.all(
    recipients.map(async ({ peer, ids }) => {
      const t = await targets(ctx, id, peer, ids);
      if (t.ready.length > 0) ready.push({ peer, ready: t.ready });
      else {
        undelivered.push(peer);
        ctx.log.info({ local: id.local, contact: peer, err: errorSummary(noTargets(peer, t)) }, 'omemo2 group recipient unreachable');
      }
    }),
  );
  if (ready.length === 0) throw new GatewayError('no_encryption_available', `No occupant has a usable OMEMO 2 device (${undelivered.sort().join(', ')}).`);
  ready.sort((a, b) => (a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : 0));
  const children = seal(ctx, id, ready, body, room);
  return { children, undelivered: undelivered.sort(), keyed: new Map(ready.map((r) => [r.peer, r.ready])) };
}

/** An empty OMEMO 2 message to one device on its current session (null if there is none or it fails). */
export function emptyMessage(ctx: Omemo2Context, id: LocalIdentity, contact: string, deviceId: number, why: string): Element | null {
  const s = ctx.sessions.get(id.local, contact, deviceId);
  if (!s) return null;
  try {
    const m = encryptMessage(id, s, emptyKeyMaterial());
    ctx.sessions.put(id.local, contact, deviceId, s);
    ctx.ports.metrics.messages.inc({ protocol: PROTOCOL, direction: 'out', result: why });
    ctx.log.debug({ local: id.local, contact, deviceId, why }, 'omemo2 empty message');
    const enc = buildEncrypted({ sid: id.deviceId, keys: new Map([[contact, [{ rid: deviceId, kex: m.kex, data: m.data }]]]), payload: null });
    return protocolMessage(`${id.local}/${ctx.ports.resource}`, contact, randomBytes(9).toString('base64url'), enc);
  } catch (e) {
    ctx.log.warn({ local: id.local, contact, deviceId, why, err: errorSummary(e) }, 'omemo2 empty message not built');
    return null;
  }
}

/** Repairs the session with a device that sent something we cannot decrypt: a new session and an empty message (throttled). */
export async function repair(ctx: Omemo2Context, id: LocalIdentity, contact: string, deviceId: number): Promise<Element | null> {
  const k = deviceKey(id.local, contact, deviceId);
  const now = ctx.ports.now();
  const last = ctx.repairs.get(k);
  if (last !== undefined && now - last < ctx.opts.repairIntervalMs) return null;
  ctx.repairs.set(k, now);
  try {
    const bundle = await ctx.devices.bundle(id.local, contact, deviceId);
    if (!bundle || observe(ctx, contact, deviceId, bundle.ik).trust === 'distrusted') return null;
    await buildOnce(ctx, id, contact, deviceId, bundle, true);
  } catch (e) {
    ctx.log.info({ local: id.local, contact, deviceId, err: errorSummary(e) }, 'omemo2 session repair failed');
    return null;
  }
  return emptyMessage(ctx, id, contact, deviceId, 'repair');
}
