// XEP-0045 (Multi-User Chat) stanzas as a bot uses them: joining without history, the occupant
// presence the room sends (real JIDs in non-anonymous rooms), the status codes that say why we left,
// and XEP-0410 self-pings. Pure functions; every parser returns null on what it does not accept.
// https://xmpp.org/extensions/xep-0045.html
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { NS_STANZAS } from '../../component/stanza.js';

export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
export const NS_DELAY = 'urn:xmpp:delay';
export const NS_SID = 'urn:xmpp:sid:0';
export const NS_PING = 'urn:xmpp:ping';
export const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';

/** Why the room refused or removed the bot; the `last_error.code` of GET /v1/bots/{localpart}/rooms. */
export type RoomProblem =
  | 'registration_required' // members-only and the bot's JID is not a member
  | 'banned'
  | 'room_missing' // no such room (and the bot may not create it), or destroyed
  | 'password_required'
  | 'nick_conflict'
  | 'room_full'
  | 'room_not_private' // the room does not reveal occupants' real JIDs (not non-anonymous)
  | 'kicked'
  | 'room_shutdown'
  | 'not_in_room' // a self-ping found the bot no longer joined
  | 'join_timeout'
  | 'other';

/** §7.2.1: join with the MUC namespace and ask for no history at all (anything delayed stays away). */
export function joinPresence(fromFull: string, occupantJid: string): Element {
  return xml('presence', { from: fromFull, to: occupantJid }, xml('x', { xmlns: NS_MUC }, xml('history', { maxstanzas: '0', maxchars: '0' })));
}

export function leavePresence(fromFull: string, occupantJid: string): Element {
  return xml('presence', { from: fromFull, to: occupantJid, type: 'unavailable' });
}

/** XEP-0410: a ping to our own occupant JID tells whether we are still joined. */
export function selfPing(fromFull: string, occupantJid: string): Element {
  return xml('iq', { type: 'get', from: fromFull, to: occupantJid }, xml('ping', { xmlns: NS_PING }));
}

export function discoInfo(fromFull: string, room: string): Element {
  return xml('iq', { type: 'get', from: fromFull, to: room }, xml('query', { xmlns: NS_DISCO_INFO }));
}

export interface OccupantPresence {
  nick: string;
  available: boolean;
  /** The occupant's real full JID, when the room reveals it. */
  realJid: string | null;
  affiliation: string;
  role: string;
  codes: Set<number>;
  /** Status 110: this presence is about the bot itself. */
  self: boolean;
  /** §10.9: the room was destroyed. */
  destroyed: boolean;
  /** Status 303: the new nick. */
  newNick: string | null;
}

/** An available or unavailable presence from `room/nick`, or null if it is not one. */
export function parseOccupantPresence(stanza: Element, nick: string): OccupantPresence | null {
  const type = String(stanza.attrs.type ?? 'available');
  if (type !== 'available' && type !== 'unavailable') return null;
  const x = stanza.getChild('x', NS_MUC_USER);
  const item = x?.getChild('item');
  const codes = new Set<number>();
  for (const s of x?.getChildren('status') ?? []) {
    const n = Number(s.attrs.code);
    if (Number.isInteger(n)) codes.add(n);
  }
  const real = item?.attrs.jid;
  return {
    nick,
    available: type === 'available',
    realJid: typeof real === 'string' && real.includes('@') ? real : null,
    affiliation: String(item?.attrs.affiliation ?? 'none'),
    role: String(item?.attrs.role ?? 'none'),
    codes,
    self: codes.has(110),
    destroyed: !!x?.getChild('destroy'),
    newNick: codes.has(303) && typeof item?.attrs.nick === 'string' ? item.attrs.nick : null,
  };
}

/** Why the bot is no longer in the room, from its own unavailable presence (§9.6, §9.7, §9.9, §10.9, §9.4). */
export function leaveReason(p: OccupantPresence): RoomProblem | null {
  if (p.destroyed) return 'room_missing';
  if (p.codes.has(301)) return 'banned';
  if (p.codes.has(321) || p.codes.has(322)) return 'registration_required';
  if (p.codes.has(307)) return 'kicked';
  if (p.codes.has(332)) return 'room_shutdown';
  return null;
}

/** The defined condition of an error stanza. */
export function errorCondition(stanza: Element): string {
  const err = stanza.getChild('error');
  return err?.getChildElements().find((c) => c.attrs.xmlns === NS_STANZAS && c.name !== 'text')?.name ?? 'undefined-condition';
}

/** §7.2.7 ff: why a join was refused. */
export function joinRefusal(condition: string): RoomProblem {
  switch (condition) {
    case 'registration-required':
      return 'registration_required';
    case 'forbidden':
      return 'banned';
    case 'item-not-found':
    case 'not-allowed': // the room does not exist and we may not create it
    case 'gone':
    case 'remote-server-not-found':
      return 'room_missing';
    case 'not-authorized':
      return 'password_required';
    case 'conflict':
      return 'nick_conflict';
    case 'service-unavailable':
      return 'room_full';
    default:
      return 'other';
  }
}

/** A groupchat message from the room's history or otherwise delayed (XEP-0203). */
export const isDelayed = (stanza: Element): boolean => stanza.getChild('delay', NS_DELAY) !== undefined;

/** Status codes in a message from the room itself (§10.2.1: 104 config change, 172/173 anonymity changes). */
export function messageCodes(stanza: Element): Set<number> {
  const out = new Set<number>();
  for (const s of stanza.getChild('x', NS_MUC_USER)?.getChildren('status') ?? []) {
    const n = Number(s.attrs.code);
    if (Number.isInteger(n)) out.add(n);
  }
  return out;
}

/** Room features from a disco#info result: whether it is non-anonymous and members-only. */
export function roomFeatures(result: Element): { nonAnonymous: boolean; membersOnly: boolean } {
  const q = result.getChild('query', NS_DISCO_INFO);
  const vars = new Set((q?.getChildren('feature') ?? []).map((f) => String(f.attrs.var ?? '')));
  return { nonAnonymous: vars.has('muc_nonanonymous'), membersOnly: vars.has('muc_membersonly') };
}
