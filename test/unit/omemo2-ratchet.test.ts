// OMEMO 2's building blocks against Debian's python-twomemo / python-doubleratchet / python-xeddsa
// (test/interop/twomemo_ratchet.py): known answers for the root and message-chain KDFs, the message
// AEAD and the payload cipher on random inputs, XEdDSA signatures that python verifies, and a
// Double Ratchet session with python as initiator, both ways, with out-of-order delivery.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import * as dr from '../../bridges/ratchet/double-ratchet.js';
import { ed25519Verify, ed25519PubToX25519, generateX25519, x25519Public, xeddsaPublic, xeddsaSign } from '../../bridges/ratchet/primitives.js';
import { OMEMO2, omemo2Codec, decodeKeyExchange, encodeKeyExchange } from '../../bridges/omemo2/messages.js';
import { openPayload, sealPayload } from '../../bridges/omemo2/payload.js';
import { decode, encode } from '../../bridges/ratchet/protobuf.js';
import { OMEMO_PYTHON } from '../harness/omemo-user.js';

const py = spawn(OMEMO_PYTHON, ['test/interop/twomemo_ratchet.py'], { stdio: ['pipe', 'pipe', 'inherit'] });
const lines = createInterface({ input: py.stdout });
const waiting: Array<(l: string) => void> = [];
lines.on('line', (l) => waiting.shift()?.(l));
after(() => py.kill());

const b64 = (x: Buffer) => x.toString('base64');
const ub = (x: string) => Buffer.from(x, 'base64');
function ask(cmd: Record<string, unknown>): Promise<Record<string, any>> {
  return new Promise((resolve) => {
    waiting.push((l) => resolve(JSON.parse(l)));
    py.stdin.write(JSON.stringify(cmd) + '\n');
  });
}

test('root and message-chain KDFs match python-twomemo', async () => {
  for (let i = 0; i < 5; i++) {
    const rk = randomBytes(32);
    const dh = randomBytes(32);
    const ck = randomBytes(32);
    const r = await ask({ op: 'kdf', rk: b64(rk), dh: b64(dh), ck: b64(ck) });
    const [rk2, ck2] = dr.kdfRk(OMEMO2, rk, dh);
    assert.equal(b64(Buffer.concat([rk2, ck2])), r.root);
    const [next, mk] = dr.kdfCk(ck);
    assert.equal(b64(Buffer.concat([next, mk])), r.chain);
  }
});

test('message AEAD and OMEMOMessage framing match python-twomemo byte for byte', async () => {
  for (const len of [0, 1, 15, 16, 48, 200]) {
    const mk = randomBytes(32);
    const ad = randomBytes(64);
    const dh = randomBytes(32);
    const pt = randomBytes(len);
    const header = { dh, n: len * 7, pn: len === 0 ? 0 : 300 + len };
    const r = await ask({ op: 'aead', mk: b64(mk), ad: b64(ad), dh: b64(dh), n: header.n, pn: header.pn, pt: b64(pt) });
    assert.equal(b64(dr.sealWithKey(OMEMO2, mk, header, pt, ad)), r.wire, `plaintext of ${len} bytes`);
    const opened = omemo2Codec.open(ub(r.wire));
    assert.ok(opened);
    assert.deepEqual({ ...opened.header, dh: b64(opened.header.dh) }, { ...header, dh: b64(dh) });
  }
});

test('payload cipher: python-twomemo opens ours; a flipped bit fails the MAC on both sides', async () => {
  const pt = Buffer.from('<envelope xmlns="urn:xmpp:sce:1"><content/></envelope>');
  const s = sealPayload(pt);
  const r = await ask({ op: 'payload_open', key: b64(s.keyMaterial.subarray(0, 32)), tag: b64(s.keyMaterial.subarray(32)), ct: b64(s.payload) });
  assert.equal(r.pt, b64(pt));
  const bad = Buffer.from(s.payload);
  bad[3]! ^= 1;
  assert.match((await ask({ op: 'payload_open', key: b64(s.keyMaterial.subarray(0, 32)), tag: b64(s.keyMaterial.subarray(32)), ct: b64(bad) })).error, /Authentication/);
  assert.deepEqual(openPayload(s.keyMaterial, bad), { ok: false, reason: 'bad-mac' });
  assert.deepEqual(openPayload(s.keyMaterial, s.payload), { ok: true, plaintext: pt });
});

test('XEdDSA: our Ed25519 form of an X25519 identity and our signatures are python-xeddsa\'s', async () => {
  for (let i = 0; i < 5; i++) {
    const { priv, pub } = generateX25519();
    const msg = randomBytes(32);
    const sig = xeddsaSign(priv, msg);
    const r = await ask({ op: 'xeddsa', priv: b64(priv), msg: b64(msg), sig: b64(sig), pub: b64(xeddsaPublic(priv)) });
    // python keeps the point's own sign; XEdDSA publishes the one with sign bit 0.
    const theirs = ub(r.ed_pub);
    theirs[31]! &= 0x7f;
    assert.equal(b64(xeddsaPublic(priv)), b64(theirs));
    assert.equal(b64(pub), r.x_pub);
    assert.equal(b64(x25519Public(priv)), r.x_pub);
    assert.equal(r.valid, true);
    assert.ok(ed25519Verify(xeddsaPublic(priv), msg, sig), 'node:crypto verifies it as Ed25519');
    assert.equal(b64(ed25519PubToX25519(xeddsaPublic(priv))), b64(pub), 'Montgomery form maps back');
    const bad = Buffer.from(sig);
    bad[10]! ^= 4;
    assert.ok(!ed25519Verify(xeddsaPublic(priv), msg, bad));
  }
});

test('a Double Ratchet session with python-doubleratchet as initiator: both ways, out of order, turns', async () => {
  const sk = randomBytes(32);
  const spk = generateX25519();
  const ad = randomBytes(64);
  const pts = [0, 1, 2].map(() => randomBytes(48));
  const { wires } = await ask({ op: 'alice', sk: b64(sk), spk_pub: b64(spk.pub), ad: b64(ad), pts: pts.map(b64) });
  let bob = dr.respond(sk, spk);
  // Out of order: 2 then 0 then 1.
  for (const i of [2, 0, 1]) {
    const r = dr.decrypt(OMEMO2, bob, ub(wires[i]), ad);
    assert.equal(b64(r.plaintext), b64(pts[i]!));
    bob = r.state;
  }
  assert.throws(() => dr.decrypt(OMEMO2, bob, ub(wires[1]), ad), (e: unknown) => e instanceof dr.RatchetError && (e.reason === 'duplicate' || e.reason === 'bad-mac'));
  for (let round = 0; round < 4; round++) {
    const ours = [0, 1, 2].map(() => randomBytes(32 + round));
    const sent = ours.map((pt) => dr.encrypt(OMEMO2, bob, pt, ad).wire);
    for (const i of [1, 2, 0]) assert.equal((await ask({ op: 'decrypt', wire: b64(sent[i]!) })).pt, b64(ours[i]!));
    const theirs = randomBytes(40);
    const w = (await ask({ op: 'encrypt', pt: b64(theirs) })).wire as string;
    const r = dr.decrypt(OMEMO2, bob, ub(w), ad);
    assert.equal(r.turned, true, 'a reply after ours turns the ratchet');
    assert.equal(b64(r.plaintext), b64(theirs));
    bob = dr.fromStored(JSON.parse(JSON.stringify(dr.toStored(r.state))));
  }
  // A tampered message changes nothing.
  const w = ub((await ask({ op: 'encrypt', pt: b64(randomBytes(48)) })).wire);
  const bad = Buffer.from(w);
  bad[bad.length - 1]! ^= 1;
  assert.throws(() => dr.decrypt(OMEMO2, bob, bad, ad), (e: unknown) => e instanceof dr.RatchetError && e.reason === 'bad-mac');
  assert.ok(dr.decrypt(OMEMO2, bob, w, ad).plaintext.length === 48, 'the untampered message still decrypts');
});

test('a remembered signature check: only the exact key, message and signature that verified pass without a check', () => {
  const priv = generateX25519().priv;
  const pub = xeddsaPublic(priv);
  const msg = randomBytes(33);
  const sig = xeddsaSign(priv, msg);
  const flip = (b: Buffer, i: number) => {
    const c = Buffer.from(b);
    c[i]! ^= 1;
    return c;
  };
  // A bad signature is refused, and refused again (failures are not remembered as anything).
  for (let i = 0; i < 2; i++) assert.ok(!ed25519Verify(pub, msg, flip(sig, 5)));
  assert.ok(ed25519Verify(pub, msg, sig), 'the good one verifies');
  assert.ok(ed25519Verify(pub, msg, sig), 'and again (remembered)');
  assert.ok(ed25519Verify(pub, Buffer.from(msg), Buffer.from(sig)), 'equal bytes in other buffers');
  // Anything else is checked: another message, another signature, another key, the same bytes shifted.
  assert.ok(!ed25519Verify(pub, flip(msg, 0), sig));
  assert.ok(!ed25519Verify(pub, msg, flip(sig, 63)));
  assert.ok(!ed25519Verify(xeddsaPublic(generateX25519().priv), msg, sig));
  assert.ok(!ed25519Verify(pub, msg.subarray(1), Buffer.concat([sig.subarray(1), msg.subarray(0, 1)])));
  // Views into a larger buffer read only their own bytes.
  const big = Buffer.concat([randomBytes(7), pub, sig, msg]);
  assert.ok(ed25519Verify(big.subarray(7, 39), big.subarray(103), big.subarray(39, 103)));
  assert.ok(!ed25519Verify(big.subarray(7, 39), big.subarray(104), big.subarray(39, 103)));
  // Without recall the check is made, with the same answers.
  assert.ok(ed25519Verify(pub, msg, sig, false));
  assert.ok(!ed25519Verify(pub, flip(msg, 3), sig, false));
});

test('skipping is bounded per message', () => {
  const sk = randomBytes(32);
  const spk = generateX25519();
  const ad = randomBytes(64);
  const alice = dr.initiate(OMEMO2, sk, spk.pub);
  let last: Buffer | null = null;
  for (let i = 0; i < 1002; i++) last = dr.encrypt(OMEMO2, alice, Buffer.alloc(32), ad).wire;
  assert.throws(() => dr.decrypt(OMEMO2, dr.respond(sk, spk), last!, ad), (e: unknown) => e instanceof dr.RatchetError && e.reason === 'too-many-skipped');
});

test('protobuf framing: key exchange round trip, malformed input is null', () => {
  const k = { pkId: 0, spkId: 7, ik: randomBytes(32), ek: randomBytes(32), message: randomBytes(60) };
  assert.deepEqual(decodeKeyExchange(encodeKeyExchange(k)), k);
  const enc = encodeKeyExchange(k);
  assert.equal(decodeKeyExchange(enc.subarray(0, enc.length - 1)), null, 'truncated');
  assert.equal(decodeKeyExchange(Buffer.from([0x0d, 1, 2, 3, 4])), null, 'fixed32 wire type');
  assert.equal(decode(Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), null, 'over-long varint');
  assert.deepEqual(decode(encode([{ no: 1, value: 0xffffffff }]))?.get(1), 0xffffffff);
  assert.equal(omemo2Codec.open(randomBytes(40)), null);
});
