// ContactStore keeps the rows it read (the protocol choice reads them for every outbound message):
// each of its writes must be seen by the next read, as if there were no cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Keystore } from '../../keystore/keystore.js';
import { ContactStore } from '../../keystore/contact-store.js';

const KDF = { kdf: { N: 1024, r: 8, p: 1 } };

test('ContactStore: reads after each write see the write (preferred protocol, PGP key, OTR, last protocol)', () => {
  const ks = Keystore.open(':memory:', 'passphrase-for-tests', KDF);
  try {
    const contacts = new ContactStore(ks);
    assert.equal(contacts.get('bob@example.org'), undefined);
    contacts.setPreferredProtocol('bob@example.org', 'omemo');
    assert.equal(contacts.get('bob@example.org')?.preferredProtocol, 'omemo');
    contacts.setPreferredProtocol('bob@example.org', 'ox');
    assert.equal(contacts.get('bob@example.org')?.preferredProtocol, 'ox');
    contacts.setOtr('bob@example.org', true);
    assert.equal(contacts.get('bob@example.org')?.otr, true);
    contacts.setPgpKey('bob@example.org', 'armored', 'ABCD');
    assert.equal(contacts.get('bob@example.org')?.pgpFingerprint, 'ABCD');
    contacts.setPreferredProtocol('bob@example.org', null);
    assert.equal(contacts.get('bob@example.org')?.preferredProtocol, null);
    // A caller changing the record it got does not change the store's.
    const got = contacts.get('bob@example.org')!;
    got.preferredProtocol = 'otr';
    assert.equal(contacts.get('bob@example.org')?.preferredProtocol, null);

    assert.equal(contacts.lastProtocol('alerts@gw.example.org', 'bob@example.org'), null);
    contacts.setLastProtocol('alerts@gw.example.org', 'bob@example.org', 'omemo2');
    assert.equal(contacts.lastProtocol('alerts@gw.example.org', 'bob@example.org'), 'omemo2');
    contacts.setLastProtocol('alerts@gw.example.org', 'bob@example.org', 'omemo2');
    contacts.setLastProtocol('alerts@gw.example.org', 'bob@example.org', 'omemo');
    assert.equal(contacts.lastProtocol('alerts@gw.example.org', 'bob@example.org'), 'omemo');
    assert.equal(contacts.lastProtocol('other@gw.example.org', 'bob@example.org'), null);
    // What the store wrote is in the keystore: a second store over it reads the same.
    const fresh = new ContactStore(ks);
    assert.equal(fresh.lastProtocol('alerts@gw.example.org', 'bob@example.org'), 'omemo');
    assert.equal(fresh.get('bob@example.org')?.otr, true);
  } finally {
    ks.close();
  }
});
