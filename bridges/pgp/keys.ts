// OpenPGP keys for XEP-0027: generating hosted JIDs' keys (GnuPG 2.2 compatible, v4) and reading the
// public keys contacts register, with typed, user-safe errors for every way such a key can be unusable.
import * as openpgp from 'openpgp';
import { GatewayError } from '../../errors.js';
import { ArmorError, parseStripped } from './armor.js';
import { PGP_CONFIG, FULL_CONFIG } from './openpgp-config.js';

export type PgpKeyType = 'curve25519' | 'rsa';

export type PgpKeyProblem =
  | 'not-a-key' // garbage, or another kind of OpenPGP object
  | 'private-key' // a secret key was sent: refused, never stored
  | 'multiple-keys'
  | 'invalid' // no valid self-signature, unsupported packets...
  | 'expired'
  | 'revoked'
  | 'cannot-encrypt' // no usable encryption subkey (or only weak algorithms)
  | 'uid-mismatch'; // no user ID names the registering JID

const PROBLEM_TEXT: Record<PgpKeyProblem, string> = {
  'not-a-key': 'This is not an OpenPGP public key. Send the armored block from `gpg --armor --export`.',
  'private-key': 'That is a PRIVATE key. It was not stored. Send only your public key (`gpg --armor --export`), and consider the private key exposed.',
  'multiple-keys': 'The text holds more than one key. Send exactly one public key.',
  invalid: 'The key is not valid (no valid self-signature or unsupported format).',
  expired: 'The key has expired.',
  revoked: 'The key is revoked.',
  'cannot-encrypt': 'The key has no usable encryption subkey (DSA/ElGamal and RSA keys under 2048 bits are not accepted).',
  'uid-mismatch': 'The key has no user ID naming your address. Add a user ID "xmpp:<your JID>" to the key, or ask an administrator to register it.',
};

/** A public key that cannot be used, with a `problem` the caller can branch on. HTTP 400 / bad-request. */
export class PgpKeyError extends GatewayError {
  readonly problem: PgpKeyProblem;
  constructor(problem: PgpKeyProblem, cause?: unknown) {
    super('invalid_field', PROBLEM_TEXT[problem], cause === undefined ? undefined : { cause });
    this.name = 'PgpKeyError';
    this.problem = problem;
  }
}

export interface KeyInfo {
  /** 40 uppercase hex digits (v4 fingerprint). */
  fingerprint: string;
  /** 16 uppercase hex digits: the primary key's id. */
  keyId: string;
  /** User IDs with a valid self-signature. */
  userIds: string[];
  canEncrypt: boolean;
  isPrivate: boolean;
  /** e.g. `eddsaLegacy ed25519Legacy` or `rsaEncryptSign 3072`. */
  algorithm: string;
  created: Date;
  /** null when the key never expires. */
  expires: Date | null;
}

export const fingerprintOf = (k: openpgp.Key): string => k.getFingerprint().toUpperCase();
export const keyIdHex = (id: openpgp.KeyID): string => id.toHex().toUpperCase();
/**
 * The readable ids among what openpgp reports for a peer's packets. A packet of a version openpgp
 * cannot parse (a v2, v3 or v5 signature, a v6 PKESK) is kept as an unparseable packet whose
 * issuer is undefined: such an entry names nobody and is left out instead of throwing.
 */
export const readableKeyIds = (ids: ReadonlyArray<openpgp.KeyID | undefined | null>): string[] =>
  ids.filter((id): id is openpgp.KeyID => typeof id?.toHex === 'function').map(keyIdHex);
/** The ids of the primary key and every subkey (a signature or PKESK names one of them). */
export const keyIdsOf = (k: openpgp.Key): string[] => k.getKeyIDs().map(keyIdHex);

/** A v4 key GnuPG 2.2 reads: EdDSA (legacy) + ECDH cv25519 by default, or RSA-3072. */
export async function generateLocalKey(jid: string, type: PgpKeyType, date: Date): Promise<openpgp.PrivateKey> {
  const { privateKey } = await openpgp.generateKey({
    type: type === 'rsa' ? 'rsa' : 'ecc',
    curve: 'curve25519Legacy',
    rsaBits: 3072,
    // The user ID is exactly `xmpp:` + the JID as on the wire, XEP-0106 escapes included.
    userIDs: [{ name: `xmpp:${jid}` }],
    date,
    format: 'object',
    config: PGP_CONFIG,
  });
  return privateKey;
}

/** Reads exactly one key from armored text (full, or stripped as XEP-0027 payloads are). */
async function readOneKey(text: string): Promise<openpgp.Key> {
  if (typeof text !== 'string' || text.trim().length === 0) throw new PgpKeyError('not-a-key');
  if (/-----BEGIN PGP PRIVATE KEY BLOCK-----/.test(text)) throw new PgpKeyError('private-key');
  let keys: openpgp.Key[];
  try {
    const block = /-----BEGIN PGP PUBLIC KEY BLOCK-----[\s\S]*?-----END PGP PUBLIC KEY BLOCK-----/.exec(text);
    if (block) keys = await openpgp.readKeys({ armoredKeys: block[0].replace(/\r\n?/g, '\n'), config: PGP_CONFIG });
    else if (/-----BEGIN PGP /.test(text)) throw new PgpKeyError('not-a-key');
    else keys = await openpgp.readKeys({ binaryKeys: parseStripped(text).bytes, config: PGP_CONFIG });
  } catch (e) {
    if (e instanceof PgpKeyError) throw e;
    // The cause is openpgp's or our parser's message, which never quotes the input.
    throw new PgpKeyError('not-a-key', e instanceof ArmorError || e instanceof Error ? e.message : undefined);
  }
  if (keys.length !== 1) throw new PgpKeyError(keys.length === 0 ? 'not-a-key' : 'multiple-keys');
  return keys[0]!;
}

async function validUserIds(key: openpgp.Key, date: Date): Promise<string[]> {
  const out: string[] = [];
  for (const user of key.users) {
    if (!user.userID) continue;
    try {
      await user.verify(date, FULL_CONFIG);
      out.push(user.userID.userID);
    } catch {
      // revoked or not self-signed: not a claim the key holder makes
    }
  }
  return out;
}

function algorithmName(key: openpgp.Key): string {
  const a = key.getAlgorithmInfo();
  return [a.algorithm, a.curve ?? a.bits].filter((x) => x !== undefined).join(' ');
}

/**
 * Reads a contact's public key and checks it is usable now. Throws PgpKeyError for garbage,
 * several keys, a private key (unless `allowPrivate`, for tools that only want the facts),
 * an expired, revoked or otherwise invalid key. `canEncrypt` is reported, not enforced.
 */
export async function readPublicKey(
  text: string,
  now: Date,
  opts: { allowPrivate?: boolean } = {},
): Promise<{ key: openpgp.PublicKey; info: KeyInfo }> {
  const raw = await readOneKey(text);
  if (raw.isPrivate() && !opts.allowPrivate) throw new PgpKeyError('private-key');
  const key = raw.toPublic();
  if (await key.isRevoked(undefined, undefined, now, FULL_CONFIG).catch(() => false)) throw new PgpKeyError('revoked');
  let expires: Date | null;
  try {
    const exp = await key.getExpirationTime(undefined, FULL_CONFIG);
    expires = exp instanceof Date ? exp : null;
  } catch (e) {
    throw new PgpKeyError('invalid', e);
  }
  if (expires && expires.getTime() <= now.getTime()) throw new PgpKeyError('expired');
  try {
    await key.verifyPrimaryKey(now, undefined, FULL_CONFIG);
  } catch (e) {
    throw new PgpKeyError('invalid', e);
  }
  const canEncrypt = await key.getEncryptionKey(undefined, now, undefined, FULL_CONFIG).then(
    () => true,
    () => false,
  );
  const info: KeyInfo = {
    fingerprint: fingerprintOf(key),
    keyId: keyIdHex(key.getKeyID()),
    userIds: await validUserIds(key, now),
    canEncrypt,
    isPrivate: raw.isPrivate(),
    algorithm: algorithmName(key),
    created: key.getCreationTime(),
    expires,
  };
  return { key, info };
}

/** The JID an `xmpp:` user ID names: `xmpp:bob@example.org` or `Bob <xmpp:bob@example.org>`. */
export function uidJid(uid: string): string | null {
  const m = /^\s*xmpp:([^\s<>]+)\s*$/.exec(uid) ?? /<xmpp:([^\s<>]+)>\s*$/.exec(uid);
  return m ? m[1]! : null;
}

/**
 * Whether a user ID names `jid`. Localparts and domains compare case-insensitively, as JIDs do after
 * case folding (RFC 7622 UsernameCaseMapped); the gateway's JIDs are already folded.
 */
export function uidMatchesJid(uid: string, jid: string): boolean {
  const named = uidJid(uid);
  if (named === null) return false;
  const split = (j: string): [string, string] => {
    const at = j.lastIndexOf('@');
    return at === -1 ? ['', j] : [j.slice(0, at), j.slice(at + 1)];
  };
  const [ul, ud] = split(named);
  const [jl, jd] = split(jid);
  return ul.toLowerCase() === jl.toLowerCase() && ud.toLowerCase() === jd.toLowerCase();
}
