// XEP-0027 armor framing: strip and restore, on the edge cases clients produce.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as openpgp from 'openpgp';
import { ArmorError, MAX_ARMOR_CHARS, parseStripped, restoreArmor, stripArmor } from '../../bridges/pgp/armor.js';

async function sampleArmoredMessage(): Promise<{ armored: string; binary: Uint8Array }> {
  const message = await openpgp.createMessage({ binary: randomBytes(300) });
  const binary = await openpgp.encrypt({ message, passwords: ['x'], format: 'binary' });
  // openpgp's own armorer, with the CRC line as it writes it for messages
  const armored = openpgp.armor(openpgp.enums.armor.message, binary, undefined, undefined, undefined, true);
  return { armored, binary };
}

async function unarmored(armored: string): Promise<Buffer> {
  const { data } = await openpgp.unarmor(armored);
  return Buffer.from(data as unknown as Uint8Array);
}

test('stripArmor drops BEGIN/END lines, headers and the blank line, keeps base64 and CRC', () => {
  const armored = [
    '-----BEGIN PGP MESSAGE-----',
    'Version: GnuPG v2',
    'Comment: https://gnupg.org',
    '',
    'hQEMA4xAAAAAAAAAAQf/c2VjcmV0',
    'ZGF0YQ==',
    '=Ab3f',
    '-----END PGP MESSAGE-----',
    '',
  ].join('\r\n');
  assert.equal(stripArmor(armored), 'hQEMA4xAAAAAAAAAAQf/c2VjcmV0\nZGF0YQ==\n=Ab3f');
  assert.throws(() => stripArmor('hQEMA4x'), ArmorError);
  assert.throws(() => stripArmor('-----BEGIN PGP MESSAGE-----\n\nAAAA\n'), ArmorError);
});

test('parseStripped decodes with or without the CRC line, with LF or CRLF, stray spaces, full armor or leftover headers', async () => {
  const { armored, binary } = await sampleArmoredMessage();
  const stripped = stripArmor(armored);
  assert.match(stripped, /\n=[A-Za-z0-9+/]{4}$/, 'openpgp writes a CRC line for messages');
  const noCrc = stripped.replace(/\n=[A-Za-z0-9+/]{4}$/, '');
  const variants = {
    stripped,
    noCrc,
    crlf: stripped.replace(/\n/g, '\r\n'),
    crlfNoCrc: noCrc.replace(/\n/g, '\r\n'),
    padded: `\n  ${stripped.split('\n').join('  \n\t')}\n\n`,
    oneLine: noCrc.replace(/\n/g, ''),
    full: armored,
    headersLeft: `Version: OpenPGP.js\nComment: x\n\n${stripped}`,
  };
  for (const [name, text] of Object.entries(variants)) {
    const p = parseStripped(text);
    assert.deepEqual(Buffer.from(p.bytes), Buffer.from(binary), name);
  }
  assert.equal(parseStripped(stripped).crc, stripped.split('\n').pop());
  assert.equal(parseStripped(noCrc).crc, null);
});

test('parseStripped refuses what is not base64 armor', () => {
  const bad = ['', '   \n  ', 'hQEMA4x!AAA', 'hQE', 'AAAA=AAA', 'AA==AA==', '=Ab3f', 'Version: 1\n\n', 'x'.repeat(MAX_ARMOR_CHARS + 1)];
  for (const b of bad) assert.throws(() => parseStripped(b), ArmorError, JSON.stringify(b.slice(0, 20)));
});

test('restoreArmor gives armor openpgp reads back to the same packets, CRC kept or absent', async () => {
  const { armored, binary } = await sampleArmoredMessage();
  const stripped = stripArmor(armored);
  const noCrc = stripped.replace(/\n=[A-Za-z0-9+/]{4}$/, '');
  for (const s of [stripped, noCrc, stripped.replace(/\n/g, '\r\n')]) {
    const restored = restoreArmor(s, 'MESSAGE');
    assert.match(restored, /^-----BEGIN PGP MESSAGE-----\n\n/);
    assert.match(restored, /\n-----END PGP MESSAGE-----\n$/);
    const lines = restored.split('\n').slice(2, -2);
    assert.ok(lines.every((l) => l.length <= 64));
    assert.deepEqual(await unarmored(restored), Buffer.from(binary));
    await openpgp.readMessage({ armoredMessage: restored });
    // and stripping again is stable
    assert.equal(stripArmor(restored).replace(/\n/g, ''), s.replace(/\r?\n/g, ''));
  }
  assert.equal(restoreArmor(noCrc, 'SIGNATURE').includes('\n='), false);
  assert.match(restoreArmor(stripped, 'SIGNATURE'), /^-----BEGIN PGP SIGNATURE-----/);
});

test('packet framing: old and new headers, partial lengths joined, broken framing refused', async () => {
  const { encryptedDataBody, splitPackets } = await import('../../bridges/pgp/packets.js');
  const body = new Uint8Array(randomBytes(700));
  const b = (...xs: Array<number | Uint8Array>) => Buffer.concat(xs.map((x) => (typeof x === 'number' ? Buffer.from([x]) : Buffer.from(x))));
  const pkesk = new Uint8Array(randomBytes(20));
  const newDefinite = b(0xc1, 20, pkesk, 0xd2, 192 + ((700 - 192) >> 8), (700 - 192) & 0xff, body);
  const newFive = b(0xd2, 0xff, 0, 0, 700 >> 8, 700 & 0xff, body);
  // partial: 512 + 128 chunks, then a final definite 60
  const newPartial = b(0xc1, 20, pkesk, 0xd2, 0xe9, body.subarray(0, 512), 0xe7, body.subarray(512, 640), 60, body.subarray(640));
  // old-format headers carry tags below 16 only (so never SEIPD): a PKESK with each length type
  const oldOne = b(0x84, 20, pkesk, newFive);
  const oldTwo = b(0x85, 0, 20, pkesk, newFive);
  const oldFour = b(0x86, 0, 0, 0, 20, pkesk, newFive);
  for (const [name, bytes] of Object.entries({ newDefinite, newFive, newPartial, oldOne, oldTwo, oldFour })) {
    assert.deepEqual(Buffer.from(encryptedDataBody(bytes)!), Buffer.from(body), name);
  }
  assert.deepEqual(splitPackets(newPartial)!.map((p) => [p.tag, p.body.length]), [[1, 20], [18, 700]]);
  assert.deepEqual(splitPackets(b(0x87, pkesk))!.map((p) => [p.tag, p.body.length]), [[1, 20]], 'old indeterminate length');
  assert.equal(encryptedDataBody(b(0xc1, 20, pkesk)), null, 'no encrypted data packet');
  assert.equal(splitPackets(b(0xc1, 50, pkesk)), null, 'length past the end');
  assert.equal(splitPackets(b(0x01, 2, 3)), null, 'not a packet header');
  assert.equal(splitPackets(b(0xd2, 0xe9, body.subarray(0, 100))), null, 'partial chunk cut short');
});
