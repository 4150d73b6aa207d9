// OMEMO 2 (urn:xmpp:omemo:2) stanza <-> bytes: the <encrypted> element, bundles and device lists.
// Pure functions; parsers return null on anything they do not accept instead of throwing.
//   <encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='a@b'><key rid='2' kex='true'>…</key></keys></header>
//     <payload>…</payload></encrypted>
//   <devices xmlns='urn:xmpp:omemo:2'><device id='1'/></devices>              (node :devices, item current)
//   <bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>…</spk><spks>…</spks><ik>…</ik>
//     <prekeys><pk id='1'>…</pk>…</prekeys></bundle>                          (node :bundles, item id = device id)
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { NS_EME, NS_HINTS } from '../omemo/constants.js';
import { deviceIdsIn, keyElement, parseId, protocolMessage } from '../omemo/wire.js';
import { NS_OMEMO2 } from './constants.js';
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

export function buildDeviceList(ids: readonly number[]): Element {
  return xml('devices', { xmlns: NS_OMEMO2 }, ...ids.map((id) => xml('device', { id: String(id) })));
}

export function parseDeviceList(items: readonly Element[]): number[] {
  return deviceIdsIn(items, 'devices', NS_OMEMO2);
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
