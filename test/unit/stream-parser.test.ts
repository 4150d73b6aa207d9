// The component stream's parser (component/stream-parser.ts): the same elements as @xmpp/xml's
// Parser for any chunking, none held back once its end has arrived, and ltx never handed a piece
// that ends in a long unterminated run (what made it quadratic: a 64 KB chunk of body text took
// 50-150 ms of event loop). And the bytes of the socket decoded as one UTF-8 stream (StreamComponent):
// a character split across two TCP chunks arrives whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { MAX_UNTERMINATED_RUN, StreamComponent, StreamParser } from '../../component/stream-parser.js';
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

test('a 4-byte and a 2-byte UTF-8 character split across socket chunks arrive whole (StreamComponent)', () => {
  const text = 'x😀é✓y';
  const stanza = Buffer.from(String(xml('message', { from: 'a@example.org/x', to: 'alerts@gw.example.org', id: 'u8' }, xml('body', {}, text))), 'utf8');
  const emoji = stanza.indexOf(Buffer.from('😀', 'utf8'));
  const acute = stanza.indexOf(Buffer.from('é', 'utf8'));
  assert.ok(emoji > 0 && acute > emoji);
  // Cuts after 1, 2 and 3 of the emoji's 4 bytes, and between the two bytes of 'é'.
  const cuts = [emoji + 1, emoji + 2, emoji + 3, acute + 1];
  const chunks = [Buffer.from(HEADER, 'utf8')];
  let from = 0;
  for (const c of [...cuts, stanza.length]) {
    chunks.push(stanza.subarray(from, c));
    from = c;
  }
  const received = (component: { _attachParser(p: StreamParser): void; _onData(d: Buffer): void; on(e: string, f: (el: Element) => void): unknown }) => {
    const out: Element[] = [];
    component._attachParser(new StreamParser());
    component.on('element', (el: Element) => out.push(el));
    for (const c of chunks) component._onData(c);
    return out;
  };
  const ours = received(new StreamComponent({ service: 'xmpp://127.0.0.1:5347', domain: 'gw.example.org' }));
  assert.equal(ours.length, 1);
  assert.equal(ours[0]!.getChildText('body'), text);
  // The chunks do split characters: decoded one by one (what @xmpp/connection does), the body is altered.
  assert.notEqual(chunks.map((c) => c.toString('utf8')).join(''), HEADER + stanza.toString('utf8'));
});
