// X3DH key agreement (Signal's specification, revision 1) over raw X25519 keys, parameterised by the
// version's HKDF info and output length. Identity keys are given in their X25519 form; converting an
// Ed25519 identity (OMEMO 2) is the caller's business.
//   initiator: DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A, IK_B), DH3 = DH(EK_A, SPK_B), DH4 = DH(EK_A, OPK_B)
//   SK = HKDF-SHA-256(ikm = 32 x 0xFF || DH1 || DH2 || DH3 [|| DH4], salt = 32 zero bytes, info)
import { hkdf, x25519, zeros } from './primitives.js';

export interface X3dhParams {
  info: Buffer;
  /** Bytes of output: 32 (OMEMO 2: the root key) or 64 (legacy: root key || chain key). */
  length: number;
}

const PAD = Buffer.alloc(32, 0xff);
const SALT = zeros(32);

export function x3dhInitiator(p: X3dhParams, k: { ourIdentityPriv: Buffer; ephemeralPriv: Buffer; theirIdentity: Buffer; theirSignedPreKey: Buffer; theirPreKey?: Buffer }): Buffer {
  const parts = [
    PAD,
    x25519(k.ourIdentityPriv, k.theirSignedPreKey),
    x25519(k.ephemeralPriv, k.theirIdentity),
    x25519(k.ephemeralPriv, k.theirSignedPreKey),
  ];
  if (k.theirPreKey) parts.push(x25519(k.ephemeralPriv, k.theirPreKey));
  return hkdf(Buffer.concat(parts), SALT, p.info, p.length);
}

export function x3dhResponder(p: X3dhParams, k: { ourIdentityPriv: Buffer; signedPreKeyPriv: Buffer; preKeyPriv?: Buffer; theirIdentity: Buffer; theirEphemeral: Buffer }): Buffer {
  const parts = [
    PAD,
    x25519(k.signedPreKeyPriv, k.theirIdentity),
    x25519(k.ourIdentityPriv, k.theirEphemeral),
    x25519(k.signedPreKeyPriv, k.theirEphemeral),
  ];
  if (k.preKeyPriv) parts.push(x25519(k.preKeyPriv, k.theirEphemeral));
  return hkdf(Buffer.concat(parts), SALT, p.info, p.length);
}
