// The floor of each OMEMO bench row: the native calls one message needs and nothing else, timed alone
// in the same run (node:crypto and one SQLite write; no records, promises, XML or library code).
//   steady encrypt / decrypt, per device: KDF_CK (2 HMAC), message keys (HKDF, 80 bytes), AES-256-CBC
//     of the 32-byte key material, the truncated MAC (HMAC), the AES-128-GCM body (once per message:
//     its share for n devices is 1/n), and the keystore write (a sealed ~450-byte session row).
//   ratchet turn (decrypt): the above, one X25519 key generation, two agreements and two KDF_RK (HKDF).
//   session build, initiator: the signature check (XEdDSA: Montgomery->Edwards + Ed25519 verify), two
//     key generations (base key, first ratchet key), four X3DH agreements and one for the first
//     chain, HKDF x2, then one encrypt's floor.
//   session build, responder: four X3DH agreements, the turn's key generation and two agreements,
//     HKDF x3, one decrypt's floor, and one prekey generation (the replacement) with its write.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Keystore } from '../keystore/keystore.js';
import { createProtocolStore } from '../keystore/protocol-store.js';
import { generateX25519, x25519, xeddsaSign, xeddsaVerify } from '../bridges/ratchet/primitives.js';

export interface Floors {
  encrypt: number[];
  decrypt: number[];
  /** One AES-128-GCM body seal or open alone (shared by the devices of one message). */
  body: number[];
  turn: number[];
  buildInitiator: number[];
  buildResponder: number[];
}

const ZERO = Buffer.alloc(32);
const INFO_MK = Buffer.from('WhisperMessageKeys');
const INFO_RK = Buffer.from('WhisperRatchet');
const INFO_X3DH = Buffer.from('WhisperText');
const ONE = Buffer.of(1);
const TWO = Buffer.of(2);

function chainStep(ck: Buffer): Buffer {
  createHmac('sha256', ck).update(TWO).digest();
  return createHmac('sha256', ck).update(ONE).digest();
}

function messageCrypto(mk: Buffer, km: Buffer, decrypt: boolean, ad: Buffer): void {
  const keys = Buffer.from(hkdfSync('sha256', mk, ZERO, INFO_MK, 80));
  if (decrypt) {
    createHmac('sha256', keys.subarray(32, 64)).update(ad).update(km).digest();
    // Random input has no valid padding: the padding check is left out (a few byte comparisons).
    const d = createDecipheriv('aes-256-cbc', keys.subarray(0, 32), keys.subarray(64, 80)).setAutoPadding(false);
    Buffer.concat([d.update(km), d.final()]);
  } else {
    const c = createCipheriv('aes-256-cbc', keys.subarray(0, 32), keys.subarray(64, 80));
    const ct = Buffer.concat([c.update(km), c.final()]);
    createHmac('sha256', keys.subarray(32, 64)).update(ad).update(ct).digest();
  }
}

function body(plaintext: Buffer): void {
  const key = randomBytes(16);
  const c = createCipheriv('aes-128-gcm', key, randomBytes(12));
  Buffer.concat([c.update(plaintext), c.final()]);
  c.getAuthTag();
}

export function benchFloors(n: { steady: number; turn: number; build: number }): Floors {
  const dir = mkdtempSync(join(tmpdir(), 'omemo-floor-'));
  const ks = Keystore.open(join(dir, 'ks.sqlite'), 'bench-passphrase', { kdf: { N: 1024, r: 8, p: 1 } });
  try {
    const store = createProtocolStore(ks, 'omemo');
    const row = randomBytes(450);
    const ad = randomBytes(66);
    const time = (count: number, fn: (i: number) => void): number[] => {
      const out: number[] = [];
      for (let i = 0; i < count + 50; i++) {
        const t = performance.now();
        fn(i);
        if (i >= 50) out.push(performance.now() - t);
      }
      return out;
    };
    const text = Buffer.from('a typical chat message, about sixty bytes of text in utf-8 ...');
    const km = randomBytes(32);
    // What a device decrypts: the 32-byte key material padded to 48 bytes of AES-256-CBC.
    const kmCipher = randomBytes(48);
    let ck: Buffer = randomBytes(32);
    const steady = (decrypt: boolean, i: number): void => {
      const mk = chainStep(ck);
      ck = mk;
      messageCrypto(mk, decrypt ? kmCipher : km, decrypt, ad);
      store.put('floor@example.org', 'session', `c${i % 4}@example.org.1`, row);
    };
    // Keys for the agreements are made outside the timed part where the real operation has them already.
    const pairs = Array.from({ length: 8 }, () => generateX25519());
    const dh = (a: number, b: number): Buffer => x25519(pairs[a]!.priv, pairs[b]!.pub);
    const ik = generateX25519();
    const spkPub33 = Buffer.concat([Buffer.of(5), pairs[1]!.pub]);
    const sig = xeddsaSign(ik.priv, spkPub33);
    const encrypt = time(n.steady, (i) => steady(false, i));
    const decrypt = time(n.steady, (i) => steady(true, i));
    const bodies = time(n.steady, () => body(text));
    const turn = time(n.turn, (i) => {
      const k = generateX25519();
      const rk1 = Buffer.from(hkdfSync('sha256', dh(0, 1), ZERO, INFO_RK, 64));
      x25519(k.priv, pairs[1]!.pub);
      Buffer.from(hkdfSync('sha256', rk1.subarray(0, 32), rk1.subarray(0, 32), INFO_RK, 64));
      steady(true, i);
    });
    const buildInitiator = time(n.build, (i) => {
      if (!xeddsaVerify(ik.pub, spkPub33, sig)) throw new Error('floor: signature');
      const ek = generateX25519();
      const rkey = generateX25519();
      const parts = [x25519(ik.priv, pairs[1]!.pub), x25519(ek.priv, pairs[2]!.pub), x25519(ek.priv, pairs[1]!.pub), x25519(ek.priv, pairs[3]!.pub)];
      const root = Buffer.from(hkdfSync('sha256', Buffer.concat(parts), ZERO, INFO_X3DH, 32));
      Buffer.from(hkdfSync('sha256', x25519(rkey.priv, pairs[1]!.pub), root, INFO_RK, 64));
      steady(false, i);
    });
    const buildResponder = time(n.build, (i) => {
      const parts = [dh(1, 4), dh(0, 5), dh(1, 5), dh(3, 5)];
      const root = Buffer.from(hkdfSync('sha256', Buffer.concat(parts), ZERO, INFO_X3DH, 32));
      const k = generateX25519();
      const a = Buffer.from(hkdfSync('sha256', dh(1, 6), root, INFO_RK, 64));
      Buffer.from(hkdfSync('sha256', x25519(k.priv, pairs[6]!.pub), a.subarray(0, 32), INFO_RK, 64));
      steady(true, i);
      generateX25519();
      store.put('floor@example.org', 'prekey', String(i % 100), row.subarray(0, 120));
    });
    return { encrypt, decrypt, body: bodies, turn, buildInitiator, buildResponder };
  } finally {
    ks.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
