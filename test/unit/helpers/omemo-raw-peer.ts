// A bare libsignal client outside our engine (its own in-memory store, no caching, no engine code
// on the ratchet path), for interop cases the engine never produces itself: 16-byte IVs, the old
// 16-byte key format, chosen prekeys, 32-byte key transports.
import { createCipheriv, randomBytes } from 'node:crypto';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import {
  KeyHelper,
  SessionBuilder,
  SessionCipher,
  SignalProtocolAddress,
} from '@privacyresearch/libsignal-protocol-typescript';
import { MemStore } from '../../harness/libsignal-memstore.js';
import { NODE_DEVICELIST, bundleNode } from '../../../bridges/omemo/constants.js';
import { buildBundle, buildEncrypted, parseBundle, parseEncrypted, type Bundle } from '../../../bridges/omemo/wire.js';
import { reparse, type FakeNetwork } from './omemo-net.js';

export interface RawSendOptions {
  ivLength?: 12 | 16;
  /** 'tag-in-key' (current: key||tag in <key>), 'tag-in-payload' (very old senders). */
  format?: 'tag-in-key' | 'tag-in-payload';
  /** Key transport: no payload; the key material has this size. */
  keyTransport?: 16 | 32;
}

export class RawPeer {
  readonly jid: string;
  readonly deviceId: number;
  readonly store: MemStore;
  readonly #bundle: Bundle;

  private constructor(jid: string, deviceId: number, store: MemStore, bundle: Bundle) {
    this.jid = jid;
    this.deviceId = deviceId;
    this.store = store;
    this.#bundle = bundle;
  }

  static async create(jid: string, deviceId: number): Promise<RawPeer> {
    const ik = await KeyHelper.generateIdentityKeyPair();
    const store = new MemStore(ik, KeyHelper.generateRegistrationId());
    const spk = await KeyHelper.generateSignedPreKey(ik, 7);
    await store.storeSignedPreKey(7, spk.keyPair);
    const preKeys: Bundle['preKeys'] = [];
    for (let i = 1; i <= 25; i++) {
      const pk = await KeyHelper.generatePreKey(i);
      await store.storePreKey(i, pk.keyPair);
      preKeys.push({ id: i, publicKey: Buffer.from(pk.keyPair.pubKey) });
    }
    return new RawPeer(jid, deviceId, store, {
      identityKey: Buffer.from(ik.pubKey),
      signedPreKey: { id: 7, publicKey: Buffer.from(spk.keyPair.pubKey), signature: Buffer.from(spk.signature) },
      preKeys,
    });
  }

  /** Publishes this device in `jid`'s device list (alongside others) and its bundle. */
  publish(net: FakeNetwork, name = `raw:${this.jid}:${this.deviceId}`): void {
    const port = net.port(name);
    port.publish(this.jid, NODE_DEVICELIST, 'current', xml('list', { xmlns: 'eu.siacs.conversations.axolotl' }, xml('device', { id: String(this.deviceId) })));
    port.publish(this.jid, bundleNode(this.deviceId), 'current', buildBundle(this.#bundle));
  }

  #address(to: string, deviceId: number): SignalProtocolAddress {
    return new SignalProtocolAddress(to, deviceId);
  }

  /** Builds a session with `to`'s device from its published bundle, using prekey `preKeyId` if given. */
  async startSession(net: FakeNetwork, to: string, deviceId: number, preKeyId?: number): Promise<void> {
    const items = net.items(to, bundleNode(deviceId));
    const b = items && parseBundle(items);
    if (!b) throw new Error('no bundle');
    const pk = preKeyId === undefined ? b.preKeys[0]! : b.preKeys.find((p) => p.id === preKeyId);
    if (!pk) throw new Error(`prekey ${preKeyId} not in bundle`);
    const ab = (x: Buffer) => new Uint8Array(x).buffer;
    await new SessionBuilder(this.store, this.#address(to, deviceId)).processPreKey({
      identityKey: ab(b.identityKey),
      registrationId: 0,
      signedPreKey: { keyId: b.signedPreKey.id, publicKey: ab(b.signedPreKey.publicKey), signature: ab(b.signedPreKey.signature) },
      preKey: { keyId: pk.id, publicKey: ab(pk.publicKey) },
    });
  }

  /** An OMEMO <message> to `to`'s device, built by hand with the given wire choices. */
  async message(to: string, deviceId: number, body: string, o: RawSendOptions = {}): Promise<Element> {
    const iv = randomBytes(o.ivLength ?? 12);
    let keyMaterial: Buffer;
    let payload: Buffer | null = null;
    if (o.keyTransport) {
      keyMaterial = randomBytes(o.keyTransport);
    } else {
      const key = randomBytes(16);
      const c = createCipheriv('aes-128-gcm', key, iv);
      const ct = Buffer.concat([c.update(Buffer.from(body, 'utf8')), c.final()]);
      const tag = c.getAuthTag();
      if ((o.format ?? 'tag-in-key') === 'tag-in-key') {
        keyMaterial = Buffer.concat([key, tag]);
        payload = ct;
      } else {
        keyMaterial = key;
        payload = Buffer.concat([ct, tag]);
      }
    }
    const res = await new SessionCipher(this.store, this.#address(to, deviceId)).encrypt(new Uint8Array(keyMaterial).buffer);
    const data = Buffer.from(res.body!, 'latin1');
    const enc = buildEncrypted({ sid: this.deviceId, keys: [{ rid: deviceId, prekey: res.type === 3, data }], iv, payload });
    return reparse(xml('message', { from: `${this.jid}/raw`, to, type: 'chat' }, enc));
  }

  /** Decrypts the key of a message addressed to this device (to complete sessions); returns the key material. */
  async receive(stanza: Element): Promise<Buffer> {
    const enc = parseEncrypted(stanza.getChild('encrypted', 'eu.siacs.conversations.axolotl')!)!;
    const key = enc.keys.find((k) => k.rid === this.deviceId)!;
    const from = String(stanza.attrs.from).split('/')[0]!;
    const c = new SessionCipher(this.store, this.#address(from, enc.sid));
    const data = new Uint8Array(key.data).buffer;
    const out = key.prekey ? await c.decryptPreKeyWhisperMessage(data, 'binary') : await c.decryptWhisperMessage(data, 'binary');
    return Buffer.from(out);
  }
}
