// Builds the whole gateway once from its config (like atproto's AppContext.fromConfig) and owns its
// lifecycle: start (HTTP, then the component) and an orderly stop.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express, Router as ExpressRouter } from 'express';
import type { Logger } from 'pino';
import type Element from 'ltx/lib/Element.js';
import type { Config } from './config.js';
import { publicView } from './config.js';
import { createLogger } from './log.js';
import { Metrics } from './http/metrics.js';
import { Keystore, type OpenOptions } from './keystore/keystore.js';
import { createProtocolStore } from './keystore/protocol-store.js';
import { TrustStore, type DeviceRecord } from './keystore/trust-store.js';
import { ContactStore } from './keystore/contact-store.js';
import { SubscriptionStore } from './keystore/subscription-store.js';
import { PubsubStore } from './keystore/pubsub-store.js';
import { Addressing, RESOURCE } from './component/addressing.js';
import { formatJid } from './component/jid.js';
import { ComponentConnection } from './component/connection.js';
import { Router } from './component/router.js';
import { Disco, NS_PING } from './component/disco.js';
import { RemoteCaps } from './component/caps.js';
import { PresenceService } from './component/presence.js';
import { PubsubService } from './component/pubsub.js';
import { EngineRegistry } from './bridges/registry.js';
import type { EnginePorts, ProtocolId } from './bridges/engine.js';
import { BridgeCore, type InboundRoutes } from './bridges/core.js';
import { OutboundSender } from './bridges/outbound.js';
import { ProxyBridge } from './bridges/proxy-bridge.js';
import { createEngines } from './bridges/engines.js';
import type { PgpEngine } from './bridges/pgp/engine.js';
import type { OmemoEngine } from './bridges/omemo/engine.js';
import type { OxEngine } from './bridges/ox/engine.js';
import { hookSignedPresence, pgpKeyRegistry } from './bridges/pgp/gateway-hooks.js';
import { OutboxStore, type OutboxMessage } from './keystore/outbox-store.js';
import { WebhookStore } from './keystore/webhook-store.js';
import { OutboxSender, type StatusChange } from './bridges/outbox-sender.js';
import type { InboundMessage } from './bridges/core.js';
import { WebhookDispatcher } from './http/webhooks.js';
import { TokenBuckets } from './http/rate-limit.js';
import { messagesRoutes, type MessagesDeps } from './http/routes/messages.js';
import { fastMessages } from './http/fast-messages.js';
import { identitiesRoutes } from './http/routes/identities.js';
import { contactsRoutes, type RefreshOutcome } from './http/routes/contacts.js';
import { webhookAdminRoutes } from './http/routes/webhooks-admin.js';
import { openapiRoutes } from './http/openapi.js';
import { ChatCommands } from './component/commands.js';
import { GatewayError, type ErrorCode } from './errors.js';
import { TokenAuth } from './http/auth.js';
import { createApp } from './http/app.js';
import { perMinute } from './limits.js';
import { StanzaLimits } from './component/stanza-limits.js';
import { InboundQueue } from './component/inbound-queue.js';
import { errorReply } from './component/stanza.js';
import { IdentityGate } from './bridges/identity-gate.js';
import { LoopLag } from './loop-lag.js';
import { BackPressure } from './http/back-pressure.js';
import type { ReadinessCheck } from './http/health.js';
import { RoomService, type RoomMessage } from './bridges/rooms/room-service.js';
import { roomsRoutes } from './http/routes/rooms.js';

export interface GatewayOptions {
  log?: Logger;
  /** Keystore KDF cost (tests lower it). */
  keystore?: OpenOptions;
  /** Overrides for tests: extra authenticated API routers. */
  api?: ExpressRouter[];
  /** Group chat timing (tests shorten it). */
  rooms?: { selfPingMs?: number; joinTimeoutMs?: number };
  /** keystore.url: this gateway is the active instance of several (ha/instance.ts owns the rest). */
  ha?: ActiveRole;
}

/** What the active instance of several runs on (ha/instance.ts). */
export interface ActiveRole {
  /** The working copy of the PostgreSQL keystore. */
  keystore: Keystore;
  /** Resolves once every change so far is committed in PostgreSQL; rejects once fenced. */
  barrier(): Promise<void>;
  /** The lease is held and valid: only then may anything be sent. */
  mayAct(): boolean;
  /**
   * A stanza read from the server while the lease is not held (a frozen former active instance
   * that ejabberd kept feeding): stored for the active instance to handle instead of being lost.
   */
  handOff?(el: Element): Promise<void>;
}

export class Gateway {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly keystore: Keystore;
  readonly trust: TrustStore;
  readonly contacts: ContactStore;
  readonly subscriptions: SubscriptionStore;
  readonly addressing: Addressing;
  readonly conn: ComponentConnection;
  readonly router: Router;
  readonly disco: Disco;
  readonly presence: PresenceService;
  readonly pubsub: PubsubService;
  readonly engines: EngineRegistry;
  readonly pgp: PgpEngine | null;
  readonly omemo: OmemoEngine | null;
  readonly ox: OxEngine | null;
  readonly core: BridgeCore;
  readonly outbound: OutboundSender;
  readonly proxies: ProxyBridge;
  readonly outbox: OutboxStore;
  readonly webhookStore: WebhookStore;
  readonly webhooks: WebhookDispatcher;
  readonly sender: OutboxSender;
  readonly commands: ChatCommands;
  readonly rooms: RoomService;
  readonly app: Express;
  readonly identityGate: IdentityGate;
  readonly loopLag = new LoopLag();
  readonly inbound: InboundQueue;
  #server: Server | null = null;
  #ha: ActiveRole | null;
  #stopping = false;
  #inflight = new Set<Promise<unknown>>();
  #maintenance: NodeJS.Timeout | null = null;
  /** Bot bare JID -> localpart (a receipt to a bot is for a bot's message). */
  readonly #botsByJid: Map<string, string>;

  constructor(config: Config, opts: GatewayOptions = {}) {
    this.config = config;
    this.log = opts.log ?? createLogger(config.log.level);
    this.metrics = new Metrics();
    const log = this.log;
    const ha = opts.ha ?? null;
    this.#ha = ha;
    this.keystore = ha ? ha.keystore : Keystore.open(config.keystore.path, config.keystore.passphrase, opts.keystore);
    this.metrics.active.set(1);
    this.trust = new TrustStore(this.keystore, config.bridge.trust);
    this.contacts = new ContactStore(this.keystore);
    this.subscriptions = new SubscriptionStore(this.keystore);
    this.addressing = new Addressing(config.component.domain, config.bots.map((b) => b.localpart), config.bridge.allowedDomains);
    this.#botsByJid = new Map(config.bots.map((b) => [this.addressing.botJid(b.localpart), b.localpart]));
    this.conn = new ComponentConnection({
      service: config.component.service,
      domain: config.component.domain,
      secret: config.component.secret,
      maxDelayMs: config.component.reconnectMaxDelayMs,
      keepaliveMs: config.component.keepaliveMs,
      log: log.child({ subsystem: 'component' }),
      metrics: this.metrics,
      ...(ha ? { allowed: () => ha.mayAct() } : {}),
      pacing: config.limits,
    });
    // With several instances no stanza leaves before the state it depends on is in PostgreSQL.
    // What the send changes (an outbox row marked sent) is not shipped on its own: it rides on the
    // next batch, a later stanza's or answer's barrier or the write-through's timer (every 10 ms),
    // so a line's next message waits for one round trip, not two. The window in which a crash makes
    // the next active instance send a message again is that: the timer plus a round trip or two.
    const send = ha
      ? async (el: Element) => {
          await ha.barrier();
          await this.conn.send(el);
        }
      : (el: Element) => this.conn.send(el);
    const request = (iq: Element, timeoutMs?: number) => this.conn.request(iq, timeoutMs);
    const limits = config.limits;
    // Rooms are created below; a room's stanzas are charged per occupant.
    const stanzaLimits = new StanzaLimits({ limits, metrics: this.metrics, ownDomain: config.component.domain, isRoom: (bare) => this.rooms?.isAnyBotsRoom(bare) ?? false });
    this.identityGate = new IdentityGate({
      limits,
      metrics: this.metrics,
      keystore: this.keystore,
      protocols: ['omemo', 'omemo2', 'pgp', 'ox', 'otr'],
      exempt: config.bots.map((b) => this.addressing.botJid(b.localpart)),
    });
    this.router = new Router({ send, addressing: this.addressing, log: log.child({ subsystem: 'router' }), metrics: this.metrics, limits: stanzaLimits });
    const caps = new RemoteCaps(request, log.child({ subsystem: 'caps' }));
    // One budget of automatic text replies per (hosted JID, contact), shared by every kind of notice.
    const autoReplies = perMinute(limits.auto_replies_per_contact_per_minute, limits.peer_cache_entries);
    const messageErrors = perMinute(limits.message_errors_per_contact_per_minute, limits.peer_cache_entries);
    const mayAutoReply = (local: string, peer: string): boolean => {
      if (autoReplies.take(`${local}\0${peer.split('/')[0]!}`) === 0) return true;
      this.metrics.limited.inc({ limit: 'auto_replies' });
      return false;
    };

    // Engines are created before disco (their features go into caps) but need the pubsub port:
    // the port is late-bound to the service built just below.
    let pubsubRef: PubsubService | null = null;
    const pubsubPort: EnginePorts['pubsub'] = {
      publish: (...a) => pubsubRef!.publish(...a),
      retract: (...a) => pubsubRef!.retract(...a),
      localItems: (...a) => pubsubRef!.localItems(...a),
      fetch: (...a) => pubsubRef!.fetch(...a),
    };
    const portsFor = (id: ProtocolId): EnginePorts => ({
      store: createProtocolStore(this.keystore, id),
      trust: this.trust,
      contacts: this.contacts,
      keystore: this.keystore,
      pubsub: pubsubPort,
      metrics: this.metrics,
      log: log.child({ subsystem: id }),
      now: () => Date.now(),
      resource: RESOURCE,
      admitIdentity: (local) => this.identityGate.admit(local),
      mayAutoReply,
    });
    const engines = createEngines(config, portsFor);
    this.engines = new EngineRegistry(engines.all);
    this.pgp = engines.pgp;
    this.omemo = engines.omemo;
    this.ox = engines.ox;
    // Not connected yet: engines that keep state across reconnects (OMEMO prekeys) start offline.
    for (const e of engines.all) e.onConnectionChange?.(false);

    this.disco = new Disco({
      domain: config.component.domain,
      engineFeatures: this.engines.features(),
      bots: config.bots.map((b) => ({ jid: this.addressing.botJid(b.localpart), name: b.localpart })),
    });
    this.presence = new PresenceService({
      send,
      subs: this.subscriptions,
      disco: this.disco,
      caps,
      addressing: this.addressing,
      log: log.child({ subsystem: 'presence' }),
      maxOnline: limits.peer_cache_entries,
      onUntracked: () => this.metrics.limited.inc({ limit: 'peer_cache_entries' }),
      admit: (local) => this.identityGate.admit(local),
    });
    this.metrics.registerCache('presence_online', () => this.presence.onlineCount);
    this.pubsub = new PubsubService({
      store: new PubsubStore(this.keystore),
      presence: this.presence,
      send,
      request,
      log: log.child({ subsystem: 'pubsub' }),
      parsedCacheSize: limits.peer_cache_entries,
      beforeRead: async (owner, node) => {
        for (const e of this.engines.all()) if (e.ownsNode?.(node)) await (e.prepareNode ? e.prepareNode(owner, node) : e.ensureIdentity(owner));
      },
    });
    pubsubRef = this.pubsub;
    this.metrics.registerCache('pubsub_parsed', () => this.pubsub.parsedCount);
    const pgp = this.pgp;
    const pgpKeys = pgp ? pgpKeyRegistry(pgp, this.contacts) : null;
    if (pgp) hookSignedPresence(pgp, { presence: this.presence, contacts: this.contacts, domain: this.addressing.domain, send, log: log.child({ subsystem: 'pgp-presence' }) });

    this.outbound = new OutboundSender({
      engines: this.engines,
      contacts: this.contacts,
      preference: config.bridge.outboundPreference,
      send,
      resource: RESOURCE,
      metrics: this.metrics,
      log: log.child({ subsystem: 'outbound' }),
    });
    this.outbox = new OutboxStore(this.keystore);
    this.proxies = new ProxyBridge({
      addressing: this.addressing,
      outbound: this.outbound,
      outbox: this.outbox,
      ttlMs: config.outbox.messageTtlSeconds * 1000,
      queued: () => this.sender.kick(),
      send,
      resource: RESOURCE,
      mayAutoReply,
      log: log.child({ subsystem: 'proxy' }),
    });
    this.core = new BridgeCore({
      engines: this.engines,
      routes: this.#routes(),
      contacts: this.contacts,
      send,
      resource: RESOURCE,
      metrics: this.metrics,
      log: log.child({ subsystem: 'bridge' }),
      maxBody: (p) => (p === 'omemo' ? limits.omemo_max_body : p === 'pgp' || p === 'ox' ? limits.pgp_max_body : undefined),
      mayReplyError: (local, peer) => {
        if (messageErrors.take(`${local}\0${peer}`) === 0) return true;
        this.metrics.limited.inc({ limit: 'message_errors' });
        return false;
      },
    });

    this.webhookStore = new WebhookStore(this.keystore);
    this.webhooks = new WebhookDispatcher({
      store: this.webhookStore,
      bots: config.bots,
      metrics: this.metrics,
      log: log.child({ subsystem: 'webhooks' }),
      timeoutMs: config.webhooks.timeoutMs,
      retryForMs: config.webhooks.retryForSeconds * 1000,
      maxDelayMs: config.webhooks.maxAttemptDelaySeconds * 1000,
      ...(ha ? { beforeDeliver: () => this.#mayDeliver(ha) } : {}),
    });
    this.rooms = new RoomService({
      bots: config.bots,
      botJid: (l) => this.addressing.botJid(l),
      resource: RESOURCE,
      send,
      request,
      engines: [engines.omemo2, engines.omemo].filter((e): e is NonNullable<typeof e> => e !== null),
      deliver: (localpart, msg) => this.#toBotFromRoom(localpart, msg),
      plaintextAllowed: (localpart) => this.config.bridge.allowPlaintext || (this.config.bots.find((b) => b.localpart === localpart)?.allowPlaintext ?? false),
      metrics: this.metrics,
      log: log.child({ subsystem: 'rooms' }),
      ...opts.rooms,
    });
    this.sender = new OutboxSender({
      rooms: this.rooms,
      store: this.outbox,
      outbound: this.outbound,
      bots: config.bots,
      botJid: (l) => this.addressing.botJid(l),
      isOnline: () => this.conn.online,
      allowPlaintext: config.bridge.allowPlaintext,
      metrics: this.metrics,
      log: log.child({ subsystem: 'outbox' }),
      onStatus: (c) => this.#statusChanged(c),
      otrSessionTimeoutMs: config.bridge.otrSessionTimeoutSeconds * 1000,
      askToFollow: (from, to) => this.presence.askToFollow(from, to),
    });
    this.presence.addListener({ approved: (local, contact) => this.sender.approved(local, contact) });
    this.commands = new ChatCommands({
      send,
      addressing: this.addressing,
      subs: this.subscriptions,
      facts: { fingerprints: (local) => this.#fingerprintLines(local) },
      pgp: pgpKeys && {
        publicKey: (local) => pgpKeys.publicKey(local),
        register: (contact, armored) => pgpKeys.register(contact, armored, { viaAdmin: false }),
        remove: (contact) => pgpKeys.remove(contact),
      },
      mayAutoReply,
      log: log.child({ subsystem: 'commands' }),
    });

    this.disco.register(this.router);
    this.pubsub.register(this.router);
    this.router.claim((ctx) => this.rooms.claim(ctx));
    this.router.presence((ctx) => {
      if (ctx.stanza.attrs.type === 'unavailable' && ctx.address.kind !== 'domain') {
        for (const e of this.engines.all()) e.onUnavailable?.(ctx.address.local, formatJid(ctx.from));
      }
      return this.presence.handle(ctx);
    });
    this.router.message((ctx) => (ctx.address.kind === 'domain' ? this.commands.handle(ctx) : this.core.handle(ctx)));
    this.inbound = new InboundQueue({
      handle: (el) => (ha && !ha.mayAct() ? this.#handOff(ha, el) : this.router.handle(el)),
      maxQueued: config.limits.max_inbound_queue,
      urgent: (el) => el.name === 'iq' && el.attrs.type === 'get' && el.getChild('ping', NS_PING) !== undefined,
      // Answers are not made faster than the server reads them (output-pacer.ts `behind`).
      blocked: () => this.conn.outputBehind,
      onDrop: (el) => {
        this.metrics.limited.inc({ limit: 'inbound_queue' });
        const type = String(el.attrs.type ?? '');
        if (el.name === 'iq' && (type === 'get' || type === 'set')) {
          this.conn.send(errorReply(el, 'resource-constraint', 'The gateway is overloaded; retry later.')).catch(() => undefined);
        }
      },
    });
    this.metrics.registerCache('inbound_queue', () => this.inbound.size);
    this.conn.on('stanza', (el) => this.inbound.push(el));
    this.conn.on('progress', () => this.inbound.kick());
    this.conn.on('online', () => this.#track(this.#onOnline()));
    this.conn.on('offline', () => {
      this.inbound.kick();
      this.rooms.onOffline();
      for (const e of this.engines.all()) e.onConnectionChange?.(false);
    });

    this.metrics.onCollect(() => {
      this.metrics.devices.reset();
      for (const c of this.trust.counts()) this.metrics.devices.set({ protocol: c.protocol, trust: c.trust }, c.n);
      const o = this.outbox.stats();
      this.metrics.outboxDepth.set(o.depth);
      this.metrics.outboxOldestSeconds.set(o.oldestCreatedAt ? (Date.now() - o.oldestCreatedAt) / 1000 : 0);
      this.webhooks.collect(this.metrics);
    });

    const backPressure = new BackPressure({
      limits: config.limits,
      metrics: this.metrics,
      outboxDepth: () => this.outbox.stats().depth,
      webhookDepths: () => new Map(this.webhookStore.counts().filter((c) => c.status === 'pending').map((c) => [c.bot, c.n])),
      lagMs: () => this.loopLag.sustainedMs,
    });
    this.metrics.onCollect(() => this.metrics.eventLoopLag.set(this.loopLag.ms / 1000));
    this.metrics.onCollect(() => {
      const o = this.conn.paced;
      this.metrics.componentOutput.set({ state: 'held' }, o.heldBytes);
      this.metrics.componentOutput.set({ state: 'unconfirmed' }, o.unconfirmed);
    });

    const readiness: ReadinessCheck[] = [
      { name: 'component', check: () => (this.conn.online ? { ok: true } : { ok: false, reason: this.conn.lastError ?? 'not connected' }) },
      { name: 'keystore', check: () => (this.keystore.isOpen ? { ok: true } : { ok: false, reason: 'keystore closed' }) },
    ];
    const httpLog = log.child({ subsystem: 'http' });
    const omemo2 = engines.omemo2;
    const auth = new TokenAuth(config.http.adminToken, config.bots);
    const messages: MessagesDeps = { config, addressing: this.addressing, outbox: this.outbox, buckets: new TokenBuckets(), queued: (m, body) => this.sender.queued(m, body), rooms: this.rooms, overloaded: (bot) => backPressure.check(bot) };
    this.app = createApp({
      log: httpLog,
      metrics: this.metrics,
      auth,
      bodyLimitBytes: config.http.bodyLimitBytes,
      readiness,
      publicRoutes: [openapiRoutes()],
      fast: fastMessages({ messages, auth, metrics: this.metrics, log: httpLog, bodyLimitBytes: config.http.bodyLimitBytes }),
      api: [
        messagesRoutes(messages),
        roomsRoutes({ config, views: (l) => this.rooms.views(l) }),
        identitiesRoutes({ addressing: this.addressing, engines: this.engines }),
        contactsRoutes({
          addressing: this.addressing,
          ...(config.bots[0] && { defaultReader: this.addressing.botJid(config.bots[0].localpart) }),
          refresh: (local, contact) => this.#refreshContact(local, contact),
          ...(omemo2 && { deviceLabel: (contact: string, rec: DeviceRecord) => (rec.protocol === 'omemo2' && /^\d+$/.test(rec.deviceId) ? omemo2.deviceLabel(contact, Number(rec.deviceId), rec.fingerprint) : null) }),
          trust: this.trust,
          contacts: this.contacts,
          ...(pgpKeys && {
            pgp: { register: (contact: string, armored: string) => pgpKeys.register(contact, armored, { viaAdmin: true }), remove: (contact: string) => pgpKeys.remove(contact) },
          }),
        }),
        webhookAdminRoutes({ store: this.webhookStore, kick: (bot) => this.webhooks.kick(bot) }),
        ...(opts.api ?? []),
      ],
    });
  }

  async #refreshContact(local: string, contact: string): Promise<RefreshOutcome[]> {
    const engines = this.engines.all().filter((e) => e.refreshContact);
    const settled = await Promise.allSettled(engines.map((e) => e.refreshContact!(local, contact)));
    return settled.map((r, i) => {
      const protocol = engines[i]!.id;
      if (r.status === 'fulfilled') return { protocol, ok: true };
      // Only the error's code reaches the API: a message may quote what the contact published.
      return { protocol, ok: false, error: r.reason instanceof GatewayError ? r.reason.code : 'internal_error' };
    });
  }

  async #fingerprintLines(local: string): Promise<string[]> {
    const lines: string[] = [];
    for (const e of this.engines.all()) {
      const f = await e.identity(local);
      for (const d of f.omemo ?? []) lines.push(`OMEMO device ${d.device_id}: ${d.fingerprint.replace(/(.{8})(?!$)/g, '$1 ')}`);
      for (const d of f.omemo2 ?? []) lines.push(`OMEMO 2 device ${d.device_id}: ${d.fingerprint.replace(/(.{8})(?!$)/g, '$1 ')}`);
      if (f.pgp) lines.push(`OpenPGP (XEP-0027): ${f.pgp.fingerprint}`);
      if (f.ox) lines.push(`OpenPGP (OX): ${f.ox.fingerprint}`);
      if (f.otr) lines.push(`OTR: ${f.otr.fingerprint.replace(/(.{8})(?!$)/g, '$1 ')}`);
    }
    return lines.length ? lines : ['no identities (no encryption protocol is enabled)'];
  }

  /** Status changes of bot messages, posted to the bot's webhook as type "status" (delivered, failed). */
  #statusChanged(c: StatusChange): void {
    if (c.message.kind === 'bridge') {
      if (c.status === 'failed') this.#track(this.proxies.failed(c.message, new GatewayError((c.message.error?.code ?? 'internal') as ErrorCode, c.message.error?.message)));
      return;
    }
    if (c.status === 'sent' || !this.webhooks.hasWebhook(c.message.bot)) return;
    const m = c.message;
    this.webhooks.enqueue(m.bot, `status\0${m.to}`, {
      id: WebhookStore.newId(),
      type: 'status',
      message_id: m.id,
      to: m.to,
      status: c.status,
      ...(m.error ? { error: m.error } : {}),
      at: new Date().toISOString(),
    });
  }

  /** A decrypted message for a bot: committed to its webhook queue before anything acknowledges it. */
  #toBot(localpart: string, msg: InboundMessage): void {
    if (!this.webhooks.hasWebhook(localpart)) throw new GatewayError('bot_not_receiving');
    this.webhooks.enqueue(localpart, msg.from, {
      id: WebhookStore.newId(),
      type: 'message',
      from: msg.from,
      to: msg.local,
      body: msg.body,
      encryption: msg.encryption,
      sender: {
        ...(msg.sender.deviceId !== undefined ? { device_id: msg.sender.deviceId } : {}),
        ...(msg.sender.fingerprint !== undefined ? { fingerprint: msg.sender.fingerprint } : {}),
        trust: msg.sender.trust,
      },
      received_at: msg.receivedAt.toISOString(),
    });
  }

  /** A room message for a bot (decrypted, or plaintext where allowed): in order per room. */
  #toBotFromRoom(localpart: string, msg: RoomMessage): void {
    if (!this.webhooks.hasWebhook(localpart)) return; // a bot without a webhook only posts to its rooms
    this.webhooks.enqueue(localpart, `room\0${msg.room}`, {
      id: WebhookStore.newId(),
      type: 'groupchat',
      room: msg.room,
      nick: msg.nick,
      from: msg.from,
      to: msg.to,
      body: msg.body,
      encryption: msg.encryption,
      sender: {
        ...(msg.sender.deviceId !== undefined ? { device_id: msg.sender.deviceId } : {}),
        ...(msg.sender.fingerprint !== undefined ? { fingerprint: msg.sender.fingerprint } : {}),
        trust: msg.sender.trust,
      },
      received_at: msg.receivedAt.toISOString(),
    });
  }

  #routes(): InboundRoutes {
    return {
      toBot: async (localpart, msg) => this.#toBot(localpart, msg),
      toProxy: (remote, msg) => this.proxies.forward(remote, msg),
      receipt: async (local, from, id) => {
        const bot = this.#botsByJid.get(local);
        // A receipt to a proxy JID: a bridged message's (bridges/proxy-bridge.ts).
        if (bot === undefined) {
          await this.proxies.receipt(local, from, id);
          return;
        }
        // To a bot: only that bot's message to `from` is marked, with the next outbox transaction;
        // the status webhook is made of what the receipt says (no read of the row).
        if ((await this.outbox.markDeliveredSoon(id, from, Date.now(), bot)) && this.webhooks.hasWebhook(bot)) {
          const now = Date.now();
          const message: OutboxMessage = {
            id, kind: 'bot', bot, to: from, encryptionRequested: null, encryption: null, status: 'delivered', error: null,
            attempts: 1, nextAttemptAt: now, createdAt: now, sentAt: null, deliveredAt: now, expiresAt: now, undeliveredTo: null,
          };
          this.#statusChanged({ message, status: 'delivered' });
        }
      },
      plaintextAllowed: (local) => {
        if (this.config.bridge.allowPlaintext) return true;
        const bot = this.config.bots.find((b) => this.addressing.botJid(b.localpart) === local);
        return bot?.allowPlaintext ?? false;
      },
    };
  }

  /**
   * What a user sent (messages, subscription requests and answers) goes to the active instance;
   * iqs and presence probes are dropped: their senders time out and ask again, and the answer
   * would be stale by the time the active instance saw it.
   */
  async #handOff(ha: ActiveRole, el: Element): Promise<void> {
    const type = String(el.attrs.type ?? '');
    const wanted = el.name === 'message' || (el.name === 'presence' && ['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed'].includes(type));
    if (!wanted || !ha.handOff) {
      this.metrics.handedOff.inc({ outcome: 'dropped' });
      return;
    }
    try {
      await ha.handOff(el);
      this.metrics.handedOff.inc({ outcome: 'stored' });
      this.log.info({ stanza: el.name }, 'read without the lease: handed to the active instance');
    } catch (err) {
      this.metrics.handedOff.inc({ outcome: 'failed' });
      this.log.warn({ err, stanza: el.name }, 'a stanza read without the lease could not be handed to the active instance');
    }
  }

  /**
   * A stanza a former active instance handed over through PostgreSQL (ha/handoff.ts): handled as if
   * the server had sent it here. Resolves true once handled, false (not handled) when this instance
   * may not act now.
   */
  async handleHandedOver(el: Element): Promise<boolean> {
    if (this.#stopping || (this.#ha && !this.#ha.mayAct())) return false;
    const p = this.router.handle(el);
    this.#track(p);
    await p;
    return true;
  }

  async #mayDeliver(ha: ActiveRole): Promise<void> {
    await ha.barrier();
    if (!ha.mayAct()) throw new GatewayError('standby');
  }

  /**
   * No stanza or connection handler is running and no answer is held by output pacing (for tests
   * that wait for the gateway to settle: a ping skips the inbound queue and held answers, so its
   * pong alone does not say the answers before it left).
   */
  idle(): boolean {
    return this.#inflight.size === 0 && this.inbound.size === 0 && this.conn.paced.held === 0;
  }

  #track<T>(p: Promise<T>): void {
    this.#inflight.add(p);
    p.then(
      () => this.#inflight.delete(p),
      (err: unknown) => {
        this.#inflight.delete(p);
        // Handlers turn peer input into values; reaching this is a bug, never a reason to stop.
        this.log.error({ err }, 'stanza or connection handler failed');
        this.metrics.errors.inc({ kind: 'handler_failed' });
      },
    );
  }

  async #onOnline(): Promise<void> {
    for (const e of this.engines.all()) e.onConnectionChange?.(true);
    // Bots exist from the start: their identities (device lists, bundles, keys) are published now.
    for (const b of this.config.bots) {
      for (const e of this.engines.all()) {
        await e.ensureIdentity(this.addressing.botJid(b.localpart)).catch((err) => this.log.error({ err, bot: b.localpart, protocol: e.id }, 'identity creation failed'));
      }
    }
    await this.presence.onConnected();
    this.rooms.onOnline();
    this.sender.kick();
  }

  /** Listens on HTTP (unless the instance runner serves this.app), then connects the component. Rejects on a refused component secret. */
  async start(): Promise<void> {
    this.loopLag.start();
    this.log.info({ config: publicView(this.config) }, 'starting');
    if (!this.#ha) {
      const server = createServer(this.app);
      this.#server = server;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.config.http.port, this.config.http.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      this.log.info({ address: this.httpUrl }, 'http listening');
    }
    this.webhooks.start();
    this.sender.start();
    await this.conn.start();
    this.#track(this.#maintain());
    this.#maintenance = setInterval(() => this.#track(this.#maintain()), 3600_000);
    this.#maintenance.unref();
  }

  async #maintain(): Promise<void> {
    // Finished bot messages and delivered webhooks are kept a week for status queries, then dropped.
    const weekAgo = Date.now() - 7 * 86400_000;
    this.outbox.prune(weekAgo);
    this.webhookStore.prune(weekAgo);
    for (const e of this.engines.all()) {
      try {
        await e.maintain?.();
      } catch (err) {
        this.log.error({ err, protocol: e.id }, 'engine maintenance failed');
      }
    }
  }

  get httpUrl(): string {
    const a = this.#server?.address() as AddressInfo | null;
    return a ? `http://${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` : '';
  }

  /**
   * The lease is lost (keystore.url): stops at once without writing or sending anything more; the
   * working copy is dropped (PostgreSQL has everything that was ever acted upon).
   */
  async abandon(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.metrics.active.set(0);
    if (this.#maintenance) clearInterval(this.#maintenance);
    await Promise.allSettled([this.sender.stop(), this.webhooks.stop(), this.conn.stop()]);
    await Promise.allSettled([...this.#inflight]);
    this.keystore.close();
    this.log.warn('lease lost: stopped as the active instance');
  }

  /** Stops accepting, finishes in-flight work, closes the component and the keystore. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.log.info('stopping');
    this.loopLag.stop();
    if (this.#maintenance) clearInterval(this.#maintenance);
    const server = this.#server;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    server?.closeIdleConnections();
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
    server?.closeAllConnections();
    await this.sender.stop();
    await this.inbound.drain();
    await Promise.allSettled([...this.#inflight]);
    await this.core.drain();
    await this.webhooks.stop();
    await this.rooms.leaveAll();
    if (this.conn.online) await this.presence.goodbye();
    await this.conn.stop();
    this.outbox.flush(); // before the keystore's own close hooks (keystore.url: they ship the last changes)
    this.keystore.close();
    this.log.info('stopped');
  }
}
