// XEP-0384 v0.3.0 stanza <-> bytes: the <encrypted> element, bundles and device lists. Pure
// functions; every parser returns null on anything it does not accept instead of throwing.
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { ITEM_CURRENT, MAX_PEER_DEVICE_ID, NS_EME, NS_HINTS, NS_OMEMO } from './constants.js';

export interface KeyElement {
  rid: number;
  /** prekey='true' (or '1'): the content is a PreKeyWhisperMessage. */
  prekey: boolean;
  data: Buffer;
}

export interface EncryptedElement {
  sid: number;
  keys: KeyElement[];
  iv: Buffer;
  /** null for key-transport (empty) messages. */
  payload: Buffer | null;
}

export interface Bundle {
  /** 33 bytes, 0x05-prefixed Curve25519. */
  identityKey: Buffer;
  signedPreKey: { id: number; publicKey: Buffer; signature: Buffer };
  preKeys: Array<{ id: number; publicKey: Buffer }>;
}

const DECIMAL = /^[0-9]{1,10}$/;

/** A device or key id attribute: a decimal integer in min .. max (default 1 .. 2^32-1), else null. */
export function parseId(v: unknown, max = MAX_PEER_DEVICE_ID, min = 1): number | null {
  if (typeof v !== 'string' && typeof v !== 'number') return null;
  const s = String(v).trim();
  if (!DECIMAL.test(s)) return null;
  const n = Number(s);
  return n >= min && n <= max ? n : null;
}

const text = (el: Element | undefined): string => (el ? el.getText().trim() : '');
const b64 = (s: string): Buffer => Buffer.from(s, 'base64');

/** A Curve25519 public key from a bundle: 33 bytes with the 0x05 type byte (a bare 32-byte key is prefixed). */
export function parsePublicKey(s: string): Buffer | null {
  const k = b64(s);
  if (k.length === 33 && k[0] === 5) return k;
  if (k.length === 32) return Buffer.concat([Buffer.of(5), k]);
  return null;
}

// ---- <encrypted> ----

export function findEncrypted(stanza: Element): Element | undefined {
  return stanza.getChild('encrypted', NS_OMEMO);
}

/** An <encrypted> element's header and payload, its <key> elements not read yet (keyFor reads the one a device needs). */
export interface EncryptedHeader extends Omit<EncryptedElement, 'keys'> {
  keyElements: Element[];
}

export function parseEncryptedHeader(el: Element): EncryptedHeader | null {
  const header = el.getChild('header');
  if (!header) return null;
  const sid = parseId(header.attrs.sid);
  if (sid === null) return null;
  const iv = b64(text(header.getChild('iv')));
  if (iv.length !== 12 && iv.length !== 16) return null;
  const payloadEl = el.getChild('payload');
  const payload = payloadEl ? b64(text(payloadEl)) : null;
  if (payload !== null && payload.length === 0) return null;
  return { sid, iv, payload, keyElements: header.getChildren('key') };
}

/** A <key> element as parseEncrypted reads it; null if it is not usable (bad rid, no data). */
function readKey(k: Element, onlyRid?: number): KeyElement | null {
  const rid = parseId(k.attrs.rid);
  if (rid === null || (onlyRid !== undefined && rid !== onlyRid)) return null;
  const data = b64(text(k));
  if (data.length === 0) return null;
  const p = String(k.attrs.prekey ?? '').toLowerCase();
  return { rid, prekey: p === 'true' || p === '1', data };
}

/** The first usable key for device `rid` (what parseEncrypted(el).keys.find(k => k.rid === rid) gives), reading no other. */
export function keyFor(h: EncryptedHeader, rid: number): KeyElement | undefined {
  for (const k of h.keyElements) {
    const key = readKey(k, rid);
    if (key) return key;
  }
  return undefined;
}

export function parseEncrypted(el: Element): EncryptedElement | null {
  const h = parseEncryptedHeader(el);
  if (!h) return null;
  const keys: KeyElement[] = [];
  for (const k of h.keyElements) {
    const key = readKey(k);
    if (key) keys.push(key);
  }
  return { sid: h.sid, keys, iv: h.iv, payload: h.payload };
}

export function buildEncrypted(e: EncryptedElement): Element {
  return xml(
    'encrypted',
    { xmlns: NS_OMEMO },
    xml(
      'header',
      { sid: String(e.sid) },
      ...e.keys.map((k) => xml('key', k.prekey ? { rid: String(k.rid), prekey: 'true' } : { rid: String(k.rid) }, k.data.toString('base64'))),
      xml('iv', {}, e.iv.toString('base64')),
    ),
    e.payload ? xml('payload', {}, e.payload.toString('base64')) : null,
  );
}

/** The children of an outgoing chat message: <encrypted>, EME, store hint, fallback body. */
export function messageChildren(encrypted: Element, fallbackBody: string): Element[] {
  return [
    encrypted,
    xml('encryption', { xmlns: NS_EME, namespace: NS_OMEMO, name: 'OMEMO' }),
    xml('store', { xmlns: NS_HINTS }),
    xml('body', {}, fallbackBody),
  ];
}

/** A whole protocol-only message (key transport, heartbeat): store hint, never a body. */
export function protocolMessage(from: string, to: string, id: string, encrypted: Element): Element {
  return xml('message', { from, to, type: 'chat', id }, encrypted, xml('store', { xmlns: NS_HINTS }));
}

// ---- device list ----

export function buildDeviceList(ids: readonly number[]): Element {
  return xml('list', { xmlns: NS_OMEMO }, ...ids.map((id) => xml('device', { id: String(id) })));
}

/** Device ids from devicelist <item>s (the `current` item, else the first); invalid ids are skipped. */
export function parseDeviceList(items: readonly Element[]): number[] {
  return deviceIdsIn(items, 'list', NS_OMEMO);
}

/**
 * Device ids from device-list <item>s whose payload is <`name` xmlns=`ns`> (both OMEMO versions:
 * legacy `list`, OMEMO 2 `devices`), from the `current` item, else the first; invalid ids skipped.
 */
export function deviceIdsIn(items: readonly Element[], name: string, ns: string): number[] {
  const item = items.find((i) => i.attrs.id === ITEM_CURRENT) ?? items[0];
  const list = item?.getChild(name, ns);
  if (!list) return [];
  const ids = new Set<number>();
  for (const d of list.getChildren('device')) {
    const id = parseId(d.attrs.id);
    if (id !== null) ids.add(id);
  }
  return [...ids];
}

// ---- bundle ----

// A bundle is republished after every consumed prekey with all its prekeys but one unchanged: their
// elements are made once per key (the Buffer of a kept bundle entry) instead of ~100 each time.
// Shared by both OMEMO versions (element and attribute names differ).
const keyElements = new WeakMap<Buffer, Element>();
export function keyElement(name: string, idAttr: string, id: number, pub: Buffer): Element {
  const hit = keyElements.get(pub);
  if (hit && hit.name === name && hit.attrs[idAttr] === String(id)) return hit;
  const el = xml(name, { [idAttr]: String(id) }, pub.toString('base64'));
  keyElements.set(pub, el);
  return el;
}
const preKeyElement = (p: { id: number; publicKey: Buffer }): Element => keyElement('preKeyPublic', 'preKeyId', p.id, p.publicKey);

export function buildBundle(b: Bundle): Element {
  return xml(
    'bundle',
    { xmlns: NS_OMEMO },
    xml('signedPreKeyPublic', { signedPreKeyId: String(b.signedPreKey.id) }, b.signedPreKey.publicKey.toString('base64')),
    xml('signedPreKeySignature', {}, b.signedPreKey.signature.toString('base64')),
    xml('identityKey', {}, b.identityKey.toString('base64')),
    xml('prekeys', {}, ...b.preKeys.map(preKeyElement)),
  );
}

/** A bundle from bundle-node <item>s, or null if it is unusable (missing ids, wrong key sizes, no prekeys). */
export function parseBundle(items: readonly Element[]): Bundle | null {
  const item = items.find((i) => i.attrs.id === ITEM_CURRENT) ?? items[0];
  const el = item?.getChild('bundle', NS_OMEMO);
  if (!el) return null;
  const spkEl = el.getChild('signedPreKeyPublic');
  // Signed prekey id 0 occurs in the wild; one-time prekey id 0 cannot be sent (0 means "none" in libsignal).
  const spkId = parseId(spkEl?.attrs.signedPreKeyId, 0xffffffff, 0);
  const spk = spkEl ? parsePublicKey(text(spkEl)) : null;
  const signature = b64(text(el.getChild('signedPreKeySignature')));
  const identityKey = parsePublicKey(text(el.getChild('identityKey')));
  if (spkId === null || !spk || !identityKey || signature.length !== 64) return null;
  const preKeys: Bundle['preKeys'] = [];
  for (const p of el.getChild('prekeys')?.getChildren('preKeyPublic') ?? []) {
    const id = parseId(p.attrs.preKeyId, 0xffffffff);
    const publicKey = parsePublicKey(text(p));
    if (id !== null && publicKey) preKeys.push({ id, publicKey });
  }
  if (preKeys.length === 0) return null;
  return { identityKey, signedPreKey: { id: spkId, publicKey: spk, signature }, preKeys };
}
