// Inbound OX (XEP-0373 §3, XEP-0374): <openpgp> messages to hosted JIDs, judged in this order:
//   not base64 / not OpenPGP / not one OX content element      -> 'malformed'
//   a ciphertext seen before (XEP-0027 and OX share the store) -> 'duplicate' (dropped quietly)
//   not encrypted (<sign>): plaintext                          -> 'plaintext' unless plaintext is
//                                                                 allowed for the hosted JID; then
//                                                                 checked as below, delivered as 'none'
//   not encrypted to the hosted JID's key                      -> 'wrong-key'
//   integrity (MDC/AEAD) or session-key failure                -> 'bad-mac'
//   <signcrypt>/<sign> not signed                              -> 'bad-signature'
//   signed by a key the sender's PEP does not announce (after
//     re-reading it), or whose user ID is not xmpp:<sender>    -> 'unknown-key'
//   the signature does not verify                              -> 'bad-signature'
//   no <to> names the hosted JID                               -> 'wrong-recipient'
//   <time> further than ox_max_clock_skew from now and from
//     the <delay> stamp (offline storage)                      -> 'stale-time'
//   a key an admin distrusted                                  -> 'distrusted'
//   <crypt> (encrypted, not signed)                            -> delivered marked 'untrusted',
//                                                                 without a fingerprint
// A refused message does not burn its digest (replay-guard.ts).
import * as openpgp from 'openpgp';
import type { Logger } from 'pino';
import type { DecryptFailure, Element, SenderInfo } from '../engine.js';
import type { TrustStore } from '../../keystore/trust-store.js';
import type { Metrics } from '../../http/metrics.js';
import { bare } from '../../component/jid.js';
import { FULL_CONFIG, PGP_CONFIG } from '../pgp/openpgp-config.js';
import { readableKeyIds } from '../pgp/keys.js';
import type { LocalKeys } from '../pgp/local-keys.js';
import { encryptedDataBody } from '../pgp/packets.js';
import { payloadDigest, type ReplayGuard } from '../pgp/replay-guard.js';
import { PROTOCOL, type OxContactKey, type OxContactKeys } from './contact-keys.js';
import { ContentError, delayStamp, openpgpPayload, parseContent, type Content } from './wire.js';

export interface OxInboundDeps {
  keys: LocalKeys;
  contactKeys: OxContactKeys;
  replay: ReplayGuard;
  trust: TrustStore;
  metrics: Metrics;
  log: Logger;
  now(): number;
  maxClockSkewMs: number;
  plaintextAllowed(local: string): boolean;
}

export type OxInbound =
  | { ok: true; body: string | null; sender: SenderInfo; plaintext: boolean }
  | { ok: false; reason: DecryptFailure };

class Refused extends Error {
  constructor(readonly reason: DecryptFailure, readonly detail?: string) {
    super(reason);
  }
}

const WILDCARD = '0000000000000000';
const MAX_PAYLOAD_CHARS = 1024 * 1024;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function classify(e: unknown): DecryptFailure {
  const m = e instanceof Error ? e.message : '';
  if (/modification detected|session key decryption failed|authentication tag|mdc|integrity/i.test(m)) return 'bad-mac';
  if (/no (?:valid )?decryption key|could not find.*decryption key/i.test(m)) return 'wrong-key';
  return 'malformed';
}

function decodeBase64(text: string): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  if (compact.length === 0 || compact.length > MAX_PAYLOAD_CHARS || compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(compact)) {
    throw new Refused('malformed', 'payload is not base64');
  }
  return new Uint8Array(Buffer.from(compact, 'base64'));
}

export async function decryptOx(d: OxInboundDeps, local: string, stanza: Element): Promise<OxInbound> {
  let from = '';
  let digest: Buffer | null = null;
  try {
    try {
      from = bare(String(stanza.attrs.from ?? ''));
    } catch {
      throw new Refused('malformed', 'bad from');
    }
    const text = openpgpPayload(stanza);
    if (text === null) throw new Refused('malformed', 'no <openpgp> element');
    const bytes = decodeBase64(text);
    const message = await openpgp.readMessage({ binaryMessage: bytes, config: PGP_CONFIG }).catch((e: unknown) => {
      throw new Refused('malformed', (e as Error).message);
    });
    // As for XEP-0027 (see there): the digest covers the integrity-protected data only.
    digest = payloadDigest(encryptedDataBody(bytes) ?? bytes);
    if (!d.replay.claim(digest)) {
      digest = null;
      d.metrics.replaysDropped.inc({ protocol: PROTOCOL });
      throw new Refused('duplicate');
    }
    const result = await judge(d, local, from, stanza, message);
    d.replay.commit(digest);
    d.metrics.messages.inc({ protocol: PROTOCOL, direction: 'in', result: 'ok' });
    return { ok: true, ...result };
  } catch (e) {
    if (digest) d.replay.release(digest);
    const reason: DecryptFailure = e instanceof Refused ? e.reason : 'internal';
    d.metrics.messages.inc({ protocol: PROTOCOL, direction: 'in', result: 'failed' });
    d.metrics.decryptFailures.inc({ protocol: PROTOCOL, reason });
    const detail = e instanceof Refused ? e.detail : e instanceof Error ? `${e.name}: ${e.message}` : undefined;
    d.log[reason === 'internal' ? 'error' : 'info']({ local, from, reason, detail: detail?.slice(0, 200) }, 'ox message refused');
    return { ok: false, reason };
  }
}

async function judge(
  d: OxInboundDeps,
  local: string,
  from: string,
  stanza: Element,
  message: openpgp.Message<Uint8Array>,
): Promise<{ body: string | null; sender: SenderInfo; plaintext: boolean }> {
  const date = new Date(d.now() + d.maxClockSkewMs);
  const encrypted = message.getEncryptionKeyIDs().length > 0;
  let opened: openpgp.Message<Uint8Array> = message;
  if (!encrypted) {
    if (!d.plaintextAllowed(local)) throw new Refused('plaintext', 'signed but not encrypted');
  } else {
    // peek, not get: no key yet means nobody can have encrypted to it.
    const me = await d.keys.peek(local);
    if (!me) throw new Refused('wrong-key', 'no key for this JID yet');
    const recipients = readableKeyIds(message.getEncryptionKeyIDs());
    if (!recipients.some((id) => id === WILDCARD || me.keyIds.has(id))) throw new Refused('wrong-key');
    opened = await d.metrics
      .timeCrypto(PROTOCOL, 'decrypt', () => message.decrypt([me.privateKey], undefined, undefined, date, FULL_CONFIG))
      .catch((e: unknown) => {
        throw new Refused(classify(e), (e as Error).message);
      });
  }
  const data = (() => {
    try {
      return opened.getLiteralData();
    } catch (e) {
      throw new Refused('malformed', (e as Error).message);
    }
  })();
  if (!(data instanceof Uint8Array)) throw new Refused('malformed', 'no literal data');
  let content: Content;
  try {
    content = parseContent(utf8.decode(data));
  } catch (e) {
    throw new Refused('malformed', e instanceof ContentError ? e.message : 'content is not UTF-8');
  }
  if (content.kind === 'crypt' ? !encrypted : encrypted !== (content.kind === 'signcrypt')) {
    throw new Refused('malformed', `<${content.kind}> in a${encrypted ? 'n encrypted' : ' signed-only'} message`);
  }

  let sender: SenderInfo = { jid: from, trust: 'untrusted' };
  if (content.kind !== 'crypt') {
    const signers = readableKeyIds(opened.getSigningKeyIDs());
    if (signers.length === 0) throw new Refused('bad-signature', 'not signed');
    const key = await signerKey(d, local, from, signers);
    if (!(await verified(d, opened, key, date))) throw new Refused('bad-signature');
    const trust = d.trust.observe(from, PROTOCOL, key.fingerprint, key.fingerprint, d.now());
    sender = { jid: from, fingerprint: key.fingerprint, trust };
  }
  // XEP-0373 §3.1: a <to> must name the entity the stanza was sent to (surreptitious forwarding).
  const toOk = content.to.some((jid) => {
    try {
      return bare(jid) === local;
    } catch {
      return false;
    }
  });
  if (content.kind !== 'crypt' || content.to.length > 0) {
    if (!toOk) throw new Refused('wrong-recipient');
  }
  const delayed = delayStamp(stanza);
  const near = (t: number) => Math.abs(content.time - t) <= d.maxClockSkewMs;
  if (!near(d.now()) && !(delayed !== null && near(delayed))) throw new Refused('stale-time');
  if (sender.trust === 'distrusted') throw new Refused('distrusted');
  return { body: content.body, sender, plaintext: !encrypted };
}

/** The announced key of `from` that made one of the signatures; re-reads their PEP once if needed. */
async function signerKey(d: OxInboundDeps, local: string, from: string, signers: string[]): Promise<OxContactKey> {
  const find = (keys: OxContactKey[] | null) => keys?.find((k) => signers.some((id) => k.keyIds.has(id)));
  const lookup = async (force: boolean) => {
    try {
      return find(await d.contactKeys.get(local, from, force));
    } catch (e) {
      throw new Refused('unknown-key', `keys unreadable: ${(e as Error).message}`);
    }
  };
  const key = (await lookup(false)) ?? (await lookup(true));
  if (!key) throw new Refused('unknown-key', 'signed by a key the sender does not announce');
  return key;
}

async function verified(d: OxInboundDeps, opened: openpgp.Message<Uint8Array>, key: OxContactKey, date: Date): Promise<boolean> {
  return d.metrics.timeCrypto(PROTOCOL, 'verify', async () => {
    for (const r of await opened.verify([key.key], date, FULL_CONFIG)) {
      if (readableKeyIds([r.keyID]).every((id) => !key.keyIds.has(id))) continue;
      try {
        await r.verified;
        return true;
      } catch {
        // another signature by this key may verify
      }
    }
    return false;
  });
}
