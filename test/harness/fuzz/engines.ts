// The engines the fuzz test drives (test/scenario/fuzz.test.ts), each with a source of valid
// messages made by an engine of ours acting as a remote client, and mutators of its own.
//
// To add an engine (OMEMO 2, ...): write a FuzzEngine below and add it to FUZZ_ENGINES.
//   - setup() prepares one or more remote senders against the running gateway (their keys, any
//     registration the gateway needs) and returns a FuzzSource;
//   - FuzzSource.message(to, body) returns a valid stanza carrying `body` from one of its senders, as
//     it would come off the wire (the harness sends it first, then its mutants);
//   - FuzzSource.mutators: changes only this protocol knows how to make (fields outside its MAC,
//     packets of other versions, another sender replaying it...). Generic ones (bit flips,
//     truncation, bad base64, absurd attributes, missing or repeated elements, odd JIDs) apply anyway.
// The harness asserts for every engine alike: no exception or unhandled rejection, every body
// reaches the bot's webhook at most once and only from the sender who encrypted it, no plaintext
// body leaves the gateway, memory stays bounded.
import { Keystore } from '../../../keystore/keystore.js';
import { createProtocolStore } from '../../../keystore/protocol-store.js';
import { TrustStore } from '../../../keystore/trust-store.js';
import { ContactStore } from '../../../keystore/contact-store.js';
import { Metrics } from '../../../http/metrics.js';
import { createLogger } from '../../../log.js';
import { parseXml, xml, type Element } from '../../../component/xml.js';
import { createOmemoEngine } from '../../../bridges/omemo/engine.js';
import { createOxEngine } from '../../../bridges/ox/engine.js';
import { createOtrEngine } from '../../../bridges/otr/engine.js';
import { ReplayGuard } from '../../../bridges/pgp/replay-guard.js';
import { ReplayStore } from '../../../keystore/replay-store.js';
import { NS_OMEMO } from '../../../bridges/omemo/constants.js';
import { createOmemo2Engine } from '../../../bridges/omemo2/engine.js';
import { NS_OMEMO2 } from '../../../bridges/omemo2/constants.js';
import { makeRig } from '../../unit/pgp-setup.js';
import type { Scenario } from '../scenario.js';
import { TEST_KDF } from '../gateway.js';
import { RemoteUsers, silentSink } from './remote.js';
import { setText, type Mutator } from './mutate.js';
import type { Rng } from './rng.js';

export interface FuzzSource {
  /** A valid message carrying `body` to `to`, and the bare JID of its (real) sender. */
  message(to: string, body: string): Promise<{ stanza: Element; from: string }>;
  mutators: Record<string, Mutator>;
  /** Waits for the source's own background work (e.g. decrypting what the gateway sent it). */
  close(): Promise<void>;
}

export interface FuzzEngine {
  name: string;
  /**
   * Whether every valid message must reach the webhook despite the mutants around it (set false
   * only for a known, reported bug that loses some, and say which).
   */
  deliversEvery: boolean;
  setup(s: Scenario, remote: RemoteUsers): Promise<FuzzSource>;
}

const stanza = (from: string, to: string, children: Element[], id: string): Element =>
  parseXml(xml('message', { from, to, type: 'chat', id }, ...children).toString());

let ids = 0;
const nextId = () => `fz-m-${++ids}`;

/** Resolves once the gateway answered a ping sent now: what was injected before has been read. */
async function pingRoundTrip(s: Scenario, timeoutMs = 60_000): Promise<void> {
  const id = `fz-quiet-${++ids}`;
  const mark = s.server.received.length;
  s.server.inject(xml('iq', { type: 'get', id, from: 'settle@example.org/x', to: s.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  const deadline = Date.now() + timeoutMs;
  while (!s.server.received.slice(mark).some((e) => e.attrs.id === id)) {
    if (Date.now() > deadline) throw new Error('fuzz: the gateway did not answer a ping');
    await new Promise((r) => setTimeout(r, 2));
  }
  while (!s.gateway.idle()) await new Promise((r) => setTimeout(r, 2));
}

// ---- legacy OMEMO (XEP-0384 v0.3.0) ----

/** Rewrites a varint field of a PreKeyWhisperMessage (fields outside the MAC: 1, 5, 6). */
export function rewriteVarint(msg: Buffer, field: number, value: number): Buffer | null {
  const out: number[] = [msg[0]!];
  let pos = 1;
  const varint = (): number | null => {
    let v = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (pos >= msg.length) return null;
      const b = msg[pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
    }
    return null;
  };
  const put = (v: number) => {
    do {
      let b = v % 128;
      v = Math.floor(v / 128);
      if (v > 0) b |= 0x80;
      out.push(b);
    } while (v > 0);
  };
  let found = false;
  while (pos < msg.length) {
    const tag = varint();
    if (tag === null) return null;
    put(tag);
    if ((tag & 7) === 0) {
      const v = varint();
      if (v === null) return null;
      put(Math.floor(tag / 8) === field ? ((found = true), value) : v);
    } else if ((tag & 7) === 2) {
      const len = varint();
      if (len === null || pos + len > msg.length) return null;
      put(len);
      out.push(...msg.subarray(pos, pos + len));
      pos += len;
    } else return null;
  }
  return found ? Buffer.from(out) : null;
}

const keysOf = (el: Element): Element[] => el.getChild('encrypted', NS_OMEMO)?.getChild('header')?.getChildren('key') ?? [];

function preKeyField(field: number, name: string): Mutator {
  return (el, rng) => {
    let n = 0;
    for (const k of keysOf(el)) {
      if (!k.attrs.prekey) continue;
      const b = rewriteVarint(Buffer.from(k.getText(), 'base64'), field, rng.pick([0, 1, 2, 4242, 0x7fffffff, 0xffffffff]));
      if (b) {
        setText(k, b.toString('base64'));
        n++;
      }
    }
    return n > 0 ? `${name} changed (outside the MAC)` : `${name}: no PreKey message (unchanged)`;
  };
}

const omemoMutators = (replayer: string): Record<string, Mutator> => ({
  'registrationId changed': preKeyField(5, 'registrationId'),
  'preKeyId changed': preKeyField(1, 'preKeyId'),
  'signedPreKeyId changed': preKeyField(6, 'signedPreKeyId'),
  'prekey attribute toggled': (el) => {
    for (const k of keysOf(el)) {
      if (k.attrs.prekey) delete k.attrs.prekey;
      else k.attrs.prekey = 'true';
    }
    return 'prekey toggled';
  },
  'sid changed': (el, rng) => {
    const h = el.getChild('encrypted', NS_OMEMO)?.getChild('header');
    if (h) h.attrs.sid = String(rng.pick([1, 2, 0x7fffffff, 123456789]));
    return 'sid changed';
  },
  'replayed by another user': (el) => {
    el.attrs.from = `${replayer}/laptop`;
    return `from ${replayer}`;
  },
  'replayed by another user with registrationId changed': (el, rng) => {
    el.attrs.from = `${replayer}/laptop`;
    return preKeyField(5, 'registrationId')(el, rng);
  },
  'other resource': (el) => {
    el.attrs.from = String(el.attrs.from).replace(/\/.*$/, '/other');
    return 'other resource of the sender';
  },
});

export const omemoLegacy: FuzzEngine = {
  name: 'omemo',
  deliversEvery: true,
  async setup(_s, remote) {
    const ALICE = 'alice@example.org';
    const ks = Keystore.open(':memory:', 'fuzz-remote-passphrase', { kdf: TEST_KDF });
    const engine = createOmemoEngine({
      store: createProtocolStore(ks, 'omemo'),
      trust: new TrustStore(ks, 'btbv'),
      contacts: new ContactStore(ks),
      keystore: ks,
      pubsub: remote.port(ALICE, 'phone'),
      metrics: new Metrics({ processMetrics: false }),
      log: createLogger('silent', silentSink()),
      now: () => Date.now(),
      resource: 'phone',
    });
    await engine.ensureIdentity(ALICE);
    const background = new Set<Promise<unknown>>();
    // What the gateway sends alice (key transports after a PreKey message...) goes to her engine, so
    // her later messages are normal ones, as with a real client.
    remote.onMessage(ALICE, (el) => {
      if (!el.getChild('encrypted', NS_OMEMO) || el.attrs.type === 'error') return;
      const p = engine.decrypt(ALICE, parseXml(el.toString())).catch(() => undefined);
      background.add(p);
      void p.then(() => background.delete(p));
    });
    return {
      async message(to, body) {
        const enc = await engine.encrypt(ALICE, to, body);
        return { stanza: stanza(`${ALICE}/phone`, to, enc.children, nextId()), from: ALICE };
      },
      mutators: omemoMutators('mallory@example.org'),
      async close() {
        await Promise.all(background);
        ks.close();
      },
    };
  },
};

// ---- OMEMO 2 (XEP-0384 v0.8+, urn:xmpp:omemo:2) ----

export const omemo2: FuzzEngine = {
  name: 'omemo2',
  deliversEvery: true,
  async setup(_s, remote) {
    const OLGA = 'olga@example.org';
    const ks = Keystore.open(':memory:', 'fuzz-remote-passphrase', { kdf: TEST_KDF });
    const trust = new TrustStore(ks, 'btbv');
    const portsFor = (id: 'omemo' | 'omemo2') => ({
      store: createProtocolStore(ks, id),
      trust,
      contacts: new ContactStore(ks),
      keystore: ks,
      pubsub: remote.port(OLGA, 'tablet'),
      metrics: new Metrics({ processMetrics: false }),
      log: createLogger('silent', silentSink()),
      now: () => Date.now(),
      resource: 'tablet',
    });
    const legacy = createOmemoEngine(portsFor('omemo'));
    const engine = createOmemo2Engine(portsFor('omemo2'), {
      legacy,
      identity: async (local) => {
        const id = await legacy.internals.keyring.ensure(local);
        return { deviceId: id.deviceId, priv: Buffer.from(id.keyPair.privKey) };
      },
    });
    await engine.ensureIdentity(OLGA);
    const background = new Set<Promise<unknown>>();
    remote.onMessage(OLGA, (el) => {
      if (el.attrs.type === 'error') return;
      const target = el.getChild('encrypted', NS_OMEMO2) ? engine : el.getChild('encrypted', NS_OMEMO) ? legacy : null;
      if (!target) return;
      const p = target.decrypt(OLGA, parseXml(el.toString())).catch(() => undefined);
      background.add(p);
      void p.then(() => background.delete(p));
    });
    return {
      async message(to, body) {
        const enc = await engine.encrypt(OLGA, to, body);
        const st = stanza(`${OLGA}/tablet`, to, enc.children, nextId());
        if (!st.getChild('encrypted', NS_OMEMO2)) throw new Error('the OMEMO 2 source did not produce an OMEMO 2 message');
        return { stanza: st, from: OLGA };
      },
      mutators: {
        'replayed by another user': (el) => {
          el.attrs.from = 'mallory@example.org/laptop';
          return 'from mallory';
        },
        'other resource': (el) => {
          el.attrs.from = String(el.attrs.from).replace(/\/.*$/, '/other');
          return 'other resource of the sender';
        },
        'kex attribute toggled': (el) => {
          for (const k of el.getChild('encrypted', NS_OMEMO2)?.getChild('header')?.getChildren('keys').flatMap((ks) => ks.getChildren('key')) ?? []) {
            if (k.attrs.kex) delete k.attrs.kex;
            else k.attrs.kex = 'true';
          }
          return 'kex toggled';
        },
      },
      async close() {
        await Promise.all(background);
        ks.close();
      },
    };
  },
};

// ---- XEP-0027 (legacy OpenPGP) ----

/** OpenPGP packets (RFC 4880 §4.2) as [offset of body, body length] pairs; null if unreadable. */
function packets(b: Buffer): Array<[number, number]> | null {
  try {
    return packetsUnsafe(b);
  } catch {
    return null; // a header running past the end (the bytes may be a mutant already)
  }
}

function packetsUnsafe(b: Buffer): Array<[number, number]> | null {
  const out: Array<[number, number]> = [];
  let pos = 0;
  while (pos < b.length) {
    const tag = b[pos]!;
    if ((tag & 0x80) === 0) return null;
    let len: number;
    let hdr: number;
    if (tag & 0x40) {
      const l0 = b[pos + 1];
      if (l0 === undefined) return null;
      if (l0 < 192) [len, hdr] = [l0, 2];
      else if (l0 < 224) [len, hdr] = [((l0 - 192) << 8) + (b[pos + 2] ?? 0) + 192, 3];
      else if (l0 === 255) {
        if (pos + 6 > b.length) return null;
        [len, hdr] = [b.readUInt32BE(pos + 2), 6];
      }
      else return null; // partial lengths: not worth following here
    } else {
      const lt = tag & 3;
      if (lt === 3) return null;
      hdr = 1 + [1, 2, 4][lt]!;
      if (pos + hdr > b.length) return null;
      len = lt === 0 ? b[pos + 1]! : lt === 1 ? b.readUInt16BE(pos + 1) : b.readUInt32BE(pos + 1);
    }
    if (pos + hdr + len > b.length) return null;
    out.push([pos + hdr, len]);
    pos += hdr + len;
  }
  return out;
}

const pgpX = (el: Element): Element | undefined => el.getChild('x', 'jabber:x:encrypted');
const pgpBytes = (x: Element): Buffer => Buffer.from(x.getText().split(/\n=/)[0]!.replace(/\s/g, ''), 'base64');

const pgpMutators = (replayer: string): Record<string, Mutator> => ({
  'packet of another version': (el, rng) => {
    const x = pgpX(el);
    if (!x) return 'no payload (unchanged)';
    const b = pgpBytes(x);
    const ps = packets(b);
    if (!ps || ps.length === 0) return 'packets unreadable (unchanged)';
    const [off] = rng.pick(ps);
    b[off] = rng.pick([2, 3, 4, 5, 6, 0, 255]);
    setText(x, b.toString('base64'));
    return `packet at ${off}: version ${b[off]}`;
  },
  'a recipient packet dropped (outside the integrity check)': (el) => {
    const x = pgpX(el);
    if (!x) return 'no payload (unchanged)';
    const b = pgpBytes(x);
    const ps = packets(b);
    if (!ps || ps.length < 2) return 'one packet (unchanged)';
    // the first packet starts at 0: drop everything up to the second one's header
    const [off, len] = ps[0]!;
    setText(x, b.subarray(off + len).toString('base64'));
    return 'first PKESK dropped';
  },
  'armor re-wrapped': (el, rng) => {
    const x = pgpX(el);
    if (!x) return 'no payload (unchanged)';
    const n = rng.pick([16, 64, 76, 1000]);
    setText(x, pgpBytes(x).toString('base64').replace(new RegExp(`(.{${n}})`, 'g'), '$1\n'));
    return `re-wrapped at ${n}`;
  },
  'CRC changed': (el) => {
    const x = pgpX(el);
    if (!x) return 'no payload (unchanged)';
    setText(x, `${pgpBytes(x).toString('base64')}\n=AAAA`);
    return 'CRC line wrong';
  },
  'replayed by another user': (el) => {
    el.attrs.from = `${replayer}/pc`;
    return `from ${replayer}`;
  },
  'other resource': (el) => {
    el.attrs.from = String(el.attrs.from).replace(/\/.*$/, '/other');
    return 'other resource of the sender';
  },
});

export const xep0027: FuzzEngine = {
  name: 'pgp',
  deliversEvery: true,
  async setup(s) {
    const CAROL = 'carol@legacy.example';
    const rig = makeRig();
    const gw = s.gateway.pgp!;
    const seen = new Set<string>();
    return {
      async message(to, body) {
        if (!seen.has(to)) {
          seen.add(to);
          await rig.engine.registerContactKey(to, await gw.publicKeyArmored(to), { viaAdmin: true });
          if (seen.size === 1) await gw.registerContactKey(CAROL, await rig.engine.publicKeyArmored(CAROL), { viaAdmin: true });
        }
        const enc = await rig.engine.encrypt(CAROL, to, body);
        return { stanza: stanza(`${CAROL}/pc`, to, enc.children, nextId()), from: CAROL };
      },
      mutators: pgpMutators('dave@legacy.example'),
      async close() {
        rig.ks.close();
      },
    };
  },
};

// ---- OX (XEP-0373/0374) ----

const oxEl = (el: Element): Element | undefined => el.getChild('openpgp', 'urn:xmpp:openpgp:0');
const oxBytes = (x: Element): Buffer => Buffer.from(x.getText().replace(/\s/g, ''), 'base64');

const oxMutators = (replayer: string): Record<string, Mutator> => ({
  'packet of another version': (el, rng) => {
    const x = oxEl(el);
    if (!x) return 'no payload (unchanged)';
    const b = oxBytes(x);
    const ps = packets(b);
    if (!ps || ps.length === 0) return 'packets unreadable (unchanged)';
    const [off] = rng.pick(ps);
    b[off] = rng.pick([2, 3, 4, 5, 6, 0, 255]);
    setText(x, b.toString('base64'));
    return `packet at ${off}: version ${b[off]}`;
  },
  'a recipient packet dropped (outside the integrity check)': (el) => {
    const x = oxEl(el);
    if (!x) return 'no payload (unchanged)';
    const b = oxBytes(x);
    const ps = packets(b);
    if (!ps || ps.length < 2) return 'one packet (unchanged)';
    const [off, len] = ps[0]!;
    const hdrStart = off - (b[0]! & 0x40 ? (b[1]! < 192 ? 2 : 3) : 1 + [1, 2, 4][b[0]! & 3]!);
    setText(x, Buffer.concat([b.subarray(0, hdrStart), b.subarray(off + len)]).toString('base64'));
    return 'first PKESK dropped';
  },
  'base64 wrapped': (el, rng) => {
    const x = oxEl(el);
    if (!x) return 'no payload (unchanged)';
    const n = rng.pick([1, 64, 76, 1000]);
    setText(x, oxBytes(x).toString('base64').replace(new RegExp(`(.{${n}})`, 'g'), '$1\n'));
    return `wrapped at ${n}`;
  },
  'armored instead of base64': (el) => {
    const x = oxEl(el);
    if (!x) return 'no payload (unchanged)';
    setText(x, `-----BEGIN PGP MESSAGE-----\n\n${oxBytes(x).toString('base64')}\n-----END PGP MESSAGE-----`);
    return 'armored';
  },
  'old <delay> stamp': (el, rng) => {
    el.cnode(xml('delay', { xmlns: 'urn:xmpp:delay', stamp: rng.pick(['1970-01-01T00:00:00Z', '2999-01-01T00:00:00Z', 'garbage', '']) }));
    return 'delay stamp added';
  },
  'two <openpgp> elements': (el) => {
    const x = oxEl(el);
    if (!x) return 'no payload (unchanged)';
    el.cnode(parseXml(x.toString()));
    return 'payload doubled';
  },
  'replayed by another user': (el) => {
    el.attrs.from = `${replayer}/laptop`;
    return `from ${replayer}`;
  },
  'other resource': (el) => {
    el.attrs.from = String(el.attrs.from).replace(/\/.*$/, '/other');
    return 'other resource of the sender';
  },
});

export const ox: FuzzEngine = {
  name: 'ox',
  deliversEvery: true,
  async setup(_s, remote) {
    const DAVE = 'dave@example.org';
    const ks = Keystore.open(':memory:', 'fuzz-remote-passphrase', { kdf: TEST_KDF });
    // Dave is an OX client: his key goes on his (remote) PEP nodes, where the gateway reads it;
    // his engine reads the hosted JIDs' keys through the gateway's pubsub service.
    const engine = createOxEngine(
      {
        store: createProtocolStore(ks, 'ox'),
        trust: new TrustStore(ks, 'btbv'),
        contacts: new ContactStore(ks),
        keystore: ks,
        pubsub: remote.port(DAVE, 'phone'),
        metrics: new Metrics({ processMetrics: false }),
        log: createLogger('silent', silentSink()),
        now: () => Date.now(),
        resource: 'phone',
      },
      { replay: new ReplayGuard(new ReplayStore(ks), 'pgp', 30, () => Date.now()), maxClockSkewMs: 600_000, plaintextAllowed: () => false },
    );
    await engine.ensureIdentity(DAVE);
    return {
      async message(to, body) {
        const enc = await engine.encrypt(DAVE, to, body);
        return { stanza: stanza(`${DAVE}/phone`, to, enc.children, nextId()), from: DAVE };
      },
      mutators: oxMutators('mallory@example.org'),
      async close() {
        ks.close();
      },
    };
  },
};

// ---- OTR (v3 and v2) ----

const otrBody = (el: Element): Element | undefined => el.getChild('body') ?? undefined;

const otrMutators = (replayer: string): Record<string, Mutator> => ({
  'instance tags changed': (el, rng) => {
    const b = otrBody(el);
    const m = b && /^\?OTR:([A-Za-z0-9+/=]+)\./.exec(b.getText());
    if (!b || !m) return 'not an encoded message (unchanged)';
    const bytes = Buffer.from(m[1]!, 'base64');
    if (bytes.length < 11 || bytes.readUInt16BE(0) !== 3) return 'not v3 (unchanged)';
    bytes.writeUInt32BE(rng.pick([0, 1, 0xff, 0x100, 0xffffffff]), rng.pick([3, 7]));
    setText(b, `?OTR:${bytes.toString('base64')}.`);
    return 'an instance tag changed';
  },
  'as v2': (el) => {
    const b = otrBody(el);
    const m = b && /^\?OTR:([A-Za-z0-9+/=]+)\./.exec(b.getText());
    if (!b || !m) return 'not an encoded message (unchanged)';
    const bytes = Buffer.from(m[1]!, 'base64');
    setText(b, `?OTR:${Buffer.concat([Buffer.from([0, 2]), bytes.subarray(2, 3), bytes.subarray(11)]).toString('base64')}.`);
    return 'v3 header rewritten as v2';
  },
  'split into fragments, one sent': (el, rng) => {
    const b = otrBody(el);
    if (!b) return 'no body (unchanged)';
    const t = b.getText();
    const n = rng.pick([2, 3, 7]);
    const k = rng.int(n) + 1;
    const size = Math.ceil(t.length / n);
    setText(b, rng.chance(0.5) ? `?OTR|00000100|00000000,${String(k).padStart(5, '0')},${String(n).padStart(5, '0')},${t.slice((k - 1) * size, k * size)},` : `?OTR,${k},${n},${t.slice((k - 1) * size, k * size)},`);
    return `fragment ${k} of ${n}`;
  },
  'odd fragment header': (el, rng) => {
    const b = otrBody(el);
    if (b) setText(b, rng.pick(['?OTR|zz|00,1,1,x,', '?OTR,0,0,,', '?OTR,65535,65535,x,', `?OTR,1,99999,${'A'.repeat(100)},`, '?OTR|ffffffff|ffffffff,00001,00001,?OTR:AAMD.,']));
    return 'odd fragment';
  },
  'whitespace tag appended': (el) => {
    const b = otrBody(el);
    if (b) setText(b, `${b.getText()} \t  \t\t\t\t \t \t \t    \t\t  \t\t`);
    return 'tag appended';
  },
  'query or error instead': (el, rng) => {
    const b = otrBody(el);
    if (b) setText(b, rng.pick(['?OTRv23?', '?OTRv2?', '?OTR?', '?OTRv?', '?OTR Error: fuzz', '?OTRv3456789?']));
    return 'protocol text';
  },
  'replayed by another user': (el) => {
    el.attrs.from = `${replayer}/laptop`;
    return `from ${replayer}`;
  },
  'other resource': (el) => {
    el.attrs.from = String(el.attrs.from).replace(/\/.*$/, '/other');
    return 'other resource of the sender';
  },
});

export const otr: FuzzEngine = {
  name: 'otr',
  deliversEvery: true,
  async setup(s, remote) {
    const OLIVE = 'olive@example.org';
    const ks = Keystore.open(':memory:', 'fuzz-remote-passphrase', { kdf: TEST_KDF });
    const engine = createOtrEngine({
      store: createProtocolStore(ks, 'otr'),
      trust: new TrustStore(ks, 'btbv'),
      contacts: new ContactStore(ks),
      keystore: ks,
      pubsub: remote.port(OLIVE, 'phone'),
      metrics: new Metrics({ processMetrics: false }),
      log: createLogger('silent', silentSink()),
      now: () => Date.now(),
      resource: 'phone',
    });
    // Olive answers what the gateway sends her phone (AKE steps, heartbeats, fresh AKEs after
    // mutants), one message at a time, as a client would; her replies go back through the server.
    let chain: Promise<unknown> = Promise.resolve();
    remote.onMessage(OLIVE, (el) => {
      if (String(el.attrs.to) !== `${OLIVE}/phone` || el.attrs.type === 'error') return;
      chain = chain.then(async () => {
        const r = await engine.decrypt(OLIVE, parseXml(el.toString())).catch(() => null);
        for (const reply of r?.replies ?? []) s.server.inject(parseXml(reply.toString()));
      });
    });
    const peers = new Set<string>();
    return {
      async message(to, body) {
        if (!peers.has(to)) {
          // A session first: Olive's query, and the AKE the gateway starts.
          s.server.inject(stanza(`${OLIVE}/phone`, to, [xml('body', {}, '?OTRv23?')], nextId()));
          const deadline = Date.now() + 30_000;
          while (!engine.hasSession(OLIVE, `${to}/gw`)) {
            if (Date.now() > deadline) throw new Error('fuzz: no OTR session with the gateway');
            await new Promise((r) => setTimeout(r, 20));
          }
          peers.add(to);
        }
        // A mutant (a query, a whitespace tag) may have started a fresh AKE. Let it finish, as a
        // client does before its user's next message goes out under the new keys: encrypted
        // under the keys the AKE is replacing, the message could not be read (and a real OTR
        // client would show it as not delivered). Quiet = Olive has nothing left to answer and
        // the gateway has read her last answer and written everything it had to say.
        for (;;) {
          const c = chain;
          await c;
          await pingRoundTrip(s);
          await pingRoundTrip(s); // its answer follows anything the gateway wrote to Olive before
          if (c === chain) break;
        }
        const enc = await engine.encrypt(OLIVE, to, body);
        return { stanza: stanza(`${OLIVE}/phone`, to, enc.children, nextId()), from: OLIVE };
      },
      mutators: otrMutators('mallory@example.org'),
      async close() {
        await chain;
        ks.close();
      },
    };
  },
};

/** Every engine the fuzz test drives, in order. Add new ones here (see the comment at the top). */
export const FUZZ_ENGINES: FuzzEngine[] = [omemoLegacy, omemo2, xep0027, ox, otr];

// ---- stanzas that are not messages: pubsub, disco, presence, commands ----

const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NODES = [
  'eu.siacs.conversations.axolotl.devicelist',
  'eu.siacs.conversations.axolotl.bundles:1',
  'eu.siacs.conversations.axolotl.bundles:-1',
  'eu.siacs.conversations.axolotl.bundles:99999999999999999999',
  'eu.siacs.conversations.axolotl.bundles:',
  'eu.siacs.conversations.axolotl.bundles:abc',
  'urn:xmpp:omemo:2:devices',
  'urn:xmpp:omemo:2:bundles',
  'urn:xmpp:openpgp:0:public-keys',
  'urn:xmpp:openpgp:0:public-keys:0000',
  'urn:xmpp:openpgp:0:public-keys:' + 'F'.repeat(40),
  '',
  'x'.repeat(5000),
  '../../etc/passwd',
  '\u202e',
];

/**
 * A request or presence with odd values, from an allowed sender unless `oddJids`. Returns the
 * stanza and whether the contract requires an answer (an iq get/set with addressable from/to).
 */
export function otherStanza(rng: Rng, domain: string, n: number, hosted: string[]): { el: Element; mustAnswer: boolean } {
  const from = rng.pick(['zoe@example.org/web', 'zoe@legacy.example/pc', 'eve@evil.test/x', `alice@example.org/${'r'.repeat(rng.pick([1, 1023]))}`]);
  const to = rng.pick([domain, ...hosted, `${rng.pick(hosted).split('@')[0]}@${domain}/res`]);
  const id = `fz-iq-${n}`;
  const pick = rng.int(10);
  if (pick <= 3) {
    // pubsub reads (and writes, which we do not allow)
    const node = rng.pick(NODES);
    const items = xml('items', { node, ...(rng.chance(0.5) ? { max_items: rng.pick(['1', '0', '-1', '1e9', 'abc', '', '99999999999999999999']) } : {}) });
    if (rng.chance(0.3)) items.cnode(xml('item', { id: rng.pick(['current', '', '1', 'x'.repeat(3000)]) }));
    const payload = rng.pick([
      () => xml('pubsub', { xmlns: NS_PUBSUB }, items),
      () => xml('pubsub', { xmlns: NS_PUBSUB }),
      () => xml('pubsub', { xmlns: NS_PUBSUB }, items, items),
      () => xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node }, xml('item', { id: 'current' }, xml('list', { xmlns: 'eu.siacs.conversations.axolotl' })))),
      () => xml('pubsub', { xmlns: NS_PUBSUB }, xml('subscribe', { node, jid: from })),
      () => xml('pubsub', { xmlns: `${NS_PUBSUB}#owner` }, xml('delete', { node })),
    ])();
    const type = payload.getChild('publish') || payload.getChild('subscribe') || payload.attrs.xmlns !== NS_PUBSUB ? 'set' : rng.pick(['get', 'get', 'set']);
    return { el: xml('iq', { type, id, from, to }, payload), mustAnswer: true };
  }
  if (pick <= 5) {
    const ns = rng.pick(['http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items', 'urn:xmpp:ping', 'jabber:iq:version', 'urn:xmpp:time', 'jabber:iq:last', 'vcard-temp', 'urn:fuzz']);
    const q = xml(ns === 'urn:xmpp:ping' ? 'ping' : ns === 'vcard-temp' ? 'vCard' : 'query', { xmlns: ns, ...(rng.chance(0.4) ? { node: rng.pick(NODES.concat(['http://example.org#abc', 'x'.repeat(2000)])) } : {}) });
    const kids = rng.pick([[q], [], [q, q], [q, xml('extra', { xmlns: 'urn:fuzz' })]]);
    return { el: xml('iq', { type: rng.pick(['get', 'get', 'set', 'bogus', '']), id, from, to }, ...kids), mustAnswer: true };
  }
  if (pick <= 7) {
    const type = rng.pick(['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed', 'probe', 'unavailable', undefined, 'bogus', 'error']);
    const p = xml('presence', { from, to: rng.chance(0.5) ? to.split('/')[0]! : to, ...(type ? { type } : {}), ...(rng.chance(0.3) ? { id } : {}) });
    if (rng.chance(0.4)) p.cnode(xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: rng.pick(['sha-1', 'md5', '', 'x']), node: 'http://fuzz', ver: rng.pick(['', '!!', 'AAAA', 'x'.repeat(500)]) }));
    if (rng.chance(0.3)) p.cnode(xml('x', { xmlns: 'jabber:x:signed' }, rng.pick(['', 'garbage', 'iQEzBAABCAAdFiEE', 'A'.repeat(10000)])));
    if (rng.chance(0.3)) p.cnode(xml('status', {}, rng.pick(['', 'Online', 'x'.repeat(5000)])));
    return { el: p, mustAnswer: false };
  }
  // messages to the domain (commands) and receipts/chat states to hosted JIDs
  const body = rng.pick(['help', 'key', `key ${rng.pick(hosted)}`, `fingerprints ${rng.pick(hosted)}`, 'fingerprints \\zz@gw', `key ${'x'.repeat(3000)}@${domain}`, 'register', 'register garbage', 'unregister', '']);
  const m = rng.chance(0.5)
    ? xml('message', { from, to: domain, type: 'chat', id }, xml('body', {}, body))
    : xml('message', { from, to: rng.pick(hosted), type: 'chat', id }, rng.pick([xml('received', { xmlns: 'urn:xmpp:receipts', id: 'x' }), xml('active', { xmlns: 'http://jabber.org/protocol/chatstates' }), xml('body', {}, 'plaintext to a bot')]));
  return { el: m, mustAnswer: false };
}
