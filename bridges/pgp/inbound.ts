// Inbound XEP-0027: <x xmlns='jabber:x:encrypted'> messages and <x xmlns='jabber:x:signed'> presence.
//
// How a decrypted message is judged (the sender's key is the one registered for the stanza's bare
// `from`; nothing else is trusted to name a key):
//   signed by the registered key, valid    -> delivered; trust is the key's (TrustStore); a key an
//                                             admin distrusted -> 'distrusted'
//   signed by the registered key, invalid  -> 'bad-signature'
//   signed, but not by the registered key  -> 'unknown-key' (a stale registration or an impostor;
//     (or no key registered)                  either way replies would not reach the sender's key)
//   not signed                             -> delivered as 'untrusted' without a fingerprint:
//                                             XEP-0027 does not require signing and clients
//                                             commonly encrypt without signing; refusing would cut
//                                             them off while an attacker gains nothing (a forger
//                                             would simply not sign). The sender is then only as
//                                             authenticated as the XMPP server makes it. With
//                                             requireSignedMessages -> 'bad-signature'.
//   signature older than the replay window -> 'duplicate' (its digest may have been pruned)
// Failures before that, in order: bad armor or packets -> 'malformed'; a ciphertext seen before ->
// 'duplicate'; not for one of our keys -> 'wrong-key'; integrity (MDC) or session-key failure ->
// 'bad-mac'. A refused message does not burn its digest (replay-guard.ts).
import * as openpgp from 'openpgp';
import type { Logger } from 'pino';
import type { DecryptFailure, Element, SenderInfo } from '../engine.js';
import type { TrustStore } from '../../keystore/trust-store.js';
import type { Metrics } from '../../http/metrics.js';
import { bare } from '../../component/jid.js';
import { parseStripped } from './armor.js';
import { CLOCK_SKEW_MS, FULL_CONFIG, PGP_CONFIG } from './openpgp-config.js';
import { keyIdHex, readableKeyIds } from './keys.js';
import type { LocalKeys } from './local-keys.js';
import type { ContactKeys } from './contact-keys.js';
import { encryptedDataBody } from './packets.js';
import { payloadDigest, type ReplayGuard } from './replay-guard.js';
import { encryptedPayload } from './wire.js';

export interface InboundDeps {
  keys: LocalKeys;
  contactKeys: ContactKeys;
  replay: ReplayGuard;
  trust: TrustStore;
  metrics: Metrics;
  log: Logger;
  now(): number;
  requireSignedMessages: boolean;
  /** Per contact: the creation time (ms) of the newest signed presence accepted. */
  presenceSeen: { get(k: string): number | undefined; set(k: string, v: number): unknown };
}

interface Accepted {
  body: string;
  sender: SenderInfo;
}

export type Inbound = ({ ok: true } & Accepted) | { ok: false; reason: DecryptFailure };

export interface PresenceCheck {
  /** The signature verifies with the contact's registered key. */
  ok: boolean;
  /** The issuer key id named by the signature (16 uppercase hex), null if unreadable. */
  keyId: string | null;
  /** The issuer is the contact's registered key (or one of its subkeys). */
  matchesRegistered: boolean;
  fingerprint?: string;
  signedAt?: Date;
  reason?: DecryptFailure;
}

class Refused extends Error {
  constructor(readonly reason: DecryptFailure, readonly detail?: string) {
    super(reason);
  }
}

const WILDCARD = '0000000000000000';
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The literal data packet's format: 'b' binary, 't' text, 'u' UTF-8 text, 'm' MIME. */
function literalFormat(m: openpgp.Message<Uint8Array>): number | undefined {
  const lit = m.unwrapCompressed().packets.findPacket(openpgp.enums.packet.literalData) as { format?: number } | undefined;
  return lit?.format;
}

/**
 * Binary literal data is the body's exact bytes (what gpg writes for piped input, and what we send).
 * Text formats are CRLF-canonical on the wire (RFC 4880 §5.9, gpg --textmode), so their line ends
 * are turned back into LF, as XML would deliver them.
 */
function toBody(data: Uint8Array, format: number | undefined): string {
  const text = utf8.decode(data);
  return format === undefined || format === openpgp.enums.literal.binary ? text : text.replace(/\r\n/g, '\n');
}

/** Sorts openpgp's decryption errors (their messages are fixed strings, never data). */
function classify(e: unknown): DecryptFailure {
  const m = e instanceof Error ? e.message : '';
  if (/modification detected|session key decryption failed|authentication tag|mdc|integrity/i.test(m)) return 'bad-mac';
  if (/no (?:valid )?decryption key|could not find.*decryption key/i.test(m)) return 'wrong-key';
  return 'malformed';
}

export async function decryptMessage(d: InboundDeps, local: string, stanza: Element): Promise<Inbound> {
  let from = '';
  let digest: Buffer | null = null;
  try {
    from = catching('malformed', () => bare(String(stanza.attrs.from ?? '')));
    const text = encryptedPayload(stanza);
    if (text === null) throw new Refused('malformed', 'no jabber:x:encrypted payload');
    const bytes = catching('malformed', () => parseStripped(text).bytes);
    const message = await openpgp.readMessage({ binaryMessage: bytes, config: PGP_CONFIG }).catch((e: unknown) => {
      throw new Refused('malformed', (e as Error).message);
    });
    // The digest covers the integrity-protected ciphertext, not the whole payload: the session-key
    // packets around it can be changed without breaking anything (drop another recipient's PKESK,
    // reorder them, re-encode a length), while a change to this part fails the MDC, and another
    // ciphertext of the same plaintext takes the session key.
    digest = payloadDigest(encryptedDataBody(bytes) ?? bytes);
    if (!d.replay.claim(digest)) {
      digest = null; // not ours to release
      d.metrics.replaysDropped.inc({ protocol: 'pgp' });
      throw new Refused('duplicate');
    }
    const result = await judge(d, local, from, message);
    d.replay.commit(digest);
    d.metrics.messages.inc({ protocol: 'pgp', direction: 'in', result: 'ok' });
    return { ok: true, ...result };
  } catch (e) {
    if (digest) d.replay.release(digest);
    const reason: DecryptFailure = e instanceof Refused ? e.reason : 'internal';
    d.metrics.messages.inc({ protocol: 'pgp', direction: 'in', result: 'failed' });
    d.metrics.decryptFailures.inc({ protocol: 'pgp', reason });
    const detail = e instanceof Refused ? e.detail : e instanceof Error ? `${e.name}: ${e.message}` : undefined;
    const level = reason === 'internal' ? 'error' : 'info';
    d.log[level]({ local, from, reason, detail: detail?.slice(0, 200) }, 'pgp message refused');
    return { ok: false, reason };
  }
}

function catching<T>(reason: DecryptFailure, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new Refused(reason, (e as Error).message);
  }
}

async function judge(d: InboundDeps, local: string, from: string, message: openpgp.Message<Uint8Array>): Promise<Accepted> {
  // peek, not get: no key yet means nobody can have encrypted to it, and a stream of messages to
  // new addresses must not make the gateway generate keys.
  const me = await d.keys.peek(local);
  if (!me) throw new Refused('wrong-key', 'no key for this JID yet');
  const recipients = readableKeyIds(message.getEncryptionKeyIDs());
  // A wildcard id (gpg --throw-keyids) may be anyone: then only decryption can tell.
  if (!recipients.some((id) => id === WILDCARD || me.keyIds.has(id))) throw new Refused('wrong-key');
  const date = new Date(d.now() + CLOCK_SKEW_MS);
  const decrypted = await d.metrics
    .timeCrypto('pgp', 'decrypt', () => message.decrypt([me.privateKey], undefined, undefined, date, FULL_CONFIG))
    .catch((e: unknown) => {
      throw new Refused(classify(e), (e as Error).message);
    });
  const data = catching('malformed', () => decrypted.getLiteralData());
  if (!(data instanceof Uint8Array)) throw new Refused('malformed', 'no literal data');
  const body = catching('malformed', () => toBody(data, literalFormat(decrypted)));

  const signers = readableKeyIds(decrypted.getSigningKeyIDs());
  if (signers.length === 0) {
    if (d.requireSignedMessages) throw new Refused('bad-signature', 'unsigned');
    return { body, sender: { jid: from, trust: 'untrusted' } };
  }
  const lookup = await d.contactKeys.get(from);
  if (lookup.status !== 'ok') throw new Refused('unknown-key', lookup.status === 'none' ? 'no registered key' : lookup.problem);
  const ck = lookup.key;
  if (!signers.some((id) => ck.keyIds.has(id))) throw new Refused('unknown-key', 'signed by another key');
  const signedAt = await d.metrics.timeCrypto('pgp', 'verify', async () => {
    // openpgp hands back one promise per signature; the work happens when they are awaited.
    for (const r of await decrypted.verify([ck.key], date, FULL_CONFIG)) {
      if (!r.keyID || !ck.keyIds.has(keyIdHex(r.keyID))) continue;
      try {
        await r.verified;
        return (await r.signature).packets[0]?.created ?? null;
      } catch {
        // try the next signature by this key, if any
      }
    }
    return null;
  });
  if (!signedAt) throw new Refused('bad-signature');
  if (signedAt.getTime() < d.now() - d.replay.windowMs) {
    d.metrics.replaysDropped.inc({ protocol: 'pgp' });
    throw new Refused('duplicate', 'signature older than the replay window');
  }
  const trust = d.trust.observe(from, 'pgp', ck.keyId, ck.fingerprint, d.now());
  if (trust === 'distrusted') throw new Refused('distrusted');
  return { body, sender: { jid: from, fingerprint: ck.fingerprint, trust } };
}

/**
 * Checks the detached signature of a presence's <status> text against the contact's registered key.
 * Never throws: whatever the peer sent (garbage, a packet of another version, a signature openpgp
 * keeps unparsed) is a value, since the caller runs on a presence listener with nobody to catch.
 */
export async function checkPresence(d: InboundDeps, contact: string, status: string, signedText: string): Promise<PresenceCheck> {
  try {
    const r = await checkPresenceUnsafe(d, contact, status, signedText);
    return r.ok && r.signedAt ? fresh(d, contact, { ...r, signedAt: r.signedAt }) : r;
  } catch (e) {
    d.log.info({ contact, detail: e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 200) : undefined }, 'pgp signed presence unreadable');
    return { ok: false, keyId: null, matchesRegistered: false, reason: 'malformed' };
  }
}

/**
 * What XEP-0027 allows against replays of signed presence: the signature covers only the status
 * text, but it carries its creation time. A valid signature older than the newest one accepted from
 * this contact (to any hosted JID: a client broadcasts one signed presence to all its contacts), or
 * older than the replay window, is refused as 'duplicate'. The same signature again (a server
 * answering a probe with the last presence) is not a rollback and stays valid.
 */
function fresh(d: InboundDeps, contact: string, r: PresenceCheck & { signedAt: Date }): PresenceCheck {
  const t = r.signedAt.getTime();
  const key = contact;
  const newest = d.presenceSeen.get(key);
  if ((newest !== undefined && t < newest) || t < d.now() - d.replay.windowMs) {
    d.metrics.replaysDropped.inc({ protocol: 'pgp' });
    return { ok: false, keyId: r.keyId, matchesRegistered: r.matchesRegistered, ...(r.fingerprint ? { fingerprint: r.fingerprint } : {}), signedAt: r.signedAt, reason: 'duplicate' };
  }
  if (newest === undefined || t > newest) d.presenceSeen.set(key, t);
  return r;
}

async function checkPresenceUnsafe(d: InboundDeps, contact: string, status: string, signedText: string): Promise<PresenceCheck> {
  let signature: openpgp.Signature;
  try {
    signature = await openpgp.readSignature({ binarySignature: parseStripped(signedText).bytes, config: PGP_CONFIG });
  } catch {
    return { ok: false, keyId: null, matchesRegistered: false, reason: 'malformed' };
  }
  const issuers = readableKeyIds(signature.getSigningKeyIDs());
  if (issuers.length === 0) return { ok: false, keyId: null, matchesRegistered: false, reason: 'malformed' };
  const keyId = issuers[0]!;
  const lookup = await d.contactKeys.get(contact);
  if (lookup.status !== 'ok') return { ok: false, keyId, matchesRegistered: false, reason: 'unknown-key' };
  const ck = lookup.key;
  const matching = issuers.find((id) => ck.keyIds.has(id));
  if (!matching) return { ok: false, keyId, matchesRegistered: false, reason: 'unknown-key' };
  const base = { keyId: matching, matchesRegistered: true, fingerprint: ck.fingerprint };
  const message = await openpgp.createMessage({ binary: new TextEncoder().encode(status) });
  const signedAt = await d.metrics.timeCrypto('pgp', 'verify', async () => {
    try {
      const date = new Date(d.now() + CLOCK_SKEW_MS);
      const { signatures } = await openpgp.verify({ message, signature, verificationKeys: [ck.key], date, config: PGP_CONFIG });
      const mine = signatures.find((r) => r.keyID && ck.keyIds.has(keyIdHex(r.keyID)));
      if (!mine) return null;
      await mine.verified;
      return (await mine.signature).packets[0]?.created ?? new Date(0);
    } catch {
      return null;
    }
  });
  return signedAt ? { ok: true, ...base, signedAt } : { ok: false, ...base, reason: 'bad-signature' };
}
