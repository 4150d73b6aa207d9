// OMEMO 2 (urn:xmpp:omemo:2) stanza <-> bytes: the <encrypted> element, bundles and device lists.
// Pure functions; parsers return null on anything they do not accept instead of throwing.
//   <encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='a@b'><key rid='2' kex='true'>…</key></keys></header>
//     <payload>…</payload></encrypted>
//   <devices xmlns='urn:xmpp:omemo:2'><device id='1' label='…' labelsig='…'/></devices>  (node :devices, item current)
//   <bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>…</spk><spks>…</spks><ik>…</ik>
//     <prekeys><pk id='1'>…</pk>…</prekeys></bundle>                          (node :bundles, item id = device id)
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { NS_EME, NS_HINTS } from '../omemo/constants.js';
import type { DeviceLabel } from '../omemo/device-cache.js';
import { deviceIdsIn, keyElement, parseId, protocolMessage } from '../omemo/wire.js';
import { ITEM_CURRENT, NS_OMEMO2 } from './constants.js';
import type { PeerBundle } from './session.js';

export interface KeyElement {
  rid: number;
  kex: boolean;
  data: Buffer;
}

export interface EncryptedElement {
  sid: number;
  /** Keys per recipient bare JID. */
  keys: Map<string, KeyElement[]>;
  /** null for empty messages. */
  payload: Buffer | null;
}

const text = (el: Element | undefined): string => (el ? el.getText().trim() : '');
const b64 = (s: string): Buffer => Buffer.from(s, 'base64');

export const findEncrypted = (stanza: Element): Element | undefined => stanza.getChild('encrypted', NS_OMEMO2);

export function parseEncrypted(el: Element): EncryptedElement | null {
  const header = el.getChild('header');
  const sid = parseId(header?.attrs.sid);
  if (!header || sid === null) return null;
  const keys = new Map<string, KeyElement[]>();
  for (const group of header.getChildren('keys')) {
    const jid = typeof group.attrs.jid === 'string' ? group.attrs.jid.toLowerCase() : '';
    if (!jid) continue;
    const list = keys.get(jid) ?? [];
    for (const k of group.getChildren('key')) {
      const rid = parseId(k.attrs.rid);
      const data = b64(text(k));
      if (rid === null || data.length === 0) continue;
      const kex = String(k.attrs.kex ?? '').toLowerCase();
      list.push({ rid, kex: kex === 'true' || kex === '1', data });
    }
    keys.set(jid, list);
  }
  const payloadEl = el.getChild('payload');
  const payload = payloadEl ? b64(text(payloadEl)) : null;
  if (payload !== null && payload.length === 0) return null;
  return { sid, keys, payload };
}

/**
 * What decrypting needs of an <encrypted> element, as parseEncrypted would give it: the sender's
 * device, whether `jid` (lower case) has a <keys> group at all, the first usable key for device
 * `rid` in it, and the payload. Only that key is decoded (not every recipient's). Null when
 * parseEncrypted would return null.
 */
export function parseEncryptedFor(el: Element, jid: string, rid: number): { sid: number; listed: boolean; key: KeyElement | undefined; payload: Buffer | null } | null {
  const header = el.getChild('header');
  const sid = parseId(header?.attrs.sid);
  if (!header || sid === null) return null;
  let listed = false;
  let key: KeyElement | undefined;
  for (const group of header.children) {
    if (typeof group === 'string' || group.getName() !== 'keys') continue;
    if (typeof group.attrs.jid !== 'string' || group.attrs.jid.toLowerCase() !== jid) continue;
    listed = true;
    if (key) continue;
    for (const k of group.children) {
      if (typeof k === 'string' || k.getName() !== 'key' || parseId(k.attrs.rid) !== rid) continue;
      const data = b64(text(k));
      if (data.length === 0) continue;
      const kex = String(k.attrs.kex ?? '').toLowerCase();
      key = { rid, kex: kex === 'true' || kex === '1', data };
      break;
    }
  }
  const payloadEl = el.getChild('payload');
  const payload = payloadEl ? b64(text(payloadEl)) : null;
  if (payload !== null && payload.length === 0) return null;
  return { sid, listed, key, payload };
}

export function buildEncrypted(e: EncryptedElement): Element {
  return xml(
    'encrypted',
    { xmlns: NS_OMEMO2 },
    xml(
      'header',
      { sid: String(e.sid) },
      ...[...e.keys].map(([jid, keys]) =>
        xml('keys', { jid }, ...keys.map((k) => xml('key', k.kex ? { rid: String(k.rid), kex: 'true' } : { rid: String(k.rid) }, k.data.toString('base64')))),
      ),
    ),
    e.payload ? xml('payload', {}, e.payload.toString('base64')) : null,
  );
}

/** The children of an outgoing chat message: <encrypted>, EME, store hint, fallback body. */
export function messageChildren(encrypted: Element, fallbackBody: string): Element[] {
  return [encrypted, xml('encryption', { xmlns: NS_EME, namespace: NS_OMEMO2, name: 'OMEMO 2' }), xml('store', { xmlns: NS_HINTS }), xml('body', {}, fallbackBody)];
}

// The bodiless protocol message (key exchange completion, heartbeat) is built as legacy builds it.
export { protocolMessage };

// ---- device list ----

/** XEP-0384 advises labels shorter than 53 code points; longer ones are not shown. */
export const MAX_LABEL_CODE_POINTS = 53;

/**
 * `labels`: device id -> label text, published without `labelsig` (the XEP-0384 0.8 form): Debian's
 * python-twomemo 1.0.3 validates device lists against a schema that refuses any other attribute, so a
 * signed label would make the whole list unreadable to it (and to slixmpp-omemo).
 */
export function buildDeviceList(ids: readonly number[], labels?: ReadonlyMap<number, string>): Element {
  return xml('devices', { xmlns: NS_OMEMO2 }, ...ids.map((id) => {
    const label = labels?.get(id);
    return xml('device', label ? { id: String(id), label } : { id: String(id) });
  }));
}

export function parseDeviceList(items: readonly Element[]): number[] {
  return deviceIdsIn(items, 'devices', NS_OMEMO2);
}

/**
 * The labels in a device list (from the same item deviceIdsIn reads), not verified here: a label with
 * a `labelsig` may be shown only when it verifies against the device's identity key, one without is
 * the contact's word. Labels longer than advised, and unreadable signatures, are left out.
 */
export function parseDeviceLabels(items: readonly Element[]): Map<number, DeviceLabel> {
  const item = items.find((i) => i.attrs.id === ITEM_CURRENT) ?? items[0];
  const list = item?.getChild('devices', NS_OMEMO2);
  const out = new Map<number, DeviceLabel>();
  for (const d of list?.getChildren('device') ?? []) {
    const id = parseId(d.attrs.id);
    const label = d.attrs.label;
    const sigText = d.attrs.labelsig;
    if (id === null || typeof label !== 'string' || label.length === 0) continue;
    if ([...label].length >= MAX_LABEL_CODE_POINTS) continue;
    let sig: Buffer | null = null;
    if (sigText !== undefined) {
      sig = typeof sigText === 'string' ? b64(sigText) : Buffer.alloc(0);
      if (sig.length !== 64) continue;
    }
    out.set(id, { label, sig });
  }
  return out;
}

// ---- bundle ----

const preKeyElement = (p: { id: number; pub: Buffer }): Element => keyElement('pk', 'id', p.id, p.pub);

export function buildBundle(b: PeerBundle): Element {
  return xml(
    'bundle',
    { xmlns: NS_OMEMO2 },
    xml('spk', { id: String(b.spk.id) }, b.spk.pub.toString('base64')),
    xml('spks', {}, b.spk.sig.toString('base64')),
    xml('ik', {}, b.ik.toString('base64')),
    xml('prekeys', {}, ...b.preKeys.map(preKeyElement)),
  );
}

/** A bundle from the bundles node's items (the one with id = device id, else the first); null if unusable. */
export function parseBundle(items: readonly Element[], deviceId?: number): PeerBundle | null {
  const item = (deviceId !== undefined ? items.find((i) => i.attrs.id === String(deviceId)) : undefined) ?? items[0];
  const el = item?.getChild('bundle', NS_OMEMO2);
  if (!el) return null;
  const spkEl = el.getChild('spk');
  const spkId = parseId(spkEl?.attrs.id, 0xffffffff, 0);
  const spk = b64(text(spkEl));
  const sig = b64(text(el.getChild('spks')));
  const ik = b64(text(el.getChild('ik')));
  // ik must be an Ed25519 point: checked by the signature verification before any use.
  if (spkId === null || spk.length !== 32 || sig.length !== 64 || ik.length !== 32) return null;
  const preKeys: PeerBundle['preKeys'] = [];
  for (const p of el.getChild('prekeys')?.getChildren('pk') ?? []) {
    const id = parseId(p.attrs.id, 0xffffffff, 0);
    const pub = b64(text(p));
    if (id !== null && pub.length === 32) preKeys.push({ id, pub });
  }
  if (preKeys.length === 0) return null;
  return { ik, spk: { id: spkId, pub: spk, sig }, preKeys };
}
