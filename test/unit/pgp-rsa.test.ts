// The RSA key type (pgp_key_type: rsa): RSA-3072 keys that GnuPG 2.2 uses both ways. One test, since
// RSA-3072 key generation takes seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GpgUser } from '../harness/gpg.js';
import { PROXY, encryptedStanza, makeRig } from './pgp-setup.js';

const CAROL = 'carol@legacy.example';

test('RSA-3072 hosted keys: gpg reads the key, encrypts to it and decrypts from it', { timeout: 120_000 }, async () => {
  const carol = await GpgUser.create(`xmpp:${CAROL}`);
  try {
    const rig = makeRig({ keyType: 'rsa' });
    await rig.engine.registerContactKey(CAROL, await carol.exportPublic(), { viaAdmin: false });
    const id = await rig.engine.identity(PROXY);
    await carol.importKey(id.pgp!.public_key);
    const listing = (await carol.run(['--with-colons', '--list-keys', id.pgp!.fingerprint])).stdout.toString();
    assert.match(listing, /^pub:[^:]*:3072:1:/m, 'RSA-3072 primary');
    assert.match(listing, /^sub:[^:]*:3072:1:/m, 'RSA-3072 subkey');

    const body = 'RSA: Grüße\nzweite Zeile';
    const inbound = await carol.encrypt(body, id.pgp!.fingerprint, { sign: true });
    const r = await rig.engine.decrypt(PROXY, encryptedStanza(`${CAROL}/psi`, PROXY, inbound));
    assert.ok(r.ok && r.body === body && r.sender.trust === 'trusted');

    const out = await rig.engine.encrypt(PROXY, CAROL, body);
    const got = await carol.decrypt(out.children[1]!.getText());
    assert.equal(got.text, body);
    assert.equal(got.signature, 'good');
    assert.equal(got.signer, id.pgp!.fingerprint);
  } finally {
    carol.destroy();
  }
});
