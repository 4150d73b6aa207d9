// Mutations of valid stanzas for the fuzz test (test/scenario/fuzz.test.ts): bit flips, truncation,
// wrong lengths, bad base64, absurd ids, missing or repeated elements, odd and badly escaped JIDs.
// Each mutator works on a copy and says what it did (a label, printed with the seed on failure).
import { parseXml, xml, type Element } from '../../../component/xml.js';
import type { Rng } from './rng.js';

export type Mutator = (el: Element, rng: Rng) => string;

export const clone = (el: Element): Element => parseXml(el.toString());

/** Every element below (and including) `el`. */
export function walk(el: Element): Element[] {
  const out = [el];
  for (const c of el.getChildElements()) out.push(...walk(c));
  return out;
}

const isBase64ish = (s: string): boolean => s.length >= 4 && /^[A-Za-z0-9+/=\s]+$/.test(s);

/** Elements whose text looks like base64 (OMEMO key, iv, payload; XEP-0027 payloads...). */
export const base64Elements = (el: Element): Element[] => walk(el).filter((e) => e.getChildElements().length === 0 && isBase64ish(e.getText()));

export function setText(e: Element, text: string): void {
  e.children = text === '' ? [] : [text];
}

/** A binary mutation of `b`. */
export function mutateBytes(b: Buffer, rng: Rng): { bytes: Buffer; what: string } {
  const c = Buffer.from(b);
  switch (rng.int(7)) {
    case 0: {
      if (c.length === 0) return { bytes: rng.bytes(8), what: 'filled' };
      const i = rng.int(c.length);
      c[i] = c[i]! ^ (1 << rng.int(8));
      return { bytes: c, what: `bit flip at ${i}` };
    }
    case 1: {
      const n = rng.int(Math.max(1, c.length));
      return { bytes: c.subarray(0, n), what: `truncated to ${n}` };
    }
    case 2:
      return { bytes: Buffer.concat([c, rng.bytes(1 + rng.int(64))]), what: 'extended' };
    case 3:
      return { bytes: Buffer.alloc(c.length), what: 'zeroed' };
    case 4:
      if (c.length > 0) c[0] = rng.pick([0x00, 0x02, 0x03, 0x04, 0x05, 0x06, 0x32, 0x34, 0x44, 0xff]);
      return { bytes: c, what: 'first (version) byte changed' };
    case 5: {
      const i = rng.int(Math.max(1, c.length));
      return { bytes: Buffer.concat([c.subarray(0, i), c.subarray(i + 1 + rng.int(16))]), what: 'bytes cut out' };
    }
    default:
      return { bytes: rng.bytes(rng.pick([0, 1, 16, 33, 100, 4096])), what: 'random bytes' };
  }
}

/** Bad base64 text in the same place. */
export function badBase64(s: string, rng: Rng): { text: string; what: string } {
  switch (rng.int(6)) {
    case 0:
      return { text: `${s.slice(0, s.length >> 1)}!@#${s.slice(s.length >> 1)}`, what: 'invalid base64 characters' };
    case 1:
      return { text: s.replace(/=+$/, ''), what: 'padding removed' };
    case 2:
      return { text: `${s}====`, what: 'extra padding' };
    case 3:
      return { text: s.replace(/(.{7})/g, '$1 \n\t'), what: 'whitespace inside' };
    case 4:
      return { text: '', what: 'empty' };
    default:
      return { text: 'A'.repeat(rng.pick([1, 2, 3, 5, 100_001])), what: 'odd length' };
  }
}

export const ABSURD_NUMBERS = ['', '0', '-1', '4294967296', '4294967295', '2147483648', '1e309', 'NaN', '0x10', ' 1', '1.5', '9'.repeat(400), 'abc', '٣'];

/** JIDs meant to trip parsers and escapers. */
export function oddJid(rng: Rng, domain: string): string {
  return rng.pick([
    () => `${'a'.repeat(1024)}@example.org`,
    () => `${'a'.repeat(1023)}@example.org/${'r'.repeat(1100)}`,
    () => `bob\\40example.org@${domain}`,
    () => `bob\\4example.org@${domain}`,
    () => `\\40@${domain}`,
    () => `bob\\zz@${domain}`,
    () => `bob%@${domain}`,
    () => `%example.org@${domain}`,
    () => `bob\\5c\\5c\\40example.org@${domain}`,
    () => `bob\\20@${domain}`,
    () => `${'x\\40'.repeat(300)}example.org@${domain}`,
    () => `bob@example..org`,
    () => `bob@${'a'.repeat(64)}.org`,
    () => `@${domain}`,
    () => `bob@`,
    () => `bob@example.org/`,
    () => `bob@[::1]`,
    () => `bob@example.org/${'😀'.repeat(300)}`,
    () => `Bob@EXAMPLE.org/Res`,
    () => `bob@evil.test`,
    () => `bob\\40evil.test@${domain}`,
    () => domain,
    () => `nobody@${domain}`,
    () => `alerts@${domain}/${'r'.repeat(50)}`,
  ])();
}

/** Mutators that apply to any stanza. */
export const GENERIC: Record<string, Mutator> = {
  'base64 bit flip/truncate/extend': (el, rng) => {
    const targets = base64Elements(el);
    if (targets.length === 0) return 'no base64 (unchanged)';
    const t = rng.pick(targets);
    const raw = Buffer.from(t.getText().replace(/\s/g, ''), 'base64');
    const m = mutateBytes(raw, rng);
    setText(t, m.bytes.toString('base64'));
    return `<${t.name}> ${m.what}`;
  },
  'bad base64': (el, rng) => {
    const targets = base64Elements(el);
    if (targets.length === 0) return 'no base64 (unchanged)';
    const t = rng.pick(targets);
    const m = badBase64(t.getText(), rng);
    setText(t, m.text);
    return `<${t.name}> ${m.what}`;
  },
  'absurd attribute': (el, rng) => {
    const withAttrs = walk(el).filter((e) => Object.keys(e.attrs).some((a) => a !== 'xmlns' && a !== 'from' && a !== 'to'));
    if (withAttrs.length === 0) return 'no attributes (unchanged)';
    const t = rng.pick(withAttrs);
    const name = rng.pick(Object.keys(t.attrs).filter((a) => a !== 'xmlns' && a !== 'from' && a !== 'to'));
    const v = rng.pick(ABSURD_NUMBERS);
    t.attrs[name] = v;
    return `<${t.name} ${name}=${JSON.stringify(v.slice(0, 20))}>`;
  },
  'element removed': (el, rng) => {
    const parents = walk(el).filter((e) => e.getChildElements().length > 0);
    if (parents.length === 0) return 'no children (unchanged)';
    const p = rng.pick(parents);
    const c = rng.pick(p.getChildElements());
    p.remove(c);
    return `<${c.name}> removed from <${p.name}>`;
  },
  'element repeated': (el, rng) => {
    const parents = walk(el).filter((e) => e.getChildElements().length > 0);
    if (parents.length === 0) return 'no children (unchanged)';
    const p = rng.pick(parents);
    const c = rng.pick(p.getChildElements());
    p.cnode(clone(c));
    return `<${c.name}> repeated in <${p.name}>`;
  },
  'text replaced': (el, rng) => {
    const leaves = walk(el).filter((e) => e.getChildElements().length === 0 && e !== el);
    if (leaves.length === 0) return 'no leaves (unchanged)';
    const t = rng.pick(leaves);
    setText(t, rng.pick(['', ' ', '<not xml>', '&amp;', 'x'.repeat(70_000), '\u202e', 'null', '{}', '-----BEGIN PGP MESSAGE-----']));
    return `<${t.name}> text replaced`;
  },
  'unknown child added': (el, rng) => {
    const t = rng.pick(walk(el));
    t.cnode(xml(rng.pick(['x', 'encrypted', 'header', 'key', 'body', 'pubsub', 'items']), { xmlns: rng.pick(['urn:fuzz', 'eu.siacs.conversations.axolotl', 'jabber:x:encrypted', '']) }, 'fuzz'));
    return `unknown child in <${t.name}>`;
  },
  'odd from': (el, rng) => {
    el.attrs.from = oddJid(rng, 'gw.example.org');
    return `from=${String(el.attrs.from).slice(0, 40)}`;
  },
  'odd to': (el, rng) => {
    el.attrs.to = oddJid(rng, 'gw.example.org');
    return `to=${String(el.attrs.to).slice(0, 40)}`;
  },
  'id changed': (el, rng) => {
    el.attrs.id = rng.pick(['', 'x'.repeat(3000), '<>', '"\'', 'dup', '\u{1F600}']);
    return 'id changed';
  },
  'exact replay': () => 'exact replay',
};
