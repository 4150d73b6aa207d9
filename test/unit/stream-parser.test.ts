// The component stream's parser (component/stream-parser.ts): the same elements as @xmpp/xml's
// Parser for any chunking, none held back once its end has arrived, and ltx never handed a piece
// that ends in a long unterminated run (what made it quadratic: a 64 KB chunk of body text took
// 50-150 ms of event loop).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { MAX_UNTERMINATED_RUN, StreamParser } from '../../component/stream-parser.js';
import { Rng } from '../harness/fuzz/rng.js';

const HEADER = "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='gw.example.org' id='s1'>";

function stanzas(): Element[] {
  return [
    xml('message', { from: 'a@example.org/x', to: 'alerts@gw.example.org', id: 'big' }, xml('body', {}, 'A'.repeat(200_000))),
    xml('iq', { type: 'get', from: 'b@example.org/x', to: 'gw.example.org', id: 'p1' }, xml('ping', { xmlns: 'urn:xmpp:ping' })),
    xml('message', { from: 'c@example.org/x', to: 'alerts@gw.example.org', id: 'x'.repeat(70_000) }, xml('body', {}, 'short')),
    xml('message', { from: 'd@example.org/x', to: 'alerts@gw.example.org', id: 'u' }, xml('body', {}, `é ✓ 😀 <&> '"`.repeat(5000))),
    xml('presence', { from: 'e@example.org/x', to: 'alerts@gw.example.org' }),
  ];
}

function feed(p: InstanceType<typeof xml.Parser>, text: string, rng: Rng): Element[] {
  const out: Element[] = [];
  p.on('element', (el: Element) => out.push(el));
  p.write(HEADER);
  for (let i = 0; i < text.length; ) {
    // Chunks from one character to 70,000: splits inside tags, attribute values, entities and surrogate pairs.
    const n = rng.chance(0.3) ? 1 + rng.int(16) : 1 + rng.int(70_000);
    p.write(text.slice(i, i + n));
    i += n;
  }
  return out;
}

test('the same elements as the plain parser for any chunking (long text, long attribute values, entities, split surrogate pairs)', () => {
  const text = stanzas().map(String).join('\n');
  for (const seed of [1, 2, 3, 4, 5]) {
    const plain = feed(new xml.Parser(), text, new Rng(seed)).map(String);
    const ours = feed(new StreamParser(), text, new Rng(seed)).map(String);
    assert.equal(ours.length, 5, `seed ${seed}`);
    assert.deepEqual(ours, plain, `seed ${seed}`);
    assert.deepEqual(ours, stanzas().map(String), `seed ${seed}`);
  }
});

test('an element is emitted as soon as its end has been written, however long its text was', () => {
  const p = new StreamParser();
  const out: Element[] = [];
  p.on('element', (el: Element) => out.push(el));
  p.write(HEADER);
  const big = String(xml('message', { id: 'm1' }, xml('body', {}, 'B'.repeat(150_000))));
  p.write(big.slice(0, 65_536));
  p.write(big.slice(65_536, 131_072));
  assert.equal(out.length, 0);
  p.write(big.slice(131_072));
  assert.equal(out.length, 1, 'emitted with the chunk that ended it');
  p.write(String(xml('iq', { id: 'p2', type: 'get' })));
  assert.deepEqual(out.map((e) => e.attrs.id), ['m1', 'p2']);
});

test('ltx is never handed a piece ending in a run longer than MAX_UNTERMINATED_RUN (the quadratic case)', () => {
  const p = new StreamParser();
  const inner = (p as unknown as { parser: { write: (s: string) => void } }).parser;
  const write = inner.write.bind(inner);
  const runs: number[] = [];
  inner.write = (s: string) => {
    runs.push(s.length - (Math.max(s.lastIndexOf('<'), s.lastIndexOf('>')) + 1));
    write(s);
  };
  const out = feed(p, stanzas().map(String).join(''), new Rng(7));
  assert.equal(out.length, 5);
  assert.ok(runs.length > 0);
  assert.ok(Math.max(...runs) <= MAX_UNTERMINATED_RUN, `longest run handed to ltx: ${Math.max(...runs)}`);
});
