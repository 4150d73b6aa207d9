// Legacy OMEMO (XEP-0384 v0.3.0, eu.siacs.conversations.axolotl) for the gateway's hosted JIDs, on
// the gateway's own X3DH and Double Ratchet (bridges/ratchet/, with legacy's constants and wire
// format in legacy-protocol.ts). The parts:
//   keyring.ts      own identities, prekeys, bundle/device list publishing
//   sessions.ts     sessions (cached records, locks, rollback; libsignal-era records converted)
//   device-cache.ts contacts' device lists and bundles
//   encrypt.ts / decrypt.ts / replies.ts   the message flows
import { LRUCache } from 'lru-cache';
import type Element from 'ltx/lib/Element.js';
import type { Encrypted, EnginePorts, GroupEngine, IdentityFacts, Reachability } from '../engine.js';
import { isUsable } from '../../keystore/trust-store.js';
import { GatewayError } from '../../errors.js';
import { DEFAULT_OPTIONS, NODE_BUNDLES_PREFIX, bundleNode, NODE_DEVICELIST, NS_OMEMO, PROTOCOL, type OmemoOptions } from './constants.js';
import { OmemoMetrics, type OmemoContext } from './context.js';
import { decryptStanza } from './decrypt.js';
import { DeviceLists } from './device-cache.js';
import { listContactDevices, type ContactDevice } from './contact-devices.js';
import { encryptBody, encryptGroup } from './encrypt.js';
import { fingerprintOf, Keyring } from './keyring.js';
import { Sessions } from './sessions.js';
import { parseDeviceList } from './wire.js';
import { ReplayStore } from '../../keystore/replay-store.js';
import { ReplayGuard } from '../pgp/replay-guard.js';

export interface OmemoEngineOptions extends Partial<OmemoOptions> {
  /**
   * Where digests of decrypted messages are kept (the keystore's replay table, bridge.replay_window).
   * Default: the keystore of `ports`, 30 days.
   */
  replay?: ReplayGuard;
}

export type { ContactDevice } from './contact-devices.js';

export interface OmemoEngine extends GroupEngine {
  /** The hosted JID's own OMEMO device(s) (the gateway runs one per JID). */
  devices(local: string): Promise<Array<{ device_id: number; fingerprint: string }>>;
  /** `only`: just these device ids (OMEMO 2 sends to the devices that are in no OMEMO 2 list). */
  encrypt(local: string, peer: string, body: string, opts?: { only?: readonly number[] }): Promise<Encrypted>;
  /** The hosted JID's identity key fingerprint (64 lowercase hex, no 05 prefix). */
  fingerprint(local: string): Promise<string>;
  /**
   * A contact's devices with fingerprints and trust. `refresh` re-reads the device list; `bundles`
   * also fetches the bundles of devices whose key we have not seen yet, so they can be verified.
   */
  contactDevices(local: string, contact: string, opts?: { refresh?: boolean; bundles?: boolean }): Promise<ContactDevice[]>;
  /** Tell the engine about the XMPP connection: used prekeys are kept until a backlog after a reconnect is in. */
  onConnectionChange(connected: boolean): void;
  /** Resolves when background work (device list refreshes) is done. */
  settled(): Promise<void>;
  /** Writes every pending session change (normally done at the end of each operation). */
  flush(): void;
  /** Internals for tests and diagnostics. */
  readonly internals: { keyring: Keyring; sessions: Sessions; devices: DeviceLists; opts: OmemoOptions };
}

export function createOmemoEngine(ports: EnginePorts, options: OmemoEngineOptions = {}): OmemoEngine {
  const { replay, ...rest } = options;
  const opts: OmemoOptions = { ...DEFAULT_OPTIONS, ...rest };
  if (opts.preKeyCount < 20) throw new Error('omemo preKeyCount must be at least 20 (XEP-0384)');
  const log = ports.log.child({ protocol: PROTOCOL });
  const keyring = new Keyring(ports.store, ports.pubsub, log, () => ports.now(), opts, ports.admitIdentity);
  const sessions = new Sessions(ports.store, keyring, opts.sessionCacheSize);
  const devices = new DeviceLists(ports.pubsub, ports.trust, log, () => ports.now(), opts);
  const ctx: OmemoContext = {
    ports,
    metrics: new OmemoMetrics(ports.metrics),
    opts,
    log,
    keyring,
    sessions,
    devices,
    replay: replay ?? new ReplayGuard(new ReplayStore(ports.keystore), PROTOCOL, 30, () => ports.now()),
    repairs: new LRUCache({ max: opts.peerCacheEntries }),
    heartbeats: new LRUCache({ max: opts.peerCacheEntries }),
    building: new Map(),
  };
  devices.onLimited = () => ports.metrics.limited.inc({ limit: 'bundle_fetches' });
  for (const [name, size] of Object.entries({ omemo_repairs: () => ctx.repairs.size, omemo_heartbeats: () => ctx.heartbeats.size, omemo_seen: () => ctx.replay.cached, omemo_identities: () => keyring.cachedCount })) {
    ports.metrics.registerCache(name, size);
  }
  for (const name of Object.keys(devices.sizes())) ports.metrics.registerCache(name, () => devices.sizes()[name]!);
  let connected = true;
  let connectedSince = ports.now();

  // Sessions gauge: counted in the keystore at the first scrape, then tracked as sessions come and go.
  const countAll = () =>
    ports.keystore.db.prepare<[string, string], { n: number }>('SELECT count(*) AS n FROM kv WHERE protocol = ? AND kind = ?').get(PROTOCOL, 'session')?.n ?? 0;
  ports.metrics.onCollect(() => ports.metrics.sessions.set({ protocol: PROTOCOL }, sessions.count(countAll)));

  const engine: OmemoEngine = {
    id: 'omemo',
    features: [`${NODE_DEVICELIST}+notify`],

    recognizes: (stanza: Element) => stanza.getChild('encrypted', NS_OMEMO) !== undefined,

    async ensureIdentity(local) {
      await keyring.ensureBundle(local);
    },

    async prepareNode(local, node) {
      // A device list read needs only the device id and identity key; the bundle is made when read.
      if (node !== NODE_DEVICELIST && !node.startsWith(NODE_BUNDLES_PREFIX)) return;
      const id = await keyring.ensure(local);
      // Only a read of our own device's bundle node completes it (not a made-up device id).
      if (node === bundleNode(id.deviceId)) await keyring.ensureBundle(local);
    },

    async identity(local): Promise<IdentityFacts> {
      return { omemo: await engine.devices(local) };
    },

    decrypt: (local, stanza) => engine.decryptFrom(local, stanza, String(stanza.attrs.from ?? '')),

    async decryptFrom(local, stanza, sender) {
      try {
        return await decryptStanza(ctx, local, stanza, sender);
      } catch (e) {
        // Anything not foreseen is still a value for the caller (peer input must never throw).
        log.error({ local, err: e instanceof Error ? { type: e.name, message: e.message } : 'non-error' }, 'omemo decrypt failed unexpectedly');
        ports.metrics.decryptFailures.inc({ protocol: PROTOCOL, reason: 'internal' });
        return { ok: false, reason: 'internal', replies: [] };
      }
    },

    encrypt: (local, peer, body, o) => encryptBody(ctx, local, peer, body, o?.only),

    deviceListNode: NODE_DEVICELIST,

    encryptGroup: (local, peers, body, o) => encryptGroup(ctx, local, peers, body, o),

    async watchPeer(local, peer) {
      await keyring.ensure(local);
      await devices.get(local, peer, true);
    },

    async listedDevices(local, peer) {
      await keyring.ensure(local);
      return devices.get(local, peer);
    },

    cachedDevices: (peer) => {
      const ids = devices.cached(peer);
      return ids === undefined ? null : (ids ?? []);
    },

    async reachability(local, peer): Promise<Reachability> {
      await keyring.ensure(local);
      const ids = await devices.get(local, peer);
      if (!ids || ids.length === 0) return 'no';
      // The stored trust is read only for a device without a session (a sent message's usual case is none).
      let known: ReturnType<typeof ports.trust.list> | null = null;
      let unknown = false;
      let usableWithoutSession = false;
      for (const deviceId of ids) {
        const open = sessions.openSession(local, peer, deviceId);
        if (open) {
          const t = ports.trust.observe(peer, PROTOCOL, String(deviceId), fingerprintOf(open.remoteIdentityKey), ports.now());
          if (isUsable(t)) return 'ready';
          continue;
        }
        known ??= ports.trust.list(peer, PROTOCOL);
        const rec = known.find((r) => r.deviceId === String(deviceId) && r.active);
        if (!rec) unknown = true;
        else if (isUsable(rec.trust)) usableWithoutSession = true;
      }
      // A device whose key we have not seen yet may turn out trusted (BTBV) once its bundle is read.
      return usableWithoutSession || (unknown && ports.trust.policy !== 'manual') ? 'needs-session' : 'no';
    },

    ownsNode: (node) => node === NODE_DEVICELIST || node.startsWith(NODE_BUNDLES_PREFIX),

    async onPepEvent(_local, from, node, items) {
      if (node !== NODE_DEVICELIST) return;
      devices.set(from.split('/')[0]!, parseDeviceList(items));
    },

    async maintain() {
      const pruned = ctx.replay.prune();
      if (pruned > 0) log.debug({ pruned }, 'pruned replay digests');
      const now = ports.now();
      // Used prekeys go only once their grace period is over and a backlog after the last (re)connect is in.
      const deletableBefore = connected && now - connectedSince >= opts.preKeyGraceMs ? now - opts.preKeyGraceMs : -Infinity;
      for (const local of keyring.locals()) {
        try {
          await keyring.rotateSignedPreKey(local);
          keyring.prunePreKeys(local, deletableBefore);
        } catch (e) {
          log.warn({ local, err: e instanceof Error ? { type: e.name, message: e.message } : 'non-error' }, 'omemo maintenance failed');
        }
      }
    },

    async devices(local) {
      const id = await keyring.ensure(local);
      return [{ device_id: id.deviceId, fingerprint: id.fingerprint }];
    },

    async fingerprint(local) {
      return (await keyring.ensure(local)).fingerprint;
    },

    async contactDevices(local, contact, o = {}) {
      await keyring.ensure(local);
      let ids: number[] | null;
      try {
        ids = await devices.get(local, contact, o.refresh === true);
      } catch (e) {
        if (!(e instanceof GatewayError)) throw e;
        ids = devices.cached(contact) ?? null;
      }
      return listContactDevices({
        trust: ports.trust,
        protocol: PROTOCOL,
        contact,
        now: ports.now(),
        listed: ids,
        withSessions: sessions.deviceIds(local, contact),
        sessionFingerprint: (deviceId) => {
          const open = sessions.openSession(local, contact, deviceId);
          return open ? fingerprintOf(open.remoteIdentityKey) : null;
        },
        ...(o.bundles && { bundleFingerprint: async (deviceId: number) => {
          const b = await devices.bundle(local, contact, deviceId);
          return b ? fingerprintOf(b.identityKey) : null;
        } }),
      });
    },

    async refreshContact(local, contact) {
      await keyring.ensure(local);
      // A list we may not read (keys_not_visible) or cannot reach says so, not "refreshed".
      await devices.get(local, contact, true);
      await engine.contactDevices(local, contact, { bundles: true });
    },

    onConnectionChange(up) {
      connected = up;
      if (up) connectedSince = ports.now();
    },

    settled: () => devices.settled(),
    flush: () => sessions.flush(),
    internals: { keyring, sessions, devices, opts },
  };
  return engine;
}
