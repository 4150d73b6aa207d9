// Sending (XEP-0384 v0.3.0 §"Sending a message"): the body is encrypted once with AES-128-GCM and its
// key||tag is Signal-encrypted for every trusted active device of the contact. Sessions are built
// here, right before sending, from bundles fetched for devices that have none (never on a device
// list announcement: that causes prekey collisions).
import { randomInt } from 'node:crypto';
import { GatewayError } from '../../errors.js';
import { isUsable, type DeviceRecord } from '../../keystore/trust-store.js';
import { errorSummary } from '../../log.js';
import type { Encrypted } from '../engine.js';
import { PROTOCOL } from './constants.js';
import { deviceKey, observe, type OmemoContext } from './context.js';
import type { LocalIdentity } from './keyring.js';
import { sealPayload } from './payload.js';
import { buildEncrypted, messageChildren, type Bundle, type KeyElement } from './wire.js';

interface Plan {
  /** Trusted devices with a session. */
  ready: number[];
  /** Trusted devices without one: build from this bundle first. */
  build: Array<{ deviceId: number; bundle: Bundle }>;
  /** Devices left out because of their trust level. */
  refused: number;
  /** Devices left out because their bundle could not be read. */
  unreachable: number;
  lastError: unknown;
}

/** Sorts the contact's devices into ready / to build / refused / unreachable, fetching bundles only where needed. */
async function plan(ctx: OmemoContext, id: LocalIdentity, peer: string, ids: readonly number[]): Promise<Plan> {
  const p: Plan = { ready: [], build: [], refused: 0, unreachable: 0, lastError: undefined };
  let known: DeviceRecord[] | undefined;
  const fetches: Array<Promise<void>> = [];
  for (const deviceId of ids) {
    if (peer === id.local && deviceId === id.deviceId) continue;
    const open = ctx.sessions.openSession(id.local, peer, deviceId);
    if (open) {
      if (isUsable(observe(ctx, peer, deviceId, open.indexInfo.remoteIdentityKey).trust)) p.ready.push(deviceId);
      else p.refused++;
      continue;
    }
    // Without a session: skip a device already known to be unusable without asking its server.
    known ??= ctx.ports.trust.list(peer, PROTOCOL);
    const rec = known.find((r) => r.deviceId === String(deviceId) && r.active);
    if (rec && !isUsable(rec.trust)) {
      p.refused++;
      continue;
    }
    fetches.push(
      ctx.devices.bundle(id.local, peer, deviceId).then(
        (bundle) => {
          if (!bundle) {
            p.unreachable++;
            ctx.log.info({ local: id.local, contact: peer, deviceId }, 'omemo device has no usable bundle');
          } else if (isUsable(observe(ctx, peer, deviceId, bundle.identityKey).trust)) {
            p.build.push({ deviceId, bundle });
          } else {
            p.refused++;
          }
        },
        (e: unknown) => {
          p.unreachable++;
          p.lastError = e;
          ctx.log.info({ local: id.local, contact: peer, deviceId, err: errorSummary(e) }, 'omemo bundle fetch failed');
        },
      ),
    );
  }
  await Promise.all(fetches);
  return p;
}

/**
 * Builds a session unless one exists by now: messages sent in parallel to a new device must share
 * one session (and one prekey), not each start their own.
 */
function buildOnce(ctx: OmemoContext, id: LocalIdentity, peer: string, deviceId: number, bundle: Bundle): Promise<void> {
  const key = deviceKey(id.local, peer, deviceId);
  let p = ctx.building.get(key);
  if (!p) {
    p = (async () => {
      if (ctx.sessions.openSession(id.local, peer, deviceId)) return;
      const preKey = bundle.preKeys[randomInt(bundle.preKeys.length)]!;
      await ctx.ports.metrics.timeCrypto(PROTOCOL, 'session_build', () => ctx.sessions.build(id, peer, deviceId, bundle, preKey));
    })().finally(() => ctx.building.delete(key));
    ctx.building.set(key, p);
  }
  return p;
}

export async function encryptBody(ctx: OmemoContext, local: string, peer: string, body: string, only?: readonly number[]): Promise<Encrypted> {
  const id = await ctx.keyring.ensure(local);
  const listed = await ctx.devices.get(local, peer);
  const ids = only && listed ? listed.filter((d) => only.includes(d)) : listed;
  if (!ids || ids.length === 0) throw new GatewayError('no_encryption_available', `${peer} publishes no OMEMO devices.`);
  const p = await plan(ctx, id, peer, ids);
  const targets = [...p.ready];
  await Promise.all(
    p.build.map(({ deviceId, bundle }) =>
      buildOnce(ctx, id, peer, deviceId, bundle).then(
        () => void targets.push(deviceId),
        (e: unknown) => {
          p.unreachable++;
          ctx.log.warn({ local, contact: peer, deviceId, err: errorSummary(e) }, 'omemo session build failed (bad bundle?)');
        },
      ),
    ),
  );
  if (targets.length === 0) {
    if (p.refused > 0) throw new GatewayError('no_trusted_devices', `${peer} has no trusted OMEMO device (${p.refused} waiting for a trust decision).`);
    if (p.lastError instanceof GatewayError) throw p.lastError;
    throw new GatewayError('no_encryption_available', `No OMEMO device of ${peer} could be reached.`);
  }
  const end = ctx.metrics.time('encrypt');
  const sealed = sealPayload(Buffer.from(body, 'utf8'));
  const keys: KeyElement[] = [];
  try {
    await Promise.all(
      targets.map((deviceId) =>
        ctx.sessions.encrypt(id, peer, deviceId, sealed.keyMaterial).then(
          (k) => void keys.push({ rid: deviceId, prekey: k.prekey, data: k.data }),
          (e: unknown) => ctx.log.warn({ local, contact: peer, deviceId, err: errorSummary(e) }, 'omemo encrypt for device failed'),
        ),
      ),
    );
    ctx.sessions.flush();
  } finally {
    sealed.keyMaterial.fill(0);
    end();
  }
  if (keys.length === 0) throw new GatewayError('internal', 'OMEMO encryption failed for every device.');
  keys.sort((a, b) => a.rid - b.rid);
  const encrypted = buildEncrypted({ sid: id.deviceId, keys, iv: sealed.iv, payload: sealed.payload });
  return { children: messageChildren(encrypted, ctx.opts.fallbackBody) };
}
