// OTR's long-term keys: DSA (1024-bit p, 160-bit q), as libotr and potr use them.
//
// Why this file does a little arithmetic: OTR signs the 32-byte value M_B itself, as an integer
// (libotr hands it to libgcrypt as a raw MPI; potr calls pycryptodome's _sign on the integer), not a
// hash of it. node:crypto only signs through a digest (EVP_DigestSign), so it cannot produce or check
// these signatures, and no maintained, audited npm library signs DSA over a caller's integer. The
// least-bad composition, used here: node:crypto (OpenSSL) generates the keys and computes the only
// exponentiation with a secret exponent, g^k mod p (through a Diffie-Hellman object, which OpenSSL
// runs in constant time); @noble/curves' audited Field does the arithmetic mod q (k^-1, x*r) and the
// public exponentiations of verification. Only the DSA equations are ours (FIPS 186-4, 4.6/4.7).
import { createDiffieHellman, createHash, createPrivateKey, generateKeyPair, randomBytes, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { Field } from '@noble/curves/abstract/modular.js';
import { bigToBytes, bigToFixed, bytesToBig, OtrParseError, Reader, Writer } from './bytes.js';

export interface DsaPublic {
  p: bigint;
  q: bigint;
  g: bigint;
  y: bigint;
}

export interface DsaPrivate extends DsaPublic {
  x: bigint;
  /** The PKCS#8 DER the key is stored as. */
  der: Buffer;
}

/** PUBKEY type for DSA in OTR. */
export const PUBKEY_DSA = 0x0000;

const generateKeyPairAsync = promisify(generateKeyPair);

/**
 * Generates a new DSA key (1024/160, as every OTR client uses), on libuv's thread pool: the
 * parameter search takes ~300 ms, which on the event loop held every other stanza (issue 15).
 */
export async function generateDsaKey(): Promise<DsaPrivate> {
  const { privateKey } = await generateKeyPairAsync('dsa', { modulusLength: 1024, divisorLength: 160 });
  return dsaFromKeyObject(privateKey);
}

/** Loads a stored key (PKCS#8 DER). */
export function loadDsaKey(der: Buffer): DsaPrivate {
  return dsaFromKeyObject(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }));
}

function dsaFromKeyObject(key: KeyObject): DsaPrivate {
  const der = key.export({ format: 'der', type: 'pkcs8' });
  // PrivateKeyInfo ::= SEQUENCE { version INTEGER, SEQUENCE { OID, Dss-Parms ::= SEQUENCE { p, q, g } },
  // OCTET STRING { INTEGER x } }: the integers in order are version, p, q, g, x.
  const ints = derIntegers(der);
  if (ints.length !== 5) throw new Error('unexpected DSA PKCS#8 layout');
  const [, p, q, g, x] = ints as [bigint, bigint, bigint, bigint, bigint];
  const y = modPow(p, g, x);
  return { p, q, g, y, x, der };
}

/** Every INTEGER in a DER structure, depth first, looking into SEQUENCE, OCTET STRING and BIT STRING. */
function derIntegers(b: Buffer): bigint[] {
  const out: bigint[] = [];
  const walk = (start: number, end: number) => {
    let o = start;
    while (o < end) {
      const tag = b[o++]!;
      let len = b[o++]!;
      if (len & 0x80) {
        const n = len & 0x7f;
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + b[o++]!;
      }
      const body = o;
      o += len;
      if (tag === 0x02) out.push(bytesToBig(b.subarray(body, o)));
      else if (tag === 0x30) walk(body, o);
      else if (tag === 0x04) walk(body, o);
      else if (tag === 0x03) walk(body + 1, o);
    }
  };
  walk(0, b.length);
  return out;
}

/** base^exp mod p computed by OpenSSL (constant time for the secret exponent). p must be >= 512 bits. */
function modPow(p: bigint, base: bigint, exp: bigint): bigint {
  const dh = createDiffieHellman(bigToBytes(p), bigToBytes(base));
  dh.setPrivateKey(bigToBytes(exp));
  return bytesToBig(dh.generateKeys());
}

const fields = new Map<bigint, ReturnType<typeof Field>>();
function field(n: bigint): ReturnType<typeof Field> {
  let f = fields.get(n);
  if (!f) {
    f = Field(n);
    if (fields.size > 64) fields.clear();
    fields.set(n, f);
  }
  return f;
}

/** PUBKEY: type SHORT 0x0000, then MPI p, q, g, y. */
export function serializePublic(k: DsaPublic): Buffer {
  return new Writer().short(PUBKEY_DSA).mpi(k.p).mpi(k.q).mpi(k.g).mpi(k.y).bytes();
}

/** Reads a PUBKEY; rejects other key types and implausible parameters. */
export function readPublic(r: Reader): DsaPublic {
  if (r.short('pubkey type') !== PUBKEY_DSA) throw new OtrParseError('unknown public key type');
  const p = r.mpi('p');
  const q = r.mpi('q');
  const g = r.mpi('g');
  const y = r.mpi('y');
  const pBits = p.toString(2).length;
  const qBits = q.toString(2).length;
  if (pBits < 1024 || pBits > 3072 || qBits < 160 || qBits > 256 || (p - 1n) % q !== 0n) throw new OtrParseError('bad DSA parameters');
  if (g <= 1n || g >= p || y <= 1n || y >= p) throw new OtrParseError('bad DSA public value');
  return { p, q, g, y };
}

/** libotr's fingerprint: SHA-1 of the PUBKEY without its type, 40 uppercase hex. */
export function fingerprint(k: DsaPublic): string {
  return createHash('sha1').update(serializePublic(k).subarray(2)).digest('hex').toUpperCase();
}

/** As libotr shows it: five groups of eight. */
export const humanFingerprint = (fp: string): string => fp.toUpperCase().replace(/(.{8})(?!$)/g, '$1 ');

const qLen = (q: bigint) => Math.ceil(q.toString(2).length / 8);

/** Signs the integer `m` (e.g. M_B, 32 bytes) the OTR way: r || s, each as long as q. */
export function sign(k: DsaPrivate, m: Uint8Array): Buffer {
  const Fq = field(k.q);
  const h = Fq.create(bytesToBig(m));
  for (;;) {
    // k uniformly in [1, q-1]: 64 extra random bits make the modular bias negligible.
    const nonce = (bytesToBig(randomBytes(qLen(k.q) + 8)) % (k.q - 1n)) + 1n;
    const r = modPow(k.p, k.g, nonce) % k.q;
    if (r === 0n) continue;
    const s = Fq.mul(Fq.inv(nonce), Fq.add(h, Fq.mul(k.x, r)));
    if (s === 0n) continue;
    return Buffer.concat([bigToFixed(r, qLen(k.q)), bigToFixed(s, qLen(k.q))]);
  }
}

/** Verifies an OTR DSA signature over the integer `m`. Never throws for bad input. */
export function verify(k: DsaPublic, m: Uint8Array, sig: Uint8Array): boolean {
  const n = qLen(k.q);
  if (sig.length !== 2 * n) return false;
  const r = bytesToBig(sig.subarray(0, n));
  const s = bytesToBig(sig.subarray(n));
  if (r <= 0n || r >= k.q || s <= 0n || s >= k.q) return false;
  const Fq = field(k.q);
  const Fp = field(k.p);
  const w = Fq.inv(s);
  const u1 = Fq.mul(Fq.create(bytesToBig(m)), w);
  const u2 = Fq.mul(r, w);
  const v = Fp.mul(Fp.pow(k.g, u1), Fp.pow(k.y, u2)) % k.q;
  return v === r;
}
