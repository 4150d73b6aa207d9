// The primitives legacy OMEMO runs on (bridges/ratchet/primitives.ts: node:crypto, @noble/curves for
// XEdDSA signing) give libsignal's results, so the wire format cannot have changed: X25519 key pairs
// and agreements, XEdDSA signatures both ways, checked against libsignal-protocol-typescript's own
// curve (the reference) on random inputs, and HKDF / HMAC / AES-256-CBC against Web Crypto.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, webcrypto } from 'node:crypto';
import { aesCbcEncrypt, generateX25519, hkdf, hmac, x25519, x25519Public, xeddsaSign, xeddsaVerify } from '../../bridges/ratchet/primitives.js';
import { with05 } from '../../bridges/omemo/legacy-protocol.js';
import { libraryCurve } from '../harness/libsignal-curve.js';

const subtle = webcrypto.subtle;
const ab = (b: Uint8Array) => new Uint8Array(b).buffer;
const hex = (x: ArrayBuffer | Uint8Array) => Buffer.from(x instanceof Uint8Array ? x : new Uint8Array(x)).toString('hex');

test('X25519: public keys and agreements match the library curve (incl. unclamped private keys)', async () => {
  const lib = await libraryCurve();
  for (let i = 0; i < 20; i++) {
    const raw = randomBytes(32);
    const theirs = lib.createKeyPair(ab(raw));
    // The library clamps the scalar it stores; ours from the same (unclamped) bytes is the same key.
    assert.equal(hex(x25519Public(raw)), hex(theirs.pubKey).slice(2), 'same public key (library adds 05)');
    assert.equal(hex(x25519Public(Buffer.from(theirs.privKey))), hex(theirs.pubKey).slice(2));
    const ours = generateX25519();
    const other = lib.createKeyPair(ab(randomBytes(32)));
    const s1 = x25519(ours.priv, Buffer.from(other.pubKey).subarray(1));
    const s2 = lib.calculateAgreement(ab(with05(ours.pub)), other.privKey);
    assert.equal(hex(s1), hex(s2));
  }
});

test('XEdDSA: our signatures verify with the library curve, the library\'s with ours; tampering is caught both ways', async () => {
  const lib = await libraryCurve();
  for (let i = 0; i < 10; i++) {
    const kp = generateX25519();
    const msg = randomBytes(33);
    const sig = xeddsaSign(kp.priv, msg);
    assert.equal(lib.verifySignature(ab(with05(kp.pub)), ab(msg), ab(sig)), false, 'false means valid (library convention)');
    const bad = Buffer.from(sig);
    bad[5]! ^= 0x40;
    assert.equal(lib.verifySignature(ab(with05(kp.pub)), ab(msg), ab(bad)), true);

    const theirs = lib.createKeyPair(ab(randomBytes(32)));
    const libSig = Buffer.from(lib.calculateSignature(theirs.privKey, ab(msg)));
    const pub = Buffer.from(theirs.pubKey).subarray(1);
    assert.equal(xeddsaVerify(pub, msg, libSig), true);
    const badLib = Buffer.from(libSig);
    badLib[20]! ^= 0x01;
    assert.equal(xeddsaVerify(pub, msg, badLib), false);
    assert.equal(xeddsaVerify(pub, randomBytes(33), libSig), false);
  }
});

test('HMAC-SHA-256, HKDF and AES-256-CBC equal Web Crypto', async () => {
  for (let i = 0; i < 20; i++) {
    const key = randomBytes(32);
    const data = randomBytes(i * 7);
    const wcKey = await subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    assert.equal(hex(hmac(key, data)), hex(await subtle.sign('HMAC', wcKey, data)));

    const salt = i % 2 ? Buffer.alloc(32) : randomBytes(32);
    const info = Buffer.from(['WhisperText', 'WhisperRatchet', 'WhisperMessageKeys'][i % 3]!);
    const hk = await subtle.importKey('raw', key, 'HKDF', false, ['deriveBits']);
    assert.equal(hex(hkdf(key, salt, info, 80)), hex(await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, hk, 80 * 8)));

    const iv = randomBytes(16);
    const pt = randomBytes(i * 5);
    const ak = await subtle.importKey('raw', key, 'AES-CBC', false, ['encrypt']);
    assert.equal(hex(aesCbcEncrypt(key, iv, pt)), hex(await subtle.encrypt({ name: 'AES-CBC', iv }, ak, pt)));
  }
});
