// The OTR engine (OTR v3 with instance tags, v2 for clients that offer nothing newer; XEP-0364):
// a DSA key and an instance tag per hosted JID; one session per (hosted JID, contact full JID),
// stored sealed so it survives a restart. It answers query messages and whitespace tags by starting
// an AKE, runs the AKE either way, decrypts data messages (fragments in both formats, key rotation,
// the disconnect TLV, heartbeats), declines SMP with an abort TLV, and answers a message it cannot
// read with an OTR error and a fresh AKE. Replies are returned, never sent.
import { randomInt } from 'node:crypto';
import type { Element, EnginePorts, HandshakeEngine, IdentityFacts, Decrypted, Encrypted, Reachability } from '../engine.js';
import { GatewayError } from '../../errors.js';
import { isUsable } from '../../keystore/trust-store.js';
import { OtrParseError } from './bytes.js';
import { fingerprint, generateDsaKey, loadDsaKey, type DsaPrivate } from './dsa.js';
import { idleAke, onDhCommit, onDhKey, onRevealSig, onSignature, startAke, type AkeResult, type AkeState, type AkeStep } from './ake.js';
import {
  decodeMessage,
  encodedText,
  encodeMessage,
  fragmentText,
  FLAG_IGNORE_UNREADABLE,
  looksLikeOtr,
  MIN_INSTANCE_TAG,
  MSG_DATA,
  MSG_DH_COMMIT,
  MSG_DH_KEY,
  MSG_REVEAL_SIG,
  parseBody,
  QUERY_TEXT,
  Reassembler,
  type Header,
  type OtrMessage,
  type OtrVersion,
} from './messages.js';
import { decryptData, encryptData, sessionFromAke, TLV_DISCONNECTED, TLV_SMP, TLV_SMP_ABORT, type DataMessage, type SessionState } from './session.js';
import { otrChildren, otrMessage } from './wire.js';

export interface OtrEngineOptions {
  /** Longest body we send; longer OTR messages go out as fragments (0: never fragment). */
  maxMessageSize?: number;
  /** After this long without sending to a contact that writes, send a heartbeat (key rotation). */
  heartbeatMs?: number;
  /** A query to the same contact is not repeated within this time. */
  queryIntervalMs?: number;
}

/** Per (hosted JID, contact full JID). */
interface OtrContext {
  version: OtrVersion;
  theirTag: number;
  ake: AkeState;
  session: SessionState | null;
  theirFingerprint: string | null;
  /** The contact ended the session (disconnect TLV): nothing more is sent until a new AKE. */
  finished: boolean;
  lastSent: number;
}

export interface OtrEngine extends HandshakeEngine {
  /** Whether an encrypted session with this full JID exists (tests, diagnostics). */
  hasSession(local: string, full: string): boolean;
}

const bareOf = (jid: string) => jid.split('/')[0]!;

export function createOtrEngine(ports: EnginePorts, opts: OtrEngineOptions = {}): OtrEngine {
  const { store, log, now, resource } = ports;
  const maxSize = opts.maxMessageSize ?? 0;
  const heartbeatMs = opts.heartbeatMs ?? 60_000;
  const queryIntervalMs = opts.queryIntervalMs ?? 10_000;
  const keys = new Map<string, DsaPrivate>();
  const reassembly = new Map<string, Reassembler>();
  const queried = new Map<string, number>();
  const akeStarted = new Map<string, number>();
  /** Per-peer maps stay bounded whatever peers send: the oldest entry goes first. */
  const bounded = <K, V>(m: Map<K, V>, max = 10_000): Map<K, V> => {
    while (m.size >= max) m.delete(m.keys().next().value as K);
    return m;
  };

  const generating = new Map<string, Promise<DsaPrivate>>();
  /** The hosted JID's DSA key: cached, else stored, else generated off the event loop (one generation per JID at a time). */
  async function dsaKey(local: string): Promise<DsaPrivate> {
    const k = keys.get(local);
    if (k) return k;
    let p = generating.get(local);
    if (!p) {
      p = (async () => {
        const stored = store.get(local, 'identity', 'dsa');
        let key: DsaPrivate;
        if (stored) key = loadDsaKey(stored);
        else {
          ports.admitIdentity?.(local);
          key = await generateDsaKey();
          store.put(local, 'identity', 'dsa', key.der);
        }
        keys.set(local, key);
        return key;
      })().finally(() => generating.delete(local));
      generating.set(local, p);
    }
    return p;
  }

  /** The key dsaKey() has loaded (called inside keystore transactions, which cannot await). */
  function loadedKey(local: string): DsaPrivate {
    const k = keys.get(local);
    if (!k) throw new Error('OTR key not loaded');
    return k;
  }

  function ourTag(local: string): number {
    const t = store.getJson<number>(local, 'instance', 'tag');
    if (t !== undefined) return t;
    const tag = randomInt(MIN_INSTANCE_TAG, 0xffffffff);
    store.putJson(local, 'instance', 'tag', tag);
    return tag;
  }

  const loadCtx = (local: string, full: string) => store.getJson<OtrContext>(local, 'ctx', full);
  const saveCtx = (local: string, full: string, c: OtrContext) => store.putJson(local, 'ctx', full, c);
  const newCtx = (version: OtrVersion): OtrContext => ({ version, theirTag: 0, ake: idleAke(), session: null, theirFingerprint: null, finished: false, lastSent: 0 });
  const lastFull = (local: string, peer: string) => store.getJson<string>(local, 'peer', peer);

  const header = (local: string, c: OtrContext): Header => ({ version: c.version, senderTag: c.version === 3 ? ourTag(local) : 0, receiverTag: c.version === 3 ? c.theirTag : 0 });

  /** Stanzas carrying one OTR message (fragmented when longer than the maximum size). */
  function stanzas(local: string, full: string, m: OtrMessage): Element[] {
    return fragmentText(encodedText(encodeMessage(m)), m.h, maxSize).map((t) => otrMessage(`${local}/${resource}`, full, t));
  }

  function count(result: string, reason?: string): void {
    ports.metrics.messages.inc({ protocol: 'otr', direction: 'in', result });
    if (reason) ports.metrics.decryptFailures.inc({ protocol: 'otr', reason });
  }

  function established(local: string, full: string, c: OtrContext, done: AkeResult): void {
    c.session = sessionFromAke(done);
    c.finished = false;
    c.theirFingerprint = fingerprint(done.theirLongTerm);
    const bare = bareOf(full);
    ports.trust.observe(bare, 'otr', c.theirFingerprint, c.theirFingerprint, now());
    store.putJson(local, 'peer', bare, full);
    ports.contacts.setLastProtocol(local, bare, 'otr');
    log.info({ local, peer: full, version: c.version }, 'OTR session established');
  }

  /** An AKE step's outcome: send its message, and on completion start the data phase. */
  function afterAke(local: string, full: string, c: OtrContext, step: AkeStep): Element[] {
    if (step.error) log.info({ local, peer: full, problem: step.error }, 'OTR AKE message refused');
    c.ake = step.state;
    if (step.done) established(local, full, c, step.done);
    return step.send ? stanzas(local, full, step.send) : [];
  }

  /** An OTR error message and a fresh AKE (at most one per contact per queryIntervalMs): for a data message we cannot read. */
  function unreadable(local: string, full: string, c: OtrContext): Element[] {
    const out = [otrMessage(`${local}/${resource}`, full, '?OTR Error: The gateway could not read your encrypted message; it was not delivered. A new private conversation is being started.')];
    const key = `${local}\0${full}`;
    const last = akeStarted.get(key);
    if (last !== undefined && now() - last < queryIntervalMs) return out;
    bounded(akeStarted).set(key, now());
    const step = startAke({ ...header(local, c), receiverTag: c.version === 3 ? c.theirTag : 0 });
    c.ake = step.state;
    out.push(...stanzas(local, full, step.send!));
    return out;
  }

  function onData(local: string, full: string, c: OtrContext, m: DataMessage): Decrypted {
    const sender = { jid: bareOf(full), trust: 'untrusted' as const };
    const quiet = (m.flags & FLAG_IGNORE_UNREADABLE) !== 0;
    if (!c.session || (c.version === 3 && m.h.senderTag !== c.theirTag)) {
      count('failed', 'no-session');
      return quiet ? { ok: true, body: null, sender, replies: [] } : { ok: false, reason: 'no-session', replies: unreadable(local, full, c) };
    }
    const res = decryptData(c.session, m);
    if (!res.ok) {
      const reason = res.why === 'bad-mac' ? 'bad-mac' : res.why === 'old-counter' ? 'duplicate' : 'no-session';
      count('failed', reason);
      if (quiet || reason === 'duplicate') return { ok: false, reason: quiet ? 'not-for-this-device' : 'duplicate', replies: [] };
      return { ok: false, reason, replies: unreadable(local, full, c) };
    }
    const trust = ports.trust.observe(bareOf(full), 'otr', c.theirFingerprint!, c.theirFingerprint!, now());
    const replies: Element[] = [];
    if (res.tlvs.some((t) => t.type === TLV_DISCONNECTED)) {
      c.session = null;
      c.finished = true;
      log.info({ local, peer: full }, 'OTR session ended by the contact');
    } else if (res.tlvs.some((t) => TLV_SMP.has(t.type))) {
      // SMP is not offered: decline at once so the contact's client does not wait.
      replies.push(...stanzas(local, full, encryptData(c.session, header(local, c), Buffer.alloc(0), [{ type: TLV_SMP_ABORT, value: Buffer.alloc(0) }], FLAG_IGNORE_UNREADABLE)));
      c.lastSent = now();
    }
    if (trust === 'distrusted') {
      count('failed', 'distrusted');
      return { ok: false, reason: 'distrusted', replies };
    }
    const info = { jid: bareOf(full), fingerprint: c.theirFingerprint!, trust };
    if (res.text.length === 0) {
      count('heartbeat');
      return { ok: true, body: null, sender: info, replies };
    }
    // A contact who writes but never hears from us would keep its keys forever: a heartbeat rotates them.
    if (c.session && now() - c.lastSent > heartbeatMs) {
      replies.push(...stanzas(local, full, encryptData(c.session, header(local, c), Buffer.alloc(0), [], FLAG_IGNORE_UNREADABLE)));
      c.lastSent = now();
    }
    count('ok');
    return { ok: true, body: res.text.toString('utf8'), sender: info, replies };
  }

  function onEncoded(local: string, full: string, m: ReturnType<typeof decodeMessage>): Decrypted {
    const sender = { jid: bareOf(full), trust: 'untrusted' as const };
    const ok = (replies: Element[]): Decrypted => ({ ok: true, body: null, sender, replies });
    if (m.h.version === 3) {
      // Instance tags: another instance's traffic, or a sender without a valid tag, is not ours.
      if (m.h.senderTag < MIN_INSTANCE_TAG) return { ok: false, reason: 'malformed', replies: [] };
      if (m.h.receiverTag !== 0 && m.h.receiverTag !== ourTag(local)) return { ok: false, reason: 'not-for-this-device', replies: [] };
      if (m.h.receiverTag === 0 && m.type !== MSG_DH_COMMIT) return { ok: false, reason: 'not-for-this-device', replies: [] };
    }
    const c = loadCtx(local, full) ?? newCtx(m.h.version);
    let result: Decrypted;
    if (m.type === MSG_DATA) {
      result = onData(local, full, c, m);
    } else {
      if (m.type === MSG_DH_COMMIT || m.type === MSG_DH_KEY) {
        c.version = m.h.version;
        if (m.h.version === 3) c.theirTag = m.h.senderTag;
      } else if (m.h.version !== c.version || (m.h.version === 3 && m.h.senderTag !== c.theirTag)) {
        return { ok: false, reason: 'not-for-this-device', replies: [] };
      }
      const h = header(local, c);
      let step: AkeStep;
      if (m.type === MSG_DH_COMMIT) step = onDhCommit(c.ake, h, m);
      else if (m.type === MSG_DH_KEY) step = onDhKey(c.ake, h, m, loadedKey(local));
      else if (m.type === MSG_REVEAL_SIG) step = onRevealSig(c.ake, h, m, loadedKey(local));
      else step = onSignature(c.ake, m);
      result = ok(afterAke(local, full, c, step));
      if (step.error) result = { ok: false, reason: step.error === 'bad signature' ? 'bad-signature' : 'malformed', replies: result.replies };
      count(step.error ? 'failed' : 'ake');
    }
    saveCtx(local, full, c);
    return result;
  }

  /** Starts an AKE with `full` (answering a query or a whitespace tag): a D-H Commit. */
  function commitTo(local: string, full: string, version: OtrVersion): Element[] {
    const c = loadCtx(local, full) ?? newCtx(version);
    c.version = version;
    const step = startAke(header(local, c));
    c.ake = step.state;
    saveCtx(local, full, c);
    store.putJson(local, 'peer', bareOf(full), full);
    return stanzas(local, full, step.send!);
  }

  const pickVersion = (versions: Set<number>): OtrVersion | null => (versions.has(3) ? 3 : versions.has(2) ? 2 : null);

  async function decrypt(local: string, stanza: Element): Promise<Decrypted> {
    const full = String(stanza.attrs.from ?? '');
    const sender = { jid: bareOf(full), trust: 'untrusted' as const };
    const body = stanza.getChildText('body') ?? '';
    try {
      let parsed = parseBody(body);
      if (parsed.kind === 'fragment') {
        const key = `${local}\0${full}\0${parsed.senderTag}`;
        if (parsed.version === 3 && (parsed.senderTag < MIN_INSTANCE_TAG || (parsed.receiverTag !== 0 && parsed.receiverTag !== ourTag(local)))) {
          return { ok: false, reason: 'not-for-this-device', replies: [] };
        }
        let r = reassembly.get(key);
        if (!r) bounded(reassembly).set(key, (r = new Reassembler()));
        const whole = r.add(parsed);
        if (whole === null) return { ok: true, body: null, sender, replies: [] };
        reassembly.delete(key);
        parsed = parseBody(whole);
        if (parsed.kind !== 'encoded') throw new OtrParseError('a reassembled message is not an encoded message');
      } else {
        // Any other message drops a half-reassembled one from this sender.
        for (const k of reassembly.keys()) if (k.startsWith(`${local}\0${full}\0`)) reassembly.delete(k);
      }
      switch (parsed.kind) {
        case 'encoded': {
          const m = decodeMessage(parsed.bytes);
          // These AKE steps sign with our key: generated (off the loop) or loaded before the transaction.
          if (m.type === MSG_DH_KEY || m.type === MSG_REVEAL_SIG) await dsaKey(local);
          return store.transaction(() => onEncoded(local, full, m));
        }
        case 'query': {
          const v = pickVersion(parsed.versions);
          if (!v) return { ok: true, body: null, sender, replies: [otrMessage(`${local}/${resource}`, full, '?OTR Error: This gateway speaks OTR versions 2 and 3 only.')] };
          count('query');
          return { ok: true, body: null, sender, replies: commitTo(local, full, v) };
        }
        case 'error':
          log.info({ local, peer: full }, 'OTR error message from the contact');
          count('error_message');
          return { ok: true, body: null, sender, replies: [] };
        case 'plaintext': {
          const v = pickVersion(parsed.versions);
          const replies = v ? commitTo(local, full, v) : [];
          // The tag is stripped and never forwarded; the text itself was not encrypted.
          if (parsed.text.trim() && (ports.mayAutoReply?.(local, full) ?? true)) {
            replies.push(otrMessage(`${local}/${resource}`, full, '[gateway] Your message was not delivered: it was not encrypted. A private (OTR) conversation is being started; please send it again.'));
          }
          count('plaintext_tagged');
          return { ok: true, body: null, sender, replies };
        }
      }
    } catch (e) {
      if (!(e instanceof OtrParseError)) throw e;
      log.info({ local, peer: full, problem: e.message }, 'malformed OTR message');
      count('failed', 'malformed');
      return { ok: false, reason: 'malformed', replies: [] };
    }
  }

  async function encrypt(local: string, peer: string, body: string): Promise<Encrypted> {
    const full = lastFull(local, peer);
    const result = full
      ? store.transaction(() => {
          const c = loadCtx(local, full);
          if (!c?.session) return null;
          const trust = ports.trust.get(peer, 'otr', c.theirFingerprint!)?.trust ?? 'untrusted';
          if (!isUsable(trust)) throw new GatewayError('no_trusted_devices', `The OTR key of ${peer} is not trusted.`);
          const m = encryptData(c.session, header(local, c), Buffer.from(body, 'utf8'));
          c.lastSent = now();
          saveCtx(local, full, c);
          return fragmentText(encodedText(encodeMessage(m)), m.h, maxSize);
        })
      : null;
    if (!result) throw new GatewayError('no_otr_session', `Waiting for an OTR session with ${peer}.`);
    ports.metrics.messages.inc({ protocol: 'otr', direction: 'out', result: 'ok' });
    const [first, ...rest] = result;
    return { children: otrChildren(first!), to: full!, ...(rest.length ? { more: rest.map((t) => ({ children: otrChildren(t), to: full! })) } : {}) };
  }

  async function reachability(local: string, peer: string): Promise<Reachability> {
    const full = lastFull(local, peer);
    if (full && loadCtx(local, full)?.session) return 'ready';
    const contact = ports.contacts.get(peer);
    if (contact?.preferredProtocol === 'otr' || contact?.otr || ports.contacts.lastProtocol(local, peer) === 'otr') return 'needs-session';
    return 'no';
  }

  async function startSession(local: string, peer: string): Promise<Element[]> {
    const key = `${local}\0${peer}`;
    const last = queried.get(key);
    if (last !== undefined && now() - last < queryIntervalMs) return [];
    bounded(queried).set(key, now());
    // The contact's last known full JID (OTR is bound to one resource), else the bare JID.
    const to = lastFull(local, peer) ?? peer;
    log.info({ local, peer: to }, 'OTR query sent');
    return [otrMessage(`${local}/${resource}`, to, QUERY_TEXT)];
  }

  return {
    id: 'otr',
    features: [],
    recognizes: (stanza) => {
      const body = stanza.getChildText('body');
      return body !== null && looksLikeOtr(body);
    },
    ensureIdentity: async (local) => void (await dsaKey(local)),
    identity: async (local): Promise<IdentityFacts> => ({ otr: { fingerprint: fingerprint(await dsaKey(local)) } }),
    decrypt,
    encrypt,
    reachability,
    startSession,
    hasSession: (local, full) => !!loadCtx(local, full)?.session,
    onUnavailable: (local, from) => {
      // XEP-0364: the session is bound to that resource; it ends when the resource goes offline.
      if (!from.includes('/')) return;
      store.transaction(() => {
        const c = loadCtx(local, from);
        if (!c?.session) return;
        c.session = null;
        c.ake = idleAke();
        saveCtx(local, from, c);
        log.info({ local, peer: from }, 'OTR session ended: the contact went offline');
      });
    },
  } satisfies OtrEngine;
}
