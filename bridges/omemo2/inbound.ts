// Receiving with OMEMO 2 (XEP-0384 v0.8 §"Receiving a message"): the <key> for our device under
// <keys jid='our bare JID'>, through the sender device's session (an OMEMOKeyExchange may start
// one), then the payload with the recovered key || mac, then the SCE envelope's checks. Failures
// are values. Protocol replies as for legacy OMEMO: an empty message after a new key exchange, a
// heartbeat after 53 messages on one chain, a repair when the session is missing or broken.
import type Element from 'ltx/lib/Element.js';
import type { Decrypted, DecryptFailure } from '../engine.js';
import type { TrustLevel } from '../../keystore/trust-store.js';
import { PROTOCOL } from './constants.js';
import { deviceKey, observe, replayDigest, type Omemo2Context } from './context.js';
import { omemo2Codec, type KeyExchange } from './messages.js';
import type { OpenedMessage } from '../ratchet/double-ratchet.js';
import { fingerprintOf, type LocalIdentity } from './keyring.js';
import { emptyMessage, repair } from './outbound.js';
import { isEmptyKeyMaterial, openPayload } from './payload.js';
import { openEnvelope } from './sce.js';
import { acceptKeyExchange, decryptMessage, parseKeyExchange, SessionError, type Session } from './session.js';
import { findEncrypted, parseEncryptedFor, type KeyElement } from './wire.js';

const REPAIRABLE: ReadonlySet<DecryptFailure> = new Set(['no-session', 'unknown-prekey', 'bad-mac']);

const bare = (jid: unknown): string | null => {
  if (typeof jid !== 'string' || jid.length === 0) return null;
  const b = jid.split('/')[0]!.toLowerCase();
  return b.length > 0 ? b : null;
};

const failureOf = (e: unknown): DecryptFailure => {
  if (!(e instanceof SessionError)) return 'internal';
  switch (e.reason) {
    case 'bad-mac':
    case 'duplicate':
    case 'malformed':
    case 'unknown-prekey':
    case 'bad-signature':
      return e.reason;
    default:
      return 'malformed';
  }
};

/**
 * `group`: a groupchat message from a room, whose stanza comes from the room: the sender is the
 * occupant's real bare JID, and the SCE envelope's <to> must name the room, not the hosted JID.
 */
export async function decryptStanza(ctx: Omemo2Context, local: string, stanza: Element, group?: { sender: string; room: string }): Promise<Decrypted> {
  const replies: Element[] = [];
  const fail = (reason: DecryptFailure, facts: Record<string, unknown> = {}): Decrypted => {
    ctx.ports.metrics.decryptFailures.inc({ protocol: PROTOCOL, reason });
    ctx.ports.metrics.messages.inc({ protocol: PROTOCOL, direction: 'in', result: reason });
    if (reason === 'duplicate') ctx.ports.metrics.replaysDropped.inc({ protocol: PROTOCOL });
    ctx.log[reason === 'not-for-this-device' || reason === 'duplicate' ? 'debug' : 'info']({ local, ...facts, reason }, 'omemo2 message not decrypted');
    return { ok: false, reason, replies };
  };
  const from = group ? bare(group.sender) : bare(stanza.attrs.from);
  const el = findEncrypted(stanza);
  if (!from || !el) return fail('malformed', { from });
  const id = await ctx.keyring.ensure(local);
  const enc = parseEncryptedFor(el, local.toLowerCase(), id.deviceId);
  if (!enc) return fail('malformed', { from });
  const facts = { contact: from, deviceId: enc.sid };
  // Only keys listed under our own bare JID are for us (a key under another JID is someone else's):
  // no <keys> for this JID at all is a misaddressed message, refused; keys for our other devices only
  // (there are none today) would be ignored quietly.
  if (!enc.listed) return fail('malformed', { ...facts, why: 'no keys for this JID' });
  const key = enc.key;
  if (!key) return fail('not-for-this-device', facts);
  // Claimed while being decrypted (two copies arriving together cannot both pass), recorded with the
  // session's new state once everything checked out, released if not: a forgery does not burn the
  // genuine copy. Kept in the keystore, so a replay after a restart is refused too (no repair).
  // Read once here: the digest is over the OMEMOMessage the MAC covers, and the ratchet decrypts what
  // was read.
  const kx = key.kex ? parseKeyExchange(key.data) : null;
  const authenticated = key.kex ? kx?.message : key.data;
  const opened = authenticated ? omemo2Codec.open(authenticated) : null;
  if (!opened || (key.kex && !kx)) return fail('malformed', facts);
  const digest = replayDigest(local, opened.encoded);
  if (!ctx.replay.claim(digest)) return fail('duplicate', facts);
  try {
    return await decryptClaimed(ctx, { local, id, from, enc, key, kx, opened, digest, facts, replies, fail, ...(group && { group }) });
  } finally {
    ctx.replay.release(digest);
  }
}

interface Claimed {
  local: string;
  id: LocalIdentity;
  from: string;
  enc: { sid: number; payload: Buffer | null };
  key: KeyElement;
  /** The OMEMOKeyExchange, decoded, when `key` is one. */
  kx: KeyExchange | null;
  /** The OMEMOAuthenticatedMessage (the key exchange's inner one), opened. */
  opened: OpenedMessage;
  digest: Buffer;
  facts: Record<string, unknown>;
  replies: Element[];
  fail: (reason: DecryptFailure, facts?: Record<string, unknown>) => Decrypted;
  group?: { sender: string; room: string };
}

async function decryptClaimed(ctx: Omemo2Context, c: Claimed): Promise<Decrypted> {
  const { local, id, from, enc, key, kx, opened, digest, facts, replies, fail, group } = c;
  const list = ctx.devices.cached(from);
  if (!list || !list.includes(enc.sid)) ctx.devices.refreshInBackground(local, from);

  const existing = ctx.sessions.get(local, from, enc.sid);
  let keyMaterial: Buffer;
  let trust: TrustLevel;
  let fingerprint: string;
  let session: Session;
  let isNew = false;
  let pkId: number | null = null;
  let counter: number;
  let chain: Buffer;
  let seen: { trust: TrustLevel; fingerprint: string } | null = null;
  const end = ctx.ports.metrics.cryptoSeconds.startTimer({ protocol: PROTOCOL, operation: key.kex ? 'session_build' : 'decrypt' });
  try {
    if (kx) {
      // Read-only before the message authenticates: an unverified key must not create a trust entry.
      if (ctx.ports.trust.get(from, PROTOCOL, fingerprintOf(kx.ik))?.trust === 'distrusted') return fail('distrusted', facts);
      const r = acceptKeyExchange(id, { signedPreKey: (n) => ctx.keyring.signedPreKey(local, n), preKey: (n) => ctx.keyring.preKey(local, n) }, kx, opened, existing);
      ({ session, isNew } = r);
      keyMaterial = r.plaintext;
      counter = r.header.n;
      chain = r.header.dh;
      if (isNew) pkId = r.pkId;
    } else {
      if (!existing) {
        const m = await repair(ctx, id, from, enc.sid);
        if (m) replies.push(m);
        return fail('no-session', facts);
      }
      seen = observe(ctx, from, enc.sid, existing.theirIk);
      if (seen.trust === 'distrusted') return fail('distrusted', facts);
      const r = decryptMessage(existing, key.data, opened);
      session = r.session;
      keyMaterial = r.plaintext;
      counter = r.header.n;
      chain = r.header.dh;
    }
    // Observed again only if the key differs from the one checked above (a key exchange, or the replaced session's key).
    ({ trust, fingerprint } = seen && session.theirIk.equals(existing!.theirIk) ? seen : observe(ctx, from, enc.sid, session.theirIk));
    if (trust === 'distrusted') return fail('distrusted', facts);
  } catch (e) {
    const reason = failureOf(e);
    if (reason === 'internal') throw e;
    if (REPAIRABLE.has(reason)) {
      const m = await repair(ctx, id, from, enc.sid);
      if (m) replies.push(m);
    }
    return fail(reason, facts);
  } finally {
    end();
  }

  // The payload and the SCE envelope are checked before anything is kept: a message refused here
  // (payload MAC, envelope from/to/time) advances no ratchet, consumes no prekey and is not marked
  // seen, so the genuine message is still read if it comes, and a refused one leaves no session.
  let body: string | null = null;
  if (enc.payload === null) {
    if (!isEmptyKeyMaterial(keyMaterial)) return fail('malformed', facts);
  } else {
    const opened = openPayload(keyMaterial, enc.payload);
    keyMaterial.fill(0);
    if (!opened.ok) return fail(opened.reason, { ...facts, layer: 'payload' });
    const env = openEnvelope(opened.plaintext, { from, to: group ? group.room.toLowerCase() : local.toLowerCase(), now: ctx.ports.now(), maxSkewMs: ctx.opts.maxClockSkewMs });
    if (!env.ok) return fail('malformed', { ...facts, layer: 'sce', why: env.reason });
    body = env.body;
  }

  // With a reply (completion, heartbeat), the session is written once, after the reply's ratchet
  // step (emptyMessage's put), before anything is returned; the consumed prekey, the session and the
  // replay digest in one transaction.
  const reply = isNew ? 'completion' : wantsHeartbeat(ctx, local, from, enc.sid, chain, counter) ? 'heartbeat' : null;
  try {
    ctx.ports.store.transaction(() => {
      if (pkId !== null) ctx.keyring.consumePreKey(local, pkId);
      if (reply) {
        ctx.sessions.stage(local, from, enc.sid, session);
        const m = emptyMessage(ctx, id, from, enc.sid, reply);
        if (m) replies.push(m);
        else ctx.sessions.put(local, from, enc.sid, ctx.sessions.get(local, from, enc.sid) ?? session);
      } else ctx.sessions.put(local, from, enc.sid, session);
      ctx.replay.commit(digest);
    });
  } catch (e) {
    // Not written: the cached session must not run ahead of the stored one.
    ctx.sessions.forget(local, from, enc.sid);
    throw e;
  }
  if (isNew) ctx.log.info({ local, contact: from, deviceId: enc.sid }, 'omemo2 session started by contact');
  ctx.ports.metrics.messages.inc({ protocol: PROTOCOL, direction: 'in', result: body === null ? 'empty' : 'ok' });
  return { ok: true, body, sender: { jid: from, deviceId: enc.sid, fingerprint, trust }, replies };
}

/** A heartbeat is due once per sending chain of the contact that reached `heartbeatAfter` messages. */
function wantsHeartbeat(ctx: Omemo2Context, local: string, contact: string, deviceId: number, chain: Buffer, counter: number): boolean {
  if (counter < ctx.opts.heartbeatAfter) return false;
  const k = deviceKey(local, contact, deviceId);
  const c = chain.toString('base64');
  if (ctx.heartbeats.get(k) === c) return false;
  ctx.heartbeats.set(k, c);
  return true;
}
