// XEP-0384 v0.8+ (OMEMO 2, urn:xmpp:omemo:2): names, labels and defaults.
import { DEFAULT_OPTIONS as LEGACY_DEFAULTS, type OmemoOptions } from '../omemo/constants.js';

export const NS_OMEMO2 = 'urn:xmpp:omemo:2';
export const NODE_DEVICES = `${NS_OMEMO2}:devices`;
export const NODE_BUNDLES = `${NS_OMEMO2}:bundles`;
export const ITEM_CURRENT = 'current';
export const NS_SCE = 'urn:xmpp:sce:1';
export const NS_CLIENT = 'jabber:client';

/** The TrustStore / metrics / keystore protocol label. */
export const PROTOCOL = 'omemo2';

export const INFO_X3DH = Buffer.from('OMEMO X3DH', 'ascii');
export const INFO_ROOT = Buffer.from('OMEMO Root Chain', 'ascii');
export const INFO_MESSAGE_KEYS = Buffer.from('OMEMO Message Key Material', 'ascii');
export const INFO_PAYLOAD = Buffer.from('OMEMO Payload', 'ascii');
export const MAC_LENGTH = 16;

export const DEFAULT_FALLBACK_BODY = 'This message is encrypted with OMEMO 2 (XEP-0384); your client cannot read it.';

export interface Omemo2Options extends OmemoOptions {
  /** SCE `time` stamps further in the future than this are refused (clock skew allowance). */
  maxClockSkewMs: number;
}

/** Same upkeep rules as legacy OMEMO; XEP-0384 0.8 asks for at least 25 prekeys. */
export const DEFAULT_OPTIONS: Omemo2Options = {
  ...LEGACY_DEFAULTS,
  fallbackBody: DEFAULT_FALLBACK_BODY,
  maxClockSkewMs: 10 * 60_000,
};
