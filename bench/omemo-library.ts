// Baseline: libsignal-protocol-typescript as shipped (its default WebCrypto and asm.js curve), driven
// through its own API with a minimal in-memory StorageType (records kept as the JSON strings the
// library produces).
import {
  KeyHelper,
  SessionBuilder,
  SessionCipher,
  SignalProtocolAddress,
  type DeviceType,
} from '@privacyresearch/libsignal-protocol-typescript';
import { MemStore } from '../test/harness/libsignal-memstore.js';
import { randomBytes } from 'node:crypto';
import { sample } from './stats.js';

interface LibPeer {
  store: MemStore;
  bundle(preKeyId: number): DeviceType;
}

async function libPeer(preKeys: number): Promise<LibPeer> {
  const ik = await KeyHelper.generateIdentityKeyPair();
  const store = new MemStore(ik, KeyHelper.generateRegistrationId());
  const spk = await KeyHelper.generateSignedPreKey(ik, 1);
  await store.storeSignedPreKey(1, spk.keyPair);
  const pubs = new Map<number, ArrayBuffer>();
  for (let i = 1; i <= preKeys; i++) {
    const pk = await KeyHelper.generatePreKey(i);
    await store.storePreKey(i, pk.keyPair);
    pubs.set(i, pk.keyPair.pubKey);
  }
  return {
    store,
    bundle: (id) => ({
      identityKey: ik.pubKey,
      registrationId: store.rid,
      signedPreKey: { keyId: 1, publicKey: spk.keyPair.pubKey, signature: spk.signature },
      preKey: { keyId: id, publicKey: pubs.get(id)! },
    }),
  };
}

const keyMaterial = (): ArrayBuffer => new Uint8Array(randomBytes(32)).buffer;

export interface Samples {
  buildInitiator: number[];
  buildResponder: number[];
  encrypt1: number[];
  decrypt1: number[];
  /** Per message to 3 devices (the sum of three encryptions). */
  encrypt3: number[];
  /** Per message, each of the 3 devices decrypting its key (sum). */
  decrypt3: number[];
  encryptTurn: number[];
  decryptTurn: number[];
}

export interface Sizes {
  build: number;
  steady: number;
  three: number;
  pingpong: number;
}

/** Library as shipped: X3DH + ratchet only (no payload cipher, XML or storage beyond a Map). */
export async function benchLibrary(n: Sizes): Promise<Samples> {
  const alice = await libPeer(1);
  const bob = await libPeer(n.build + 8);
  const addr = (name: string, id: number) => new SignalProtocolAddress(name, id);
  // Session builds: each one with a fresh address, a new prekey of Bob's.
  const first: Array<{ i: number; body: string }> = [];
  const buildInitiator = await sample(n.build, async (i) => {
    await new SessionBuilder(alice.store, addr(`bob${i}`, 1)).processPreKey(bob.bundle(i + 1));
  });
  for (let i = 0; i < n.build; i++) first.push({ i, body: (await new SessionCipher(alice.store, addr(`bob${i}`, 1)).encrypt(keyMaterial())).body! });
  const buildResponder = await sample(n.build, async (k) => {
    await new SessionCipher(bob.store, addr(`alice${k}`, 2)).decryptPreKeyWhisperMessage(first[k]!.body, 'binary');
  });

  // A confirmed session alice -> bob0 / bob -> alice0.
  const ab = new SessionCipher(alice.store, addr('bob0', 1));
  const ba = new SessionCipher(bob.store, addr('alice0', 2));
  await ab.decryptWhisperMessage((await ba.encrypt(keyMaterial())).body!, 'binary');
  const steady = async (count: number) => {
    const bodies: string[] = [];
    const enc = await sample(count, async () => bodies.push((await ab.encrypt(keyMaterial())).body!));
    const dec = await sample(count, async (i) => ba.decryptWhisperMessage(bodies[i]!, 'binary'));
    return { enc, dec };
  };
  await steady(Math.min(50, n.steady));
  const s1 = await steady(n.steady);

  // Three devices: three receiving stores, sessions confirmed.
  const devs = [bob, await libPeer(2), await libPeer(2)];
  const to3 = devs.map((_, d) => new SessionCipher(alice.store, addr(`three${d}`, 10 + d)));
  const from3 = devs.map((p) => new SessionCipher(p.store, addr('alice-three', 2)));
  for (let d = 0; d < 3; d++) {
    await new SessionBuilder(alice.store, addr(`three${d}`, 10 + d)).processPreKey(devs[d]!.bundle(d === 0 ? n.build + 1 : 1));
    await from3[d]!.decryptPreKeyWhisperMessage((await to3[d]!.encrypt(keyMaterial())).body!, 'binary');
    await to3[d]!.decryptWhisperMessage((await from3[d]!.encrypt(keyMaterial())).body!, 'binary');
  }
  const msgs3: string[][] = [];
  const encrypt3 = await sample(n.three, async () => {
    const km = keyMaterial();
    const out: string[] = [];
    for (const c of to3) out.push((await c.encrypt(km)).body!);
    msgs3.push(out);
  });
  const decrypt3 = await sample(n.three, async (i) => {
    for (let d = 0; d < 3; d++) await from3[d]!.decryptWhisperMessage(msgs3[i]![d]!, 'binary');
  });

  // Ping-pong: every message starts a new sending chain, every receive turns the ratchet.
  const encryptTurn: number[] = [];
  const decryptTurn: number[] = [];
  for (let i = 0; i < n.pingpong; i++) {
    const [x, y] = i % 2 === 0 ? [ab, ba] : [ba, ab];
    let t = performance.now();
    const m = await x.encrypt(keyMaterial());
    encryptTurn.push(performance.now() - t);
    t = performance.now();
    await y.decryptWhisperMessage(m.body!, 'binary');
    decryptTurn.push(performance.now() - t);
  }
  return { buildInitiator, buildResponder, encrypt1: s1.enc, decrypt1: s1.dec, encrypt3, decrypt3, encryptTurn, decryptTurn };
}
