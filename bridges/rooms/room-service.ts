// Bots in XEP-0045 group chats, end-to-end encrypted with OMEMO (XEP-0384 §"Group chats": legacy
// v0.3.0 and OMEMO 2, each occupant's device in the newest version it lists). Each configured room is joined when the component connects, without history, and joined
// again after a reconnect, a kick, a room shutdown or when a XEP-0410 self-ping finds the bot gone.
// Occupants are tracked with their real JIDs (a room that does not reveal them is not private and
// gets no encrypted messages); their device lists are read when they join and followed (explicit
// pubsub subscriptions) while they stay. A message to the room is one groupchat stanza per OMEMO
// version with keys for every occupant's trusted devices (group-encrypt.ts); encrypted messages from
// occupants go to the bot's webhook. History, the bot's own reflected messages and (unless
// allowed) plaintext never reach it. Nothing here ever answers into the room with an error.
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import type { Logger } from 'pino';
import { LRUCache } from 'lru-cache';
import type { BotConfig } from '../../config.js';
import { GatewayError } from '../../errors.js';
import { errorSummary } from '../../log.js';
import type { Metrics } from '../../http/metrics.js';
import type { StanzaContext, StanzaHandler } from '../../component/router.js';
import { RemoteError } from '../../component/connection.js';
import type { GroupEngine, SenderInfo } from '../engine.js';
import type { Encryption } from '../outbound.js';
import { DeviceSubscriptions } from './device-subscriptions.js';
import { encryptForRoom } from './group-encrypt.js';
import {
  NS_SID,
  discoInfo,
  errorCondition,
  isDelayed,
  joinPresence,
  joinRefusal,
  leavePresence,
  leaveReason,
  messageCodes,
  parseOccupantPresence,
  roomFeatures,
  selfPing,
  type RoomProblem,
} from './muc.js';

export type RoomState = 'offline' | 'joining' | 'joined' | 'not_private' | 'waiting' | 'error';

/** A decrypted (or, where allowed, plaintext) message from an occupant, for the bot's webhook. */
export interface RoomMessage {
  room: string;
  nick: string;
  /** The occupant's real bare JID (null only for allowed plaintext from a room that hides it). */
  from: string | null;
  /** The bot's bare JID. */
  to: string;
  body: string;
  encryption: Encryption;
  sender: SenderInfo;
  receivedAt: Date;
}

export interface RoomView {
  jid: string;
  nick: string;
  state: RoomState;
  /** The room reveals real JIDs to occupants (non-anonymous); null until known. */
  non_anonymous: boolean | null;
  members_only: boolean | null;
  occupants: number;
  /** Occupants whose device list was read and lists no OMEMO device. */
  occupants_without_devices: number;
  devices: number;
  joined_at: string | null;
  last_error: { code: RoomProblem; message: string; at: string } | null;
}

export interface RoomServiceDeps {
  bots: readonly BotConfig[];
  botJid: (localpart: string) => string;
  resource: string;
  send: (el: Element) => Promise<void>;
  request: (iq: Element, timeoutMs?: number) => Promise<Element>;
  /** The engines for room messages, newest version first (OMEMO 2, legacy OMEMO). */
  engines: readonly GroupEngine[];
  /** Commits a message to the bot's webhook queue (throws if it cannot). */
  deliver: (localpart: string, msg: RoomMessage) => void;
  plaintextAllowed: (localpart: string) => boolean;
  metrics: Metrics;
  log: Logger;
  /** XEP-0410 self-ping interval while joined (default 60 s). */
  selfPingMs?: number;
  joinTimeoutMs?: number;
}

interface Occupant {
  /** Real bare JID, null if the room hides it. */
  jid: string | null;
  role: string;
  affiliation: string;
}

class Room {
  state: RoomState = 'offline';
  readonly occupants = new Map<string, Occupant>();
  nonAnonymous: boolean | null = null;
  membersOnly: boolean | null = null;
  lastError: { code: RoomProblem; message: string; at: number } | null = null;
  joinedAt: number | null = null;
  attempts = 0;
  timer: NodeJS.Timeout | null = null;
  pinger: NodeJS.Timeout | null = null;
  pingTimeouts = 0;
  /** Ids of messages we sent: their reflections are dropped even if the nick changed. */
  readonly sent = new LRUCache<string, true>({ max: 1000 });
  chain: Promise<void> = Promise.resolve();
  constructor(
    readonly localpart: string,
    readonly local: string,
    readonly jid: string,
    readonly nick: string,
  ) {}
  get occupantJid(): string {
    return `${this.jid}/${this.nick}`;
  }
}

/** Problems after which a rejoin is tried soon; the others wait for an owner to act (slow retries). */
const TRANSIENT: ReadonlySet<RoomProblem> = new Set(['kicked', 'room_shutdown', 'not_in_room', 'join_timeout', 'nick_conflict', 'other']);
const PROBLEM_TEXT: Record<RoomProblem, string> = {
  registration_required: 'The room is members-only and the bot is not a member: give its JID the member affiliation.',
  banned: 'The bot is banned from the room (outcast).',
  room_missing: 'The room does not exist (or was destroyed) and the bot may not create it.',
  password_required: 'The room requires a password.',
  nick_conflict: 'The nick is in use by another occupant.',
  room_full: 'The room is full or the MUC service refused the join.',
  room_not_private: 'The room does not reveal occupants\' real JIDs (make it non-anonymous: whois anyone).',
  kicked: 'The bot was kicked; it joins again.',
  room_shutdown: 'The MUC service shut down; the bot joins again.',
  not_in_room: 'A self-ping found the bot no longer in the room; it joins again.',
  join_timeout: 'The room did not answer the join in time.',
  other: 'The room refused the bot.',
};

export class RoomService {
  readonly #d: RoomServiceDeps;
  readonly #subs: DeviceSubscriptions;
  /** `${localpart}\0${room}` -> room. */
  readonly #rooms = new Map<string, Room>();
  #online = false;
  #stopping = false;

  constructor(d: RoomServiceDeps) {
    this.#d = d;
    this.#subs = new DeviceSubscriptions({
      request: d.request,
      nodes: d.engines.map((e) => e.deviceListNode),
      log: d.log,
      count: (op, result) => {
        if (result !== 'ok') d.metrics.errors.inc({ kind: `room_device_${op}` });
      },
    });
    for (const b of d.bots) for (const r of b.rooms ?? []) this.#rooms.set(`${b.localpart}\0${r.jid}`, new Room(b.localpart, d.botJid(b.localpart), r.jid, r.nick));
    d.metrics.onCollect(() => {
      const by = new Map<string, number>();
      for (const r of this.#rooms.values()) by.set(r.state, (by.get(r.state) ?? 0) + 1);
      for (const s of ['offline', 'joining', 'joined', 'not_private', 'waiting', 'error'] as const) d.metrics.rooms.set({ state: s }, by.get(s) ?? 0);
    });
  }

  /** Whether `jid` is one of this bot's rooms (a POST to it is a group message). */
  isRoom(localpart: string, jid: string): boolean {
    return this.#rooms.has(`${localpart}\0${jid}`);
  }

  /** A refusal a POST gets at once (409 room_not_private), or null. */
  refusal(localpart: string, jid: string, allowPlaintext: boolean): GatewayError | null {
    const r = this.#rooms.get(`${localpart}\0${jid}`);
    if (r?.state === 'not_private' && !allowPlaintext) return new GatewayError('room_not_private');
    return null;
  }

  /** The occupants' real bare JIDs the bot would encrypt for now (diagnostics, tests). */
  recipients(localpart: string, jid: string): string[] {
    const r = this.#rooms.get(`${localpart}\0${jid}`);
    return r ? this.#peers(r).sort() : [];
  }

  /** Whether hosted JID `local` follows `peer`'s device lists (diagnostics, tests). */
  follows(local: string, peer: string): boolean {
    return this.#subs.has(local, peer);
  }

  views(localpart: string): RoomView[] {
    return [...this.#rooms.values()]
      .filter((r) => r.localpart === localpart)
      .map((r) => {
        const jids = this.#peers(r);
        let devices = 0;
        let without = 0;
        for (const j of jids) {
          // A device id in both versions' lists is one device.
          const lists = this.#d.engines.map((e) => e.cachedDevices(j));
          const ids = new Set(lists.flatMap((l) => l ?? []));
          if (ids.size === 0 && lists.some((l) => l !== null)) without++;
          devices += ids.size;
        }
        return {
          jid: r.jid,
          nick: r.nick,
          state: r.state,
          non_anonymous: r.nonAnonymous,
          members_only: r.membersOnly,
          occupants: r.occupants.size,
          occupants_without_devices: without,
          devices,
          joined_at: r.joinedAt ? new Date(r.joinedAt).toISOString() : null,
          last_error: r.lastError ? { code: r.lastError.code, message: r.lastError.message, at: new Date(r.lastError.at).toISOString() } : null,
        };
      });
  }

  /** The component came up: join every room. */
  onOnline(): void {
    this.#online = true;
    for (const r of this.#rooms.values()) this.#join(r);
  }

  /** The component went down: every room is left (the server forgets us), timers stop. */
  onOffline(): void {
    this.#online = false;
    for (const r of this.#rooms.values()) {
      this.#clearTimers(r);
      r.occupants.clear();
      r.state = 'offline';
    }
  }

  /** Leaves every joined room (clean shutdown). */
  async leaveAll(): Promise<void> {
    this.#stopping = true;
    for (const r of this.#rooms.values()) {
      this.#clearTimers(r);
      if (r.state === 'joined' || r.state === 'not_private') await this.#d.send(leavePresence(`${r.local}/${this.#d.resource}`, r.occupantJid)).catch(() => undefined);
      r.state = 'offline';
    }
  }

  /** Whether `bare` is a room any bot is configured to be in (its stanzas come from many occupants). */
  isAnyBotsRoom(bare: string): boolean {
    for (const r of this.#rooms.values()) if (r.jid.toLowerCase() === bare) return true;
    return false;
  }

  /** Router claim: message and presence stanzas from a room to the bot that joined it. */
  claim(ctx: StanzaContext): StanzaHandler | null {
    if (ctx.address.kind !== 'bot') return null;
    const r = this.#rooms.get(`${ctx.address.localpart}\0${ctx.fromBare}`);
    if (!r) return null;
    return () => this.#queue(r, ctx);
  }

  /** Per room, in order; never throws (nothing is ever answered into a room). */
  #queue(r: Room, ctx: StanzaContext): Promise<void> {
    const next = r.chain.then(() => (ctx.stanza.name === 'presence' ? this.#presence(r, ctx) : this.#message(r, ctx))).catch((e: unknown) => {
      this.#d.log.error({ bot: r.localpart, room: r.jid, err: errorSummary(e) }, 'room stanza handling failed');
      this.#d.metrics.errors.inc({ kind: 'room_stanza' });
    });
    r.chain = next;
    return next;
  }

  // ---- joining and staying joined ----

  #join(r: Room): void {
    if (!this.#online || this.#stopping) return;
    this.#clearTimers(r);
    r.state = 'joining';
    r.occupants.clear();
    const timeout = this.#d.joinTimeoutMs ?? 30000;
    r.timer = setTimeout(() => this.#problem(r, 'join_timeout'), timeout);
    r.timer.unref();
    this.#d.log.info({ bot: r.localpart, room: r.jid, nick: r.nick }, 'joining room');
    this.#d.send(joinPresence(`${r.local}/${this.#d.resource}`, r.occupantJid)).catch((e: unknown) => {
      this.#d.log.debug({ room: r.jid, err: errorSummary(e) }, 'join presence not sent');
    });
  }

  #clearTimers(r: Room): void {
    if (r.timer) clearTimeout(r.timer);
    if (r.pinger) clearInterval(r.pinger);
    r.timer = null;
    r.pinger = null;
  }

  /** Records a problem (metric, log, last_error) and schedules the next join. */
  #problem(r: Room, code: RoomProblem, detail?: string): void {
    this.#clearTimers(r);
    const were = this.#peers(r);
    r.occupants.clear();
    r.lastError = { code, message: detail ? `${PROBLEM_TEXT[code]} (${detail})` : PROBLEM_TEXT[code], at: Date.now() };
    this.#d.metrics.roomErrors.inc({ reason: code });
    const transient = TRANSIENT.has(code);
    this.#d.log[transient ? 'info' : 'warn']({ bot: r.localpart, room: r.jid, code }, 'room problem');
    if (!this.#online || this.#stopping) {
      r.state = 'offline';
      return;
    }
    r.state = transient ? 'waiting' : 'error';
    // Out for good (banned, no member, room gone): stop following occupants no other room shares.
    if (!transient) for (const jid of were) if (!this.#sharesRoom(r.local, jid)) this.#subs.unfollow(r.local, jid).catch(() => undefined); // it logs its own failures
    // Soon for what fixes itself (kick, shutdown), slowly for what needs the room's owner.
    const delay = transient ? Math.min(60_000, 1000 * 2 ** Math.min(r.attempts, 6)) : Math.min(600_000, 30_000 * 2 ** Math.min(r.attempts, 5));
    r.attempts++;
    r.timer = setTimeout(() => this.#join(r), delay);
    r.timer.unref();
  }

  #joined(r: Room, statusNonAnonymous: boolean): void {
    this.#clearTimers(r);
    r.attempts = 0;
    r.pingTimeouts = 0;
    r.joinedAt = Date.now();
    r.nonAnonymous = statusNonAnonymous;
    this.#settlePrivacy(r);
    this.#d.log.info({ bot: r.localpart, room: r.jid, occupants: r.occupants.size, nonAnonymous: r.nonAnonymous }, 'joined room');
    const every = this.#d.selfPingMs ?? 60_000;
    r.pinger = setInterval(() => {
      this.#selfPing(r).catch(() => undefined);
    }, every);
    r.pinger.unref();
    this.#readFeatures(r).catch(() => undefined); // it logs its own failures
  }

  /** Private means every occupant's real JID is visible to us: status 100 / muc_nonanonymous, and no hidden occupant. */
  #settlePrivacy(r: Room): void {
    if (r.state !== 'joined' && r.state !== 'not_private' && r.state !== 'joining') return;
    const hidden = [...r.occupants.values()].some((o) => o.jid === null);
    if (r.nonAnonymous !== true || hidden) {
      if (r.state !== 'not_private') {
        r.lastError = { code: 'room_not_private', message: PROBLEM_TEXT.room_not_private, at: Date.now() };
        this.#d.metrics.roomErrors.inc({ reason: 'room_not_private' });
        this.#d.log.warn({ bot: r.localpart, room: r.jid, code: 'room_not_private' }, 'room problem');
      }
      r.state = 'not_private';
    } else {
      if (r.lastError?.code === 'room_not_private') r.lastError = null;
      r.state = 'joined';
    }
  }

  async #readFeatures(r: Room): Promise<void> {
    try {
      const res = await this.#d.request(discoInfo(`${r.local}/${this.#d.resource}`, r.jid));
      const f = roomFeatures(res);
      r.nonAnonymous = f.nonAnonymous;
      r.membersOnly = f.membersOnly;
      this.#settlePrivacy(r);
    } catch (e) {
      this.#d.log.debug({ room: r.jid, err: errorSummary(e) }, 'room disco#info failed; going by the join status codes');
    }
  }

  async #selfPing(r: Room): Promise<void> {
    if (r.state !== 'joined' && r.state !== 'not_private') return;
    try {
      await this.#d.request(selfPing(`${r.local}/${this.#d.resource}`, r.occupantJid), 10_000);
      r.pingTimeouts = 0;
    } catch (e) {
      if (e instanceof RemoteError) {
        // XEP-0410 §3.2: these mean the ping reached our occupant (joined); anything else that we are not.
        if (e.remoteCondition === 'service-unavailable' || e.remoteCondition === 'feature-not-implemented') return;
        this.#problem(r, 'not_in_room', e.remoteCondition);
      } else if (++r.pingTimeouts >= 2) {
        this.#problem(r, 'not_in_room', 'no answer to two self-pings');
      }
    }
  }

  // ---- presence from the room ----

  async #presence(r: Room, ctx: StanzaContext): Promise<void> {
    const { stanza } = ctx;
    const nick = ctx.from.resource;
    if (String(stanza.attrs.type ?? '') === 'error') {
      const cond = errorCondition(stanza);
      if (r.state === 'joining' || nick === r.nick || !nick) this.#problem(r, joinRefusal(cond), cond);
      return;
    }
    if (!nick) return;
    const p = parseOccupantPresence(stanza, nick);
    if (!p) return;
    if (p.self || (nick === r.nick && !r.occupants.has(nick))) {
      if (p.available) {
        if (r.state === 'joining') this.#joined(r, p.codes.has(100));
        return;
      }
      const reason = leaveReason(p);
      if (reason) this.#problem(r, reason);
      else if (!this.#stopping && r.state !== 'joining') this.#join(r); // left by someone else's doing: back in
      return;
    }
    if (!p.available) {
      const gone = r.occupants.get(nick)?.jid;
      r.occupants.delete(nick);
      this.#settlePrivacy(r);
      if (gone && !this.#sharesRoom(r.local, gone)) await this.#subs.unfollow(r.local, gone);
      return;
    }
    const jid = p.realJid ? p.realJid.split('/')[0]!.toLowerCase() : null;
    const before = r.occupants.get(nick);
    r.occupants.set(nick, { jid, role: p.role, affiliation: p.affiliation });
    if (jid && before?.jid !== jid && jid !== r.local) {
      // Read the newcomer's devices now, not when the next message goes out, and follow changes.
      for (const engine of this.#d.engines) {
        engine.watchPeer(r.local, jid).catch((e: unknown) => this.#d.log.info({ room: r.jid, occupant: jid, protocol: engine.id, err: errorSummary(e) }, 'occupant device list not read'));
      }
      this.#subs.follow(r.local, jid).catch(() => undefined); // it logs its own failures
    }
    if (r.state === 'joined' || r.state === 'not_private') this.#settlePrivacy(r);
  }

  // ---- messages from the room ----

  async #message(r: Room, ctx: StanzaContext): Promise<void> {
    const { stanza } = ctx;
    const type = String(stanza.attrs.type ?? 'normal');
    const nick = ctx.from.resource;
    const count = (result: string) => this.#d.metrics.roomMessages.inc({ direction: 'in', result });
    if (type === 'error') {
      const cond = errorCondition(stanza);
      this.#d.log.info({ bot: r.localpart, room: r.jid, condition: cond, id: stanza.attrs.id }, 'the room refused a message');
      if (cond === 'not-acceptable' || cond === 'item-not-found') this.#problem(r, 'not_in_room', cond);
      return;
    }
    if (type !== 'groupchat') return count('not_groupchat'); // private messages through the room: not supported
    if (!nick) {
      const codes = messageCodes(stanza);
      if ([104, 170, 171, 172, 173, 174].some((c) => codes.has(c))) this.#readFeatures(r).catch(() => undefined); // it logs its own failures
      return;
    }
    if (isDelayed(stanza) || (r.state !== 'joined' && r.state !== 'not_private')) return count('history');
    const originId = stanza.getChild('origin-id', NS_SID)?.attrs.id;
    if (nick === r.nick || (originId && r.sent.has(String(originId))) || (stanza.attrs.id && r.sent.has(String(stanza.attrs.id)))) return count('reflection');
    if (stanza.getChild('subject')) return;
    const occupant = r.occupants.get(nick);
    const engine = this.#d.engines.find((e) => e.recognizes(stanza));
    if (engine) {
      if (!occupant?.jid) return count('sender_hidden');
      const res = await engine.decryptFrom(r.local, stanza, occupant.jid);
      for (const reply of res.replies) await this.#d.send(reply).catch(() => undefined);
      if (!res.ok) {
        this.#d.log.info({ bot: r.localpart, room: r.jid, nick, reason: res.reason }, 'room message not decrypted');
        return count(res.reason === 'not-for-this-device' ? 'not_for_us' : 'not_decrypted');
      }
      if (res.body === null) return count('empty');
      this.#deliver(r, nick, occupant.jid, res.body, engine.id, res.sender);
      return count('ok');
    }
    const body = stanza.getChildText('body');
    if (body === null) return;
    if (stanza.getChild('encryption', 'urn:xmpp:eme:0') || stanza.getChild('encrypted')) return count('unsupported_encryption');
    if (!this.#d.plaintextAllowed(r.localpart)) return count('plaintext_refused');
    this.#deliver(r, nick, occupant?.jid ?? null, body, 'none', { jid: occupant?.jid ?? '', trust: 'untrusted' });
    count('plaintext');
  }

  #deliver(r: Room, nick: string, from: string | null, body: string, encryption: Encryption, sender: SenderInfo): void {
    this.#d.deliver(r.localpart, { room: r.jid, nick, from, to: r.local, body, encryption, sender, receivedAt: new Date() });
  }

  // ---- sending ----

  /** Whether `jid` is an occupant of any room hosted JID `local` is in. */
  #sharesRoom(local: string, jid: string): boolean {
    for (const r of this.#rooms.values()) if (r.local === local && [...r.occupants.values()].some((o) => o.jid === jid)) return true;
    return false;
  }

  #peers(r: Room): string[] {
    const out = new Set<string>();
    for (const o of r.occupants.values()) if (o.jid && o.jid !== r.local) out.add(o.jid);
    return [...out];
  }

  /**
   * Sends one groupchat message to the room. Throws GatewayError: room_not_joined (retried),
   * room_not_private, room_unavailable, no_encryption_available, plaintext_refused.
   */
  async send(req: { localpart: string; room: string; body: string; id: string; encryption?: Encryption; allowPlaintext: boolean }): Promise<{ encryption: Encryption; undeliveredTo: string[] }> {
    const r = this.#rooms.get(`${req.localpart}\0${req.room}`);
    if (!r) throw new GatewayError('not_found', 'That room is not configured for this bot.');
    if (r.state === 'error') throw new GatewayError('room_unavailable', r.lastError?.message);
    const plaintext = req.encryption === 'none' || (r.state === 'not_private' && req.encryption === undefined && req.allowPlaintext);
    if (r.state === 'not_private' && !plaintext) throw new GatewayError('room_not_private');
    if (r.state !== 'joined' && r.state !== 'not_private') throw new GatewayError('room_not_joined', `The bot is not in ${r.jid} right now (${r.state}); the message waits.`);
    let stanzas: Array<{ encryption: Encryption; children: Element[] }>;
    let undeliveredTo: string[] = [];
    if (plaintext) {
      if (!req.allowPlaintext) throw new GatewayError('plaintext_refused', 'Plaintext sending is not enabled for this bot.');
      stanzas = [{ encryption: 'none', children: [xml('body', {}, req.body)] }];
    } else {
      // A bot may ask for one version; by default each device gets the newest it lists.
      const engines = req.encryption === undefined ? this.#d.engines : this.#d.engines.filter((e) => e.id === req.encryption);
      if (engines.length === 0) {
        throw new GatewayError('no_encryption_available', `Group chats are encrypted with ${this.#d.engines.map((e) => e.id).join(' or ') || 'OMEMO'} only.`);
      }
      const enc = await encryptForRoom(engines, r.local, r.jid, this.#peers(r), req.body, this.#d.log);
      stanzas = enc.stanzas;
      undeliveredTo = enc.undelivered;
    }
    // One stanza per version: the first carries the message id, the others id-2, id-3...
    for (const [i, st] of stanzas.entries()) {
      const id = i === 0 ? req.id : `${req.id}-${i + 1}`;
      r.sent.set(id, true);
      await this.#d.send(xml('message', { from: `${r.local}/${this.#d.resource}`, to: r.jid, type: 'groupchat', id }, ...st.children, xml('origin-id', { xmlns: NS_SID, id })));
      this.#d.metrics.roomMessages.inc({ direction: 'out', result: 'sent' });
      this.#d.metrics.messages.inc({ protocol: st.encryption, direction: 'out', result: 'sent' });
    }
    return { encryption: stanzas[0]!.encryption, undeliveredTo };
  }
}
