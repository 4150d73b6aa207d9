// OTR's Diffie-Hellman: the RFC 3526 1536-bit MODP group (group 5), g = 2, private exponents of 320
// bits as libotr draws them (OpenSSL's default for this group would be shorter). node:crypto does
// the exponentiations.
import { createDiffieHellman, getDiffieHellman, randomBytes } from 'node:crypto';
import { bytesToBig, bigToBytes } from './bytes.js';

const GROUP = getDiffieHellman('modp5');
const PRIME_BYTES = GROUP.getPrime();
const GEN = Buffer.from([2]);
export const DH_P = bytesToBig(PRIME_BYTES);

export interface DhKey {
  priv: bigint;
  pub: bigint;
}

function dhWith(priv: bigint) {
  const dh = createDiffieHellman(PRIME_BYTES, GEN);
  dh.setPrivateKey(bigToBytes(priv));
  return dh;
}

export function newDhKey(): DhKey {
  const priv = bytesToBig(randomBytes(40));
  return { priv, pub: bytesToBig(dhWith(priv).generateKeys()) };
}

/** 2 <= v <= p-2: every group element received must be in range. */
export const inGroup = (v: bigint): boolean => v >= 2n && v <= DH_P - 2n;

/** (their)^priv mod p. The caller has checked inGroup(their). */
export function dhSecret(priv: bigint, their: bigint): bigint {
  const dh = dhWith(priv);
  dh.generateKeys();
  return bytesToBig(dh.computeSecret(bigToBytes(their)));
}
