// Receiving (XEP-0384 v0.3.0 §"Receiving a message"): find the <key> for our device, run it through
// the sender device's session (a PreKey message may start one), then open the AES-128-GCM payload
// with the recovered key||tag. Every failure is a value with a reason; see replies.ts for the
// protocol messages sent back.
import type Element from 'ltx/lib/Element.js';
import type { Decrypted, DecryptFailure } from '../engine.js';
import type { TrustLevel } from '../../keystore/trust-store.js';
import { errorSummary } from '../../log.js';
import { PROTOCOL } from './constants.js';
import { observe, replayDigest, type OmemoContext } from './context.js';
import { fingerprintOf, type LocalIdentity } from './keyring.js';
import { isKeyTransportMaterial, openPayload } from './payload.js';
import { keyTransport, repair, wantsHeartbeat } from './replies.js';
import { classifySessionError } from './sessions.js';
import { openWhisper } from './legacy-protocol.js';
import { inspectPreKey, type PreKeyInfo } from './signal-message.js';
import { findEncrypted, keyFor, parseEncryptedHeader, type EncryptedHeader, type KeyElement } from './wire.js';
import type { OpenedMessage } from '../ratchet/double-ratchet.js';

/** Failures that mean the session with the sender's device is missing or broken: answered by a repair. */
const REPAIRABLE: ReadonlySet<DecryptFailure> = new Set(['no-session', 'unknown-prekey', 'bad-mac']);

const bare = (jid: unknown): string | null => {
  if (typeof jid !== 'string' || jid.length === 0) return null;
  const slash = jid.indexOf('/');
  const b = slash === -1 ? jid : jid.slice(0, slash);
  return b.length > 0 ? b : null;
};

/** The <key> for our device, read once: a WhisperMessage as the ratchet opens it, or a PreKey message's fields. */
type Read = { prekey: false; opened: OpenedMessage } | { prekey: true; info: PreKeyInfo };

interface Job {
  ctx: OmemoContext;
  id: LocalIdentity;
  from: string;
  enc: EncryptedHeader;
  key: KeyElement;
  replies: Element[];
}

/** `sender` overrides the stanza's `from` (a groupchat message comes from the room; this is the occupant's real JID). */
export async function decryptStanza(ctx: OmemoContext, local: string, stanza: Element, sender?: string): Promise<Decrypted> {
  const replies: Element[] = [];
  const fail = (reason: DecryptFailure, facts: Record<string, unknown> = {}): Decrypted => {
    ctx.ports.metrics.decryptFailures.inc({ protocol: PROTOCOL, reason });
    ctx.metrics.message('in', reason);
    if (reason === 'duplicate') ctx.ports.metrics.replaysDropped.inc({ protocol: PROTOCOL });
    const level = reason === 'not-for-this-device' || reason === 'duplicate' ? 'debug' : 'info';
    ctx.log[level]({ local, ...facts, reason }, 'omemo message not decrypted');
    return { ok: false, reason, replies };
  };
  const from = sender !== undefined ? bare(sender) : bare(stanza.attrs.from);
  const el = findEncrypted(stanza);
  const enc = el ? parseEncryptedHeader(el) : null;
  if (!from || !enc) return fail('malformed', { from });
  const id = ctx.keyring.ready(local) ?? (await ctx.keyring.ensure(local));
  const facts = { contact: from, deviceId: enc.sid };
  const key = keyFor(enc, id.deviceId);
  if (!key) return fail('not-for-this-device', facts);
  // Read once here; the ratchet decrypts what was read. The replay digest is over what the MAC
  // covers (with both identity keys, so the sender's too): the WhisperMessage, the one inside a
  // PreKey message. A PreKey message's other fields (registration id, prekey ids, the wrapper's
  // encoding) can be changed without breaking the MAC, so a digest over the whole <key> would let a
  // copy with one of them changed pass as new (issue 15).
  let read: Read;
  let covered: Buffer;
  if (key.prekey) {
    const info = inspectPreKey(key.data);
    if (!info) return fail('malformed', facts);
    read = { prekey: true, info };
    covered = info.inner;
  } else {
    const opened = openWhisper(key.data);
    if (!opened) return fail('malformed', facts);
    read = { prekey: false, opened };
    covered = key.data;
  }
  // Claimed while being decrypted (two copies arriving together cannot both pass), recorded once the
  // Signal layer authenticated it, released if it did not: a forgery does not burn the genuine copy.
  const digest = replayDigest(local, covered);
  if (!ctx.replay.claim(digest)) return fail('duplicate', facts);
  try {
    return await decryptClaimed(ctx, id, from, enc, key, read, digest, replies, fail, facts);
  } finally {
    ctx.replay.release(digest);
  }
}

async function decryptClaimed(
  ctx: OmemoContext,
  id: LocalIdentity,
  from: string,
  enc: EncryptedHeader,
  key: KeyElement,
  read: Read,
  digest: Buffer,
  replies: Element[],
  fail: (reason: DecryptFailure, facts?: Record<string, unknown>) => Decrypted,
  facts: Record<string, unknown>,
): Promise<Decrypted> {
  // A device we do not know: its list may have changed without an event reaching us.
  const list = ctx.devices.cached(from);
  if (!list || !list.includes(enc.sid)) ctx.devices.refreshForUnknownDevice(id.local, from);

  const job: Job = { ctx, id, from, enc, key, replies };
  const r = read.prekey ? await preKeyMessage(job, read.info) : await whisperMessage(job, read.opened);
  if ('reason' in r) {
    // A message that decrypted but is refused (distrusted) changed its session: that is kept.
    ctx.sessions.flush();
    if (REPAIRABLE.has(r.reason)) {
      const m = await repair(ctx, id, from, enc.sid);
      if (m) replies.push(m);
    }
    return fail(r.reason, { ...facts, ...(r.err ? { err: errorSummary(r.err) } : {}) });
  }

  // The Signal layer authenticated the key material: this ciphertext is now spent either way. Its
  // digest and the session's new state are written in one transaction (one commit, not two).
  ctx.ports.store.transaction(() => {
    ctx.sessions.flush();
    ctx.replay.commit(digest);
  });
  let body: string | null = null;
  if (enc.payload === null) {
    if (!isKeyTransportMaterial(r.keyMaterial)) return fail('malformed', facts);
  } else {
    const opened = openPayload(r.keyMaterial, enc.iv, enc.payload);
    r.keyMaterial.fill(0);
    if (!opened.ok) return fail(opened.reason, { ...facts, layer: 'payload' });
    body = opened.plaintext.toString('utf8');
  }
  ctx.metrics.message('in', body === null ? 'empty' : 'ok');
  return { ok: true, body, sender: { jid: from, deviceId: enc.sid, fingerprint: r.fingerprint, trust: r.trust }, replies };
}

type Step = { keyMaterial: Buffer; trust: TrustLevel; fingerprint: string } | { reason: DecryptFailure; err?: unknown };

async function preKeyMessage(j: Job, info: PreKeyInfo): Promise<Step> {
  const { ctx, id, from, enc } = j;
  // Read-only before the message authenticates: an unverified key must not create a trust entry.
  if (ctx.ports.trust.get(from, PROTOCOL, fingerprintOf(info.identityKey))?.trust === 'distrusted') return { reason: 'distrusted' };
  const isNew = !ctx.sessions.hasBaseKey(id.local, from, enc.sid, info.baseKey);
  if (isNew) {
    // Checked before any key agreement: say what is wrong instead of failing the MAC.
    if (info.preKeyId !== 0 && !ctx.keyring.hasPreKey(id.local, info.preKeyId)) return { reason: 'unknown-prekey' };
    if (!ctx.keyring.hasSignedPreKey(id.local, info.signedPreKeyId)) return { reason: 'unknown-prekey' };
  }
  const out = signalDecrypt(j, { prekey: true, data: j.key.data, info }, isNew ? 'session_build' : 'decrypt');
  if ('reason' in out) return out;
  // The MAC covers the sender's identity key (X3DH): now it may be recorded.
  const { trust, fingerprint } = observe(ctx, from, enc.sid, info.identityKey);
  if (trust === 'distrusted') {
    out.fill(0);
    return { reason: 'distrusted' };
  }
  if (isNew) {
    ctx.log.info({ local: id.local, contact: from, deviceId: enc.sid, preKeyId: info.preKeyId }, 'omemo session started by contact');
    // Written with the message's commit in decryptClaimed (one session write, not two).
    const m = await keyTransport(ctx, id, from, enc.sid, 'completion', true);
    if (m) j.replies.push(m);
  }
  return { keyMaterial: out, trust, fingerprint };
}

async function whisperMessage(j: Job, opened: OpenedMessage): Promise<Step> {
  const { ctx, id, from, enc } = j;
  const before = ctx.sessions.openSession(id.local, from, enc.sid);
  if (!before && !ctx.sessions.hasAnySession(id.local, from, enc.sid)) return { reason: 'no-session' };
  const pre = before && observe(ctx, from, enc.sid, before.remoteIdentityKey);
  if (pre?.trust === 'distrusted') return { reason: 'distrusted' };
  const out = signalDecrypt(j, { prekey: false, data: j.key.data, opened }, 'decrypt');
  if ('reason' in out) return out;
  // The session that decrypted is now the open one (an archived one that fits is promoted).
  const after = ctx.sessions.openSession(id.local, from, enc.sid);
  if (!after) return { reason: 'internal' };
  const { trust, fingerprint } = pre && after.remoteIdentityKey.equals(before.remoteIdentityKey) ? pre : observe(ctx, from, enc.sid, after.remoteIdentityKey);
  if (trust === 'distrusted') {
    out.fill(0);
    return { reason: 'distrusted' };
  }
  if (wantsHeartbeat(ctx, id.local, from, enc.sid, opened.header.dh, opened.header.n)) {
    const m = await keyTransport(ctx, id, from, enc.sid, 'heartbeat', true);
    if (m) j.replies.push(m);
  }
  return { keyMaterial: out, trust, fingerprint };
}

function signalDecrypt(j: Job, m: Parameters<OmemoContext['sessions']['decryptNow']>[3], op: string): Buffer | { reason: DecryptFailure; err: unknown } {
  const end = j.ctx.metrics.time(op);
  try {
    // Written by decryptClaimed, with the replay digest.
    return j.ctx.sessions.decryptNow(j.id, j.from, j.enc.sid, m);
  } catch (e) {
    return { reason: classifySessionError(e), err: e };
  } finally {
    end();
  }
}
