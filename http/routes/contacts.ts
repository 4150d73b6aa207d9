// Admin calls about remote contacts: their devices and keys with trust, setting trust, a preferred
// protocol, and (XEP-0027) their registered OpenPGP key.
import { Router } from 'express';
import { PROTOCOLS, type ProtocolName } from '../../config.js';
import { GatewayError } from '../../errors.js';
import type { Addressing } from '../../component/addressing.js';
import { bare } from '../../component/jid.js';
import type { ContactStore } from '../../keystore/contact-store.js';
import { TRUST_LEVELS, type DeviceRecord, type TrustLevel, type TrustStore } from '../../keystore/trust-store.js';
import { requireAdmin } from '../auth.js';
import { jsonObject, optionalEnum, requiredString } from '../validate.js';

export interface PgpKeyRegistry {
  register(contact: string, armored: string): Promise<{ fingerprint: string }>;
  remove(contact: string): Promise<boolean>;
}

/** One protocol's outcome of re-reading a contact's published devices and keys. */
export interface RefreshOutcome {
  protocol: ProtocolName;
  ok: boolean;
  error?: string;
}

export interface ContactsDeps {
  addressing: Addressing;
  /** The hosted JID that reads a contact's devices when the request names none (the first bot). */
  defaultReader?: string;
  /** Re-reads `contact`'s device lists, bundles and keys as hosted JID `local`, per protocol. */
  refresh?: (local: string, contact: string) => Promise<RefreshOutcome[]>;
  /** A device's label (OMEMO 2): verified when signed by the device's key, else the contact's word. */
  deviceLabel?: (contact: string, d: DeviceRecord) => { label: string; verified: boolean } | null;
  trust: TrustStore;
  contacts: ContactStore;
  pgp?: PgpKeyRegistry;
}

function deviceView(deps: ContactsDeps, contact: string, d: DeviceRecord) {
  const label = deps.deviceLabel?.(contact, d) ?? null;
  return {
    protocol: d.protocol,
    device_id: /^\d+$/.test(d.deviceId) && (d.protocol === 'omemo' || d.protocol === 'omemo2') ? Number(d.deviceId) : d.deviceId,
    fingerprint: d.fingerprint,
    ...(label !== null && { label: label.label, label_verified: label.verified }),
    trust: d.trust,
    active: d.active,
    first_seen: new Date(d.firstSeen).toISOString(),
    last_seen: new Date(d.lastSeen).toISOString(),
  };
}

function contactJid(d: ContactsDeps, raw: string): string {
  let jid: string;
  try {
    jid = bare(raw);
  } catch {
    throw new GatewayError('invalid_field', 'The contact is not a valid JID.');
  }
  if (!jid.includes('@')) throw new GatewayError('invalid_field', 'The contact must be a user JID (local@domain).');
  if (!d.addressing.isAllowedJid(jid)) throw new GatewayError('recipient_not_allowed');
  return jid;
}

function readerJid(d: ContactsDeps, raw: unknown): string {
  if (raw === undefined) {
    if (!d.defaultReader) throw new GatewayError('invalid_field', 'No bot is configured: name the hosted JID that reads with "as".');
    return d.defaultReader;
  }
  if (typeof raw !== 'string') throw new GatewayError('invalid_field', '"as" must be one hosted JID.');
  let a;
  try {
    a = d.addressing.classify(raw);
  } catch (e) {
    if (e instanceof GatewayError) throw new GatewayError('invalid_field', `"as" is not a hosted JID: ${e.message}`);
    throw e;
  }
  if (a.kind === 'domain') throw new GatewayError('invalid_field', '"as" must be a bot or a proxy JID, not the gateway\'s domain.');
  return a.local;
}

export function contactsRoutes(d: ContactsDeps): Router {
  const r = Router();

  // `?refresh=true` first re-reads what the contact publishes (both OMEMO versions' device lists and
  // bundles, OX keys), so a device that never wrote to the gateway shows with its fingerprint and
  // can be trusted under `manual` before the first message. `as` names the hosted JID that reads.
  r.get('/contacts/:jid/devices', async (req, res) => {
    requireAdmin(res);
    const jid = contactJid(d, req.params.jid!);
    const q = req.query;
    const refresh = q.refresh === 'true' || q.refresh === '1';
    if (q.refresh !== undefined && !refresh && q.refresh !== 'false' && q.refresh !== '0') {
      throw new GatewayError('invalid_field', '"refresh" must be true or false.');
    }
    if (!refresh) {
      res.json({ jid, devices: d.trust.list(jid).map((x) => deviceView(d, jid, x)) });
      return;
    }
    if (!d.refresh) throw new GatewayError('not_found', 'No protocol of this gateway reads contacts\' devices.');
    const reader = readerJid(d, q.as);
    const refreshed = await d.refresh(reader, jid);
    res.json({ jid, devices: d.trust.list(jid).map((x) => deviceView(d, jid, x)), refreshed, read_as: reader });
  });

  r.put('/contacts/:jid/trust', (req, res) => {
    requireAdmin(res);
    const jid = contactJid(d, req.params.jid!);
    const o = jsonObject(req.body, ['fingerprint', 'trust', 'protocol']);
    const fingerprint = requiredString(o, 'fingerprint').toLowerCase().replace(/[\s:]/g, '');
    const trust = optionalEnum(o, 'trust', TRUST_LEVELS);
    if (!trust) throw new GatewayError('invalid_field', '"trust" is required.');
    const protocol = optionalEnum(o, 'protocol', PROTOCOLS);
    const candidates = d.trust.list(jid).filter((x) => x.fingerprint.toLowerCase() === fingerprint && (!protocol || x.protocol === protocol));
    if (candidates.length === 0) throw new GatewayError('not_found', 'The contact has no device or key with that fingerprint.');
    if (candidates.length > 1) throw new GatewayError('invalid_field', 'That fingerprint is known for several protocols; name the "protocol".');
    const device = candidates[0]!;
    d.trust.set(jid, device.protocol, device.fingerprint, trust as TrustLevel);
    res.json(deviceView(d, jid, d.trust.get(jid, device.protocol, device.fingerprint)!));
  });

  r.put('/contacts/:jid', (req, res) => {
    requireAdmin(res);
    const jid = contactJid(d, req.params.jid!);
    const o = jsonObject(req.body, ['protocol']);
    if (!('protocol' in o)) throw new GatewayError('invalid_field', '"protocol" is required (null clears it).');
    const protocol = o.protocol === null ? null : (optionalEnum(o, 'protocol', PROTOCOLS) as ProtocolName);
    d.contacts.setPreferredProtocol(jid, protocol);
    res.json({ jid, protocol });
  });

  r.put('/contacts/:jid/pgp-key', async (req, res) => {
    requireAdmin(res);
    if (!d.pgp) throw new GatewayError('not_found', 'XEP-0027 is not enabled.');
    const jid = contactJid(d, req.params.jid!);
    const o = jsonObject(req.body, ['key']);
    const { fingerprint } = await d.pgp.register(jid, requiredString(o, 'key'));
    res.json({ jid, fingerprint });
  });

  r.delete('/contacts/:jid/pgp-key', async (req, res) => {
    requireAdmin(res);
    if (!d.pgp) throw new GatewayError('not_found', 'XEP-0027 is not enabled.');
    const jid = contactJid(d, req.params.jid!);
    if (!(await d.pgp.remove(jid))) throw new GatewayError('not_found', 'No key is registered for that contact.');
    res.status(204).end();
  });

  return r;
}
