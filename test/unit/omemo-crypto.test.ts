// The node:crypto backend gives the same results as the library's own code and as Web Crypto, so the
// wire format cannot have changed: every primitive is checked against both on random inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, webcrypto } from 'node:crypto';
import {
  installFastCrypto,
  libraryCryptoOriginals,
  libraryCurve,
  nodeCurve,
  nodeWebCrypto,
} from '../../bridges/omemo/crypto-provider.js';

installFastCrypto();
const subtle = webcrypto.subtle;
const ab = (b: Uint8Array) => new Uint8Array(b).buffer;
const hex = (x: ArrayBuffer) => Buffer.from(x).toString('hex');

test('X25519: key pairs and agreements match the library curve (incl. unclamped private keys)', async () => {
  const lib = (await libraryCurve()) as unknown as {
    createKeyPair(priv: ArrayBuffer): { pubKey: ArrayBuffer; privKey: ArrayBuffer };
    calculateAgreement(pub: ArrayBuffer, priv: ArrayBuffer): ArrayBuffer;
  };
  for (let i = 0; i < 20; i++) {
    const raw = randomBytes(32);
    const ours = await nodeCurve.keyPair(ab(raw));
    const theirs = lib.createKeyPair(ab(raw));
    assert.equal(hex(ours.pubKey), hex(theirs.pubKey).slice(2), 'same public key (library adds 05)');
    assert.equal(hex(ours.privKey), hex(theirs.privKey), 'same clamped private key');
    const other = lib.createKeyPair(ab(randomBytes(32)));
    const s1 = await nodeCurve.sharedSecret(other.pubKey.slice(1), ours.privKey);
    const s2 = lib.calculateAgreement(new Uint8Array([5, ...new Uint8Array(ours.pubKey)]).buffer, other.privKey);
    assert.equal(hex(s1), hex(s2));
  }
});

test('XEdDSA through the installed curve: signatures by our keys verify; tampering is caught', async () => {
  const kp = await nodeCurve.keyPair(ab(randomBytes(32)));
  const msg = ab(randomBytes(33));
  const sig = await nodeCurve.sign(kp.privKey, msg);
  assert.equal(await nodeCurve.verify(kp.pubKey, msg, sig), false, 'false means valid (library convention)');
  const bad = new Uint8Array(sig.slice(0));
  bad[5]! ^= 0x40;
  assert.equal(await nodeCurve.verify(kp.pubKey, msg, bad.buffer), true);
});

test('HMAC-SHA-256, HKDF and AES-256-CBC equal the library originals and Web Crypto', async () => {
  const orig = libraryCryptoOriginals();
  const { sign, HKDF, encrypt, decrypt } = await import('@privacyresearch/libsignal-protocol-typescript/lib/internal/crypto.js').then((m) => m.crypto);
  for (let i = 0; i < 20; i++) {
    const key = ab(randomBytes(32));
    const data = ab(randomBytes(i * 7));
    const wcKey = await subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    const expected = hex(await subtle.sign('HMAC', wcKey, data));
    assert.equal(hex(await sign.call(null, key, data)), expected);
    assert.equal(hex(await orig.sign(key, data)), expected);

    const salt = i % 2 ? new ArrayBuffer(32) : ab(randomBytes(32));
    const info = ab(Buffer.from(['WhisperText', 'WhisperRatchet', 'WhisperMessageKeys'][i % 3]!));
    const hk = await subtle.importKey('raw', key, 'HKDF', false, ['deriveBits']);
    const okm = hex(await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, hk, 96 * 8));
    assert.equal((await HKDF.call(null, key, salt, info)).map(hex).join(''), okm);
    assert.equal((await orig.HKDF(key, salt, info)).map(hex).join(''), okm);

    const iv = ab(randomBytes(16));
    const pt = ab(randomBytes(i * 5));
    const ak = await subtle.importKey('raw', key, 'AES-CBC', false, ['encrypt', 'decrypt']);
    const ct = await subtle.encrypt({ name: 'AES-CBC', iv }, ak, pt);
    assert.equal(hex(await encrypt.call(null, key, pt, iv)), hex(ct));
    assert.equal(hex(await orig.encrypt(key, pt, iv)), hex(ct));
    assert.equal(hex(await decrypt.call(null, key, ct, iv)), hex(pt));
    assert.equal(hex(await orig.decrypt(key, ct, iv)), hex(pt));
  }
});

test('the WebCrypto-shaped shim matches Web Crypto', async () => {
  const key = ab(randomBytes(32));
  const data = ab(randomBytes(100));
  const k = await nodeWebCrypto.subtle.importKey('raw', key, { name: 'HMAC' });
  const wk = await subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  assert.equal(hex(await nodeWebCrypto.subtle.sign({}, k, data)), hex(await subtle.sign('HMAC', wk, data)));
  assert.equal(hex(await nodeWebCrypto.subtle.digest({ name: 'SHA-512' }, data)), hex(await subtle.digest('SHA-512', data)));
  const arr = nodeWebCrypto.getRandomValues(new Uint8Array(64));
  assert.notEqual(Buffer.from(arr).toString('hex'), '00'.repeat(64));
  await assert.rejects(nodeWebCrypto.subtle.decrypt({ name: 'AES-CBC', iv: new Uint8Array(16) }, { alg: 'AES-CBC', key: Buffer.alloc(32) }, new Uint8Array(16)));
});
