// OMEMO 2 (XEP-0384 v0.8+, urn:xmpp:omemo:2) for the gateway's hosted JIDs, on the shared Double
// Ratchet (bridges/ratchet/). The parts:
//   keyring.ts   prekeys, signed prekeys, device list and bundle (identity shared with legacy OMEMO)
//   session.ts   X3DH and sessions without I/O; sessions.ts their storage
//   outbound.ts / inbound.ts   the message flows; sce.ts the XEP-0420 envelope; wire.ts the XML
// A contact's devices are the union of both versions' device lists: a device listed in both gets
// OMEMO 2 only, one listed only in the legacy list gets legacy OMEMO in a second stanza (the
// `legacy` dependency), and no device gets the same message twice.
import type Element from 'ltx/lib/Element.js';
import { GatewayError } from '../../errors.js';
import { isUsable } from '../../keystore/trust-store.js';
import type { Decrypted, EnginePorts, Encrypted, GroupEngine, IdentityFacts, Reachability } from '../engine.js';
import { DeviceLists, type DeviceListSpec } from '../omemo/device-cache.js';
import type { OmemoEngine } from '../omemo/engine.js';
import { DEFAULT_OPTIONS, NODE_BUNDLES, NODE_DEVICES, NS_OMEMO2, PROTOCOL, type Omemo2Options } from './constants.js';
import { newCaches, type Omemo2Context } from './context.js';
import { ReplayStore } from '../../keystore/replay-store.js';
import { ReplayGuard } from '../pgp/replay-guard.js';
import { listContactDevices, type ContactDevice } from '../omemo/contact-devices.js';
import { decryptStanza } from './inbound.js';
import { fingerprintOf, Keyring, type IdentitySource } from './keyring.js';
import { encryptBody, encryptGroup } from './outbound.js';
import type { PeerBundle } from './session.js';
import { Sessions } from './sessions.js';
import { parseBundle, parseDeviceLabels, parseDeviceList } from './wire.js';
import { ed25519Verify } from '../ratchet/primitives.js';

export const OMEMO2_DEVICE_LISTS: DeviceListSpec<PeerBundle> = {
  protocol: PROTOCOL,
  listNode: NODE_DEVICES,
  parseList: parseDeviceList,
  parseLabels: parseDeviceLabels,
  fetchBundle: (pubsub, local, contact, deviceId) => pubsub.fetch(local, contact, NODE_BUNDLES, { itemId: String(deviceId) }),
  parseBundle: (items, deviceId) => parseBundle(items, deviceId),
};

export interface Omemo2EngineOptions extends Partial<Omemo2Options> {
  /** The hosted JIDs' identity (device id and X25519 identity scalar): the legacy OMEMO keyring's. */
  identity: IdentitySource;
  /** Legacy OMEMO, for a contact's devices that are only in its legacy device list. */
  legacy?: OmemoEngine | null;
  /**
   * Where digests of decrypted messages are kept (the keystore's replay table, bridge.replay_window).
   * Default: the keystore of `ports`, 30 days.
   */
  replay?: ReplayGuard;
  /** The device label each hosted JID publishes (XEP-0384 `label`), null for none. */
  deviceLabel?: (local: string) => string | null;
}

export interface Omemo2Engine extends GroupEngine {
  /** Legacy OMEMO is the older version of this protocol: a contact reached by both gets OMEMO 2. */
  readonly supersedes: 'omemo';
  devices(local: string): Promise<Array<{ device_id: number; fingerprint: string }>>;
  contactDevices(local: string, contact: string, opts?: { refresh?: boolean; bundles?: boolean }): Promise<ContactDevice[]>;
  /**
   * The label `contact`'s cached device list gives a device: `verified` when its signature verifies
   * against the identity key whose fingerprint is given, unverified when it carries no signature
   * (XEP-0384 0.8 clients); null when there is none or its signature does not verify.
   */
  deviceLabel(contact: string, deviceId: number, fingerprint: string): { label: string; verified: boolean } | null;
  settled(): Promise<void>;
  readonly internals: Omemo2Context;
}

export function createOmemo2Engine(ports: EnginePorts, options: Omemo2EngineOptions): Omemo2Engine {
  const { identity, legacy = null, replay, deviceLabel, ...rest } = options;
  const opts: Omemo2Options = { ...DEFAULT_OPTIONS, ...rest };
  if (opts.preKeyCount < 25) throw new Error('omemo2 preKeyCount must be at least 25 (XEP-0384)');
  const log = ports.log.child({ protocol: PROTOCOL });
  const ctx: Omemo2Context = {
    ports,
    opts,
    log,
    keyring: new Keyring(ports.store, ports.pubsub, identity, log, () => ports.now(), opts, deviceLabel),
    sessions: new Sessions(ports.store, opts.sessionCacheSize),
    devices: new DeviceLists<PeerBundle>(ports.pubsub, ports.trust, log, () => ports.now(), opts, OMEMO2_DEVICE_LISTS),
    replay: replay ?? new ReplayGuard(new ReplayStore(ports.keystore), PROTOCOL, 30, () => ports.now()),
    ...newCaches(),
  };
  let connected = true;
  let connectedSince = ports.now();

  /** Legacy-only device ids of `peer` (not in its OMEMO 2 list), [] when legacy is off or unreachable. */
  async function legacyOnly(local: string, peer: string, omemo2Ids: readonly number[]): Promise<number[]> {
    if (!legacy) return [];
    const ids = await legacy.internals.devices.get(local, peer).catch(() => null);
    const skip = new Set(omemo2Ids);
    return (ids ?? []).filter((d) => !skip.has(d));
  }

  async function decryptSafely(local: string, stanza: Element, group?: { sender: string; room: string }): Promise<Decrypted> {
    try {
      return await decryptStanza(ctx, local, stanza, group);
    } catch (e) {
      log.error({ local, err: e instanceof Error ? { type: e.name, message: e.message } : 'non-error' }, 'omemo2 decrypt failed unexpectedly');
      ports.metrics.decryptFailures.inc({ protocol: PROTOCOL, reason: 'internal' });
      return { ok: false, reason: 'internal', replies: [] };
    }
  }

  const engine: Omemo2Engine = {
    id: 'omemo2',
    supersedes: 'omemo',
    features: [`${NODE_DEVICES}+notify`],

    recognizes: (stanza: Element) => stanza.getChild('encrypted', NS_OMEMO2) !== undefined,

    async ensureIdentity(local) {
      await ctx.keyring.ensureBundle(local);
    },

    async prepareNode(local, node) {
      // A device list read needs only the identity; the bundle is made when our own item is read.
      if (node === NODE_DEVICES) await ctx.keyring.ensure(local);
      else if (node === NODE_BUNDLES) await ctx.keyring.ensureBundle(local);
    },

    async identity(local): Promise<IdentityFacts> {
      return { omemo2: await engine.devices(local) };
    },

    decrypt: (local, stanza) => decryptSafely(local, stanza),

    decryptFrom: (local, stanza, sender) => decryptSafely(local, stanza, { sender, room: String(stanza.attrs.from ?? '').split('/')[0]! }),

    deviceListNode: NODE_DEVICES,

    async encryptGroup(local, peers, body, o = {}) {
      const id = await ctx.keyring.ensure(local);
      const undelivered: string[] = [];
      const recipients: Array<{ peer: string; ids: readonly number[] }> = [];
      await Promise.all(
        [...new Set(peers)]
          .filter((p) => p !== local)
          .map(async (peer) => {
            const ids = o.only?.get(peer) ?? (await ctx.devices.get(local, peer).catch(() => null)) ?? [];
            if (ids.length > 0) recipients.push({ peer, ids });
            else undelivered.push(peer);
          }),
      );
      if (recipients.length === 0) throw new GatewayError('no_encryption_available', peers.length === 0 ? 'The room has no other occupant to encrypt for.' : 'No occupant lists an OMEMO 2 device.');
      const g = await encryptGroup(ctx, id, recipients, body, o.room ?? local);
      return { children: g.children, undelivered: [...undelivered, ...g.undelivered].sort(), keyed: g.keyed };
    },

    async watchPeer(local, peer) {
      await ctx.keyring.ensure(local);
      await ctx.devices.get(local, peer, true);
    },

    async listedDevices(local, peer) {
      await ctx.keyring.ensure(local);
      return ctx.devices.get(local, peer);
    },

    cachedDevices: (peer) => {
      const ids = ctx.devices.cached(peer);
      return ids === undefined ? null : (ids ?? []);
    },

    async encrypt(local, peer, body): Promise<Encrypted> {
      const id = await ctx.keyring.ensure(local);
      const ids = (await ctx.devices.get(local, peer)) ?? [];
      const older = await legacyOnly(local, peer, ids);
      if (ids.length === 0 && older.length === 0) throw new GatewayError('no_encryption_available', `${peer} publishes no OMEMO 2 devices.`);
      let children: Element[] | null = null;
      let first: unknown = null;
      if (ids.length > 0) {
        try {
          children = await encryptBody(ctx, id, peer, ids, body);
        } catch (e) {
          if (older.length === 0 || !(e instanceof GatewayError)) throw e;
          first = e;
        }
      }
      if (older.length === 0) return { children: children! };
      // The devices only in the legacy list get the same body in a legacy stanza of their own.
      let more: Encrypted | null = null;
      try {
        more = await legacy!.encrypt(local, peer, body, { only: older });
      } catch (e) {
        if (!children) throw first ?? e;
        log.info({ local, contact: peer, err: e instanceof Error ? e.message : 'non-error' }, 'legacy-only devices not reached');
      }
      if (!children) return more!;
      return more ? { children, more: [more] } : { children };
    },

    async reachability(local, peer): Promise<Reachability> {
      await ctx.keyring.ensure(local);
      const ids = await ctx.devices.get(local, peer);
      if (!ids || ids.length === 0) return 'no';
      // The stored trust is read only for a device without a session (a sent message's usual case is none).
      let known: ReturnType<typeof ports.trust.list> | null = null;
      let unknown = false;
      let usableWithoutSession = false;
      for (const deviceId of ids) {
        const s = ctx.sessions.get(local, peer, deviceId);
        if (s) {
          if (isUsable(ports.trust.observe(peer, PROTOCOL, String(deviceId), fingerprintOf(s.theirIk), ports.now()))) return 'ready';
          continue;
        }
        known ??= ports.trust.list(peer, PROTOCOL);
        const rec = known.find((r) => r.deviceId === String(deviceId) && r.active);
        if (!rec) unknown = true;
        else if (isUsable(rec.trust)) usableWithoutSession = true;
      }
      return usableWithoutSession || (unknown && ports.trust.policy !== 'manual') ? 'needs-session' : 'no';
    },

    ownsNode: (node) => node === NODE_DEVICES || node === NODE_BUNDLES,

    async onPepEvent(_local, from, node, items) {
      if (node !== NODE_DEVICES) return;
      ctx.devices.set(from.split('/')[0]!, parseDeviceList(items), parseDeviceLabels(items));
    },

    async maintain() {
      const pruned = ctx.replay.prune();
      if (pruned > 0) log.debug({ pruned }, 'pruned replay digests');
      const now = ports.now();
      const deletableBefore = connected && now - connectedSince >= opts.preKeyGraceMs ? now - opts.preKeyGraceMs : -Infinity;
      for (const local of ctx.keyring.locals()) {
        try {
          await ctx.keyring.rotateSignedPreKey(local);
          ctx.keyring.prunePreKeys(local, deletableBefore);
        } catch (e) {
          log.warn({ local, err: e instanceof Error ? { type: e.name, message: e.message } : 'non-error' }, 'omemo2 maintenance failed');
        }
      }
    },

    onConnectionChange(up) {
      connected = up;
      if (up) connectedSince = ports.now();
    },

    async devices(local) {
      const id = await ctx.keyring.ensure(local);
      return [{ device_id: id.deviceId, fingerprint: id.fingerprint }];
    },

    async contactDevices(local, contact, o = {}) {
      await ctx.keyring.ensure(local);
      const ids = await ctx.devices.get(local, contact, o.refresh === true).catch(() => ctx.devices.cached(contact) ?? null);
      return listContactDevices({
        trust: ports.trust,
        protocol: PROTOCOL,
        contact,
        now: ports.now(),
        listed: ids,
        withSessions: ctx.sessions.deviceIds(local, contact),
        sessionFingerprint: (deviceId) => {
          const s = ctx.sessions.get(local, contact, deviceId);
          return s ? fingerprintOf(s.theirIk) : null;
        },
        ...(o.bundles && { bundleFingerprint: async (deviceId: number) => {
          const b = await ctx.devices.bundle(local, contact, deviceId);
          return b ? fingerprintOf(b.ik) : null;
        } }),
      });
    },

    async refreshContact(local, contact) {
      await ctx.keyring.ensure(local);
      // A list we may not read (keys_not_visible) or cannot reach says so, not "refreshed".
      await ctx.devices.get(local, contact, true);
      await engine.contactDevices(local, contact, { bundles: true });
    },

    deviceLabel(contact, deviceId, fingerprint) {
      const l = ctx.devices.labels(contact)?.get(deviceId);
      if (!l) return null;
      if (l.sig === null) return { label: l.label, verified: false };
      // A signature that does not verify is a label someone else put there: not shown at all.
      if (!/^[0-9a-f]{64}$/.test(fingerprint)) return null;
      return ed25519Verify(Buffer.from(fingerprint, 'hex'), Buffer.from(l.label, 'utf8'), l.sig) ? { label: l.label, verified: true } : null;
    },

    settled: () => ctx.devices.settled(),
    internals: ctx,
  };
  return engine;
}
