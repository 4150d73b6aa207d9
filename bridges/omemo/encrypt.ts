// Sending (XEP-0384 v0.3.0 §"Sending a message"): the body is encrypted once with AES-128-GCM and its
// key||tag is Signal-encrypted for every trusted active device of the contact. Sessions are built
// here, right before sending, from bundles fetched for devices that have none (never on a device
// list announcement: that causes prekey collisions).
import { randomInt } from 'node:crypto';
import { GatewayError } from '../../errors.js';
import { isUsable, type DeviceRecord } from '../../keystore/trust-store.js';
import { errorSummary } from '../../log.js';
import type { Encrypted, GroupEncrypted, GroupOptions } from '../engine.js';
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
      if (isUsable(observe(ctx, peer, deviceId, open.remoteIdentityKey).trust)) p.ready.push(deviceId);
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

/** The trusted devices of `peer` (of `only`, if given) to encrypt for (sessions built as needed), or why there are none. */
async function targetsFor(ctx: OmemoContext, id: LocalIdentity, peer: string, only?: readonly number[]): Promise<{ targets: number[]; error: GatewayError | null }> {
  const listed = await ctx.devices.get(id.local, peer);
  const ids = only && listed ? listed.filter((d) => only.includes(d)) : listed;
  if (!ids || ids.length === 0) return { targets: [], error: new GatewayError('no_encryption_available', `${peer} publishes no OMEMO devices.`) };
  const p = await plan(ctx, id, peer, ids);
  const targets = [...p.ready];
  await Promise.all(
    p.build.map(({ deviceId, bundle }) =>
      buildOnce(ctx, id, peer, deviceId, bundle).then(
        () => void targets.push(deviceId),
        (e: unknown) => {
          p.unreachable++;
          ctx.log.warn({ local: id.local, contact: peer, deviceId, err: errorSummary(e) }, 'omemo session build failed (bad bundle?)');
        },
      ),
    ),
  );
  if (targets.length > 0) return { targets, error: null };
  if (p.refused > 0) return { targets, error: new GatewayError('no_trusted_devices', `${peer} has no trusted OMEMO device (${p.refused} waiting for a trust decision).`) };
  if (p.lastError instanceof GatewayError) return { targets, error: p.lastError };
  return { targets, error: new GatewayError('no_encryption_available', `No OMEMO device of ${peer} could be reached.`) };
}

/** One payload, one header with a key for every target device of every peer. */
async function seal(ctx: OmemoContext, id: LocalIdentity, recipients: ReadonlyArray<{ peer: string; targets: number[] }>, body: string): Promise<{ children: Encrypted['children']; keyed: Set<string> }> {
  const end = ctx.metrics.time('encrypt');
  const sealed = sealPayload(Buffer.from(body, 'utf8'));
  const keys: KeyElement[] = [];
  const keyed = new Set<string>();
  try {
    await Promise.all(
      recipients.flatMap(({ peer, targets }) =>
        targets.map((deviceId) =>
          ctx.sessions.encrypt(id, peer, deviceId, sealed.keyMaterial).then(
            (k) => {
              keys.push({ rid: deviceId, prekey: k.prekey, data: k.data });
              keyed.add(peer);
            },
            (e: unknown) => ctx.log.warn({ local: id.local, contact: peer, deviceId, err: errorSummary(e) }, 'omemo encrypt for device failed'),
          ),
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
  return { children: messageChildren(encrypted, ctx.opts.fallbackBody), keyed };
}

export async function encryptBody(ctx: OmemoContext, local: string, peer: string, body: string, only?: readonly number[]): Promise<Encrypted> {
  const id = await ctx.keyring.ensure(local);
  const { targets, error } = await targetsFor(ctx, id, peer, only);
  if (targets.length === 0) throw error!;
  return { children: (await seal(ctx, id, [{ peer, targets }], body)).children };
}

/**
 * A group message (XEP-0384 v0.3.0 §"Groupchats"): one payload and one header with keys for every
 * trusted device of every peer (the occupants' real bare JIDs). A peer without a usable device is
 * listed in `undelivered` instead of failing the message; it fails only when no peer gets a key.
 * `opts.only` narrows a peer to some of its devices (those OMEMO 2 does not reach).
 * The gateway runs one device per hosted JID, so there are no own other devices to add.
 */
export async function encryptGroup(ctx: OmemoContext, local: string, peers: readonly string[], body: string, opts: GroupOptions = {}): Promise<GroupEncrypted> {
  const id = await ctx.keyring.ensure(local);
  const unique = [...new Set(peers)].filter((p) => p !== local);
  const undelivered: string[] = [];
  const recipients: Array<{ peer: string; targets: number[] }> = [];
  await Promise.all(
    unique.map(async (peer) => {
      try {
        const { targets } = await targetsFor(ctx, id, peer, opts.only?.get(peer));
        if (targets.length > 0) recipients.push({ peer, targets });
        else undelivered.push(peer);
      } catch (e) {
        ctx.log.info({ local, contact: peer, err: errorSummary(e) }, 'omemo group recipient unreachable');
        undelivered.push(peer);
      }
    }),
  );
  if (recipients.length === 0) {
    throw new GatewayError('no_encryption_available', unique.length === 0 ? 'The room has no other occupant to encrypt for.' : `No occupant has a usable OMEMO device (${undelivered.sort().join(', ')}).`);
  }
  const { children, keyed } = await seal(ctx, id, recipients, body);
  for (const r of recipients) if (!keyed.has(r.peer)) undelivered.push(r.peer);
  return { children, undelivered: undelivered.sort() };
}
