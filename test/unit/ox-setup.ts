// Shared set-up for the OX engine's unit tests: engine ports over an in-memory keystore with a pubsub
// port that serves the hosted JIDs' nodes from memory and contacts' PEP nodes from a map the test
// fills, and an OX peer on openpgp.js that publishes its key and writes <signcrypt>/<sign>/<crypt>.
import { Writable } from 'node:stream';
import * as openpgp from 'openpgp';
import { createProtocolStore } from '../../keystore/protocol-store.js';
import { TrustStore } from '../../keystore/trust-store.js';
import { ContactStore } from '../../keystore/contact-store.js';
import { ReplayStore } from '../../keystore/replay-store.js';
import { Metrics } from '../../http/metrics.js';
import { createLogger } from '../../log.js';
import { parseXml, xml, type Element } from '../../component/xml.js';
import type { EnginePorts, PubsubPort } from '../../bridges/engine.js';
import { ReplayGuard } from '../../bridges/pgp/replay-guard.js';
import { createOxEngine, type OxEngine, type OxEngineOptions } from '../../bridges/ox/engine.js';
import { dateTime, keyNode, NODE_METADATA, NS_OX } from '../../bridges/ox/wire.js';
import type { TrustPolicy } from '../../config.js';
import { openTestKeystore } from './pgp-setup.js';

export { BOT, PROXY, GW, counterValue } from './pgp-setup.js';

export interface OxRig {
  ports: EnginePorts;
  engine: OxEngine;
  replay: ReplayGuard;
  metrics: Metrics;
  logs: string[];
  clock: { offsetMs: number };
  /** Contacts' PEP nodes: contact -> node -> items (newest first). */
  remote: Map<string, Map<string, Element[]>>;
  /** Items the gateway published: `${owner}\0${node}` -> items, and the order of publishes. */
  local: Map<string, Array<{ id: string; payload: Element }>>;
  publishes: string[];
  fetches: string[];
  plaintext: { allowed: boolean };
}

export function makeOxRig(o: { trust?: TrustPolicy; skewMs?: number } = {}): OxRig {
  const ks = openTestKeystore();
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString('utf8'));
      cb();
    },
  });
  const remote = new Map<string, Map<string, Element[]>>();
  const local = new Map<string, Array<{ id: string; payload: Element }>>();
  const publishes: string[] = [];
  const fetches: string[] = [];
  const pubsub: PubsubPort = {
    publish: (owner, node, id, payload) => {
      publishes.push(node);
      local.set(`${owner}\0${node}`, [{ id, payload }]);
    },
    retract: () => undefined,
    localItems: (owner, node) => local.get(`${owner}\0${node}`) ?? [],
    fetch: async (_from, to, node) => {
      fetches.push(`${to} ${node}`);
      const items = remote.get(to)?.get(node);
      return items ? items.map((i) => parseXml(i.toString())) : null;
    },
  };
  const metrics = new Metrics({ processMetrics: false });
  const clock = { offsetMs: 0 };
  const now = () => Date.now() + clock.offsetMs;
  const ports: EnginePorts = {
    store: createProtocolStore(ks, 'ox'),
    trust: new TrustStore(ks, o.trust ?? 'btbv'),
    contacts: new ContactStore(ks),
    keystore: ks,
    pubsub,
    metrics,
    log: createLogger('debug', sink),
    now,
    resource: 'gw',
  };
  const replay = new ReplayGuard(new ReplayStore(ks), 'pgp', 30, now);
  const plaintext = { allowed: false };
  const opts: OxEngineOptions = { replay, maxClockSkewMs: o.skewMs ?? 600_000, plaintextAllowed: () => plaintext.allowed, contactKeys: { minRefreshMs: 0 } };
  return { ports, engine: createOxEngine(ports, opts), replay, metrics, logs, clock, remote, local, publishes, fetches, plaintext };
}

export interface ContentOptions {
  kind?: 'signcrypt' | 'sign' | 'crypt';
  to?: string[];
  time?: number;
  body?: string;
}

/** An OX client on openpgp.js (the tests' peer; the e2e tests use GnuPG). */
export class OxPeer {
  readonly jid: string;
  readonly key: openpgp.PrivateKey;

  private constructor(jid: string, key: openpgp.PrivateKey) {
    this.jid = jid;
    this.key = key;
  }

  static async create(jid: string, uid = `xmpp:${jid}`): Promise<OxPeer> {
    const { privateKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: uid }], format: 'object' });
    return new OxPeer(jid, privateKey);
  }

  get fingerprint(): string {
    return this.key.getFingerprint().toUpperCase();
  }

  /** Publishes (replacing) the metadata node listing `keys` (default: our key) and their key nodes. */
  publish(rig: OxRig, keys: openpgp.PrivateKey[] = [this.key]): void {
    const nodes = rig.remote.get(this.jid) ?? new Map<string, Element[]>();
    rig.remote.set(this.jid, nodes);
    const date = dateTime(Date.now());
    for (const k of keys) {
      const data = Buffer.from(k.toPublic().write()).toString('base64');
      nodes.set(keyNode(k.getFingerprint().toUpperCase()), [xml('item', { id: date }, xml('pubkey', { xmlns: NS_OX }, xml('data', {}, data)))]);
    }
    nodes.set(NODE_METADATA, [
      xml('item', { id: 'current' }, xml('public-keys-list', { xmlns: NS_OX }, ...keys.map((k) => xml('pubkey-metadata', { 'v4-fingerprint': k.getFingerprint().toUpperCase(), date })))),
    ]);
  }

  content(local: string, o: ContentOptions = {}): string {
    const kind = o.kind ?? 'signcrypt';
    return xml(
      kind,
      { xmlns: NS_OX },
      ...(o.to ?? [local]).map((jid) => xml('to', { jid })),
      xml('time', { stamp: dateTime(o.time ?? Date.now()) }),
      xml('rpad', {}, 'abc'),
      xml('payload', {}, xml('body', { xmlns: 'jabber:client' }, o.body ?? 'hello')),
    ).toString();
  }

  /** The base64 <openpgp> text for `local`, encrypted to `recipient` (the hosted JID's public key). */
  async message(local: string, recipient: openpgp.PublicKey | null, o: ContentOptions & { signer?: openpgp.PrivateKey | null; tamper?: boolean } = {}): Promise<string> {
    const kind = o.kind ?? 'signcrypt';
    const text = this.content(local, o);
    const message = await openpgp.createMessage({ binary: new TextEncoder().encode(text), format: 'binary' });
    const signer = o.signer === undefined ? (kind === 'crypt' ? null : this.key) : o.signer;
    let out: Uint8Array;
    if (o.tamper) {
      // A valid signature over other bytes: sign, then change the literal data, then encrypt.
      const signed = await openpgp.sign({ message, signingKeys: signer!, format: 'object' });
      const lit = signed.packets.findPacket(openpgp.enums.packet.literalData) as unknown as { setBytes(b: Uint8Array, f: number): void };
      lit.setBytes(new TextEncoder().encode(text.replace('abc', 'abd')), openpgp.enums.literal.binary);
      out = (await openpgp.encrypt({ message: signed, encryptionKeys: [recipient!], format: 'binary' })) as Uint8Array;
    } else if (recipient === null) {
      out = (await openpgp.sign({ message, signingKeys: signer!, format: 'binary' })) as Uint8Array;
    } else {
      out = (await openpgp.encrypt({ message, encryptionKeys: [recipient, this.key.toPublic()], ...(signer ? { signingKeys: signer } : {}), format: 'binary' })) as Uint8Array;
    }
    return Buffer.from(out).toString('base64');
  }

  stanza(local: string, base64: string, extra: Element[] = []): Element {
    return parseXml(xml('message', { from: `${this.jid}/res`, to: local, type: 'chat', id: `m${Math.random().toString(36).slice(2)}` }, xml('openpgp', { xmlns: NS_OX }, base64), ...extra).toString());
  }

  /** Decrypts and verifies an outgoing <message> from the gateway; returns the content text and signer. */
  async read(stanza: Element, signerKey: openpgp.PublicKey): Promise<{ text: string; verified: boolean; recipients: string[] }> {
    const b64 = stanza.getChildText('openpgp', NS_OX)!;
    const message = await openpgp.readMessage({ binaryMessage: Buffer.from(b64, 'base64') });
    const recipients = message.getEncryptionKeyIDs().map((k) => k.toHex().toUpperCase());
    const r = await openpgp.decrypt({ message, decryptionKeys: this.key, verificationKeys: signerKey, format: 'binary', expectSigned: true });
    return { text: new TextDecoder().decode(r.data as Uint8Array), verified: true, recipients };
  }
}
