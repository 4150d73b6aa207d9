import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeLocal, parseJid, unescapeLocal } from '../../component/jid.js';
import { Addressing } from '../../component/addressing.js';
import { GatewayError } from '../../errors.js';

const code = (c: string) => (e: unknown) => e instanceof GatewayError && e.code === c;

test('XEP-0106: all ten characters escape to lowercase hex and back', () => {
  const all = 'a b"c&d\'e/f:g<h>i@j\\k';
  const esc = escapeLocal(all);
  assert.equal(esc, 'a\\20b\\22c\\26d\\27e\\2ff\\3ag\\3ch\\3ei\\40j\\k');
  assert.equal(unescapeLocal(esc), all);
  assert.equal(escapeLocal('bob@example.org'), 'bob\\40example.org');
});

test('XEP-0106: a backslash is escaped only where it would read as an escape', () => {
  assert.equal(escapeLocal('c:\\net'), 'c\\3a\\net');
  assert.equal(escapeLocal('a\\40b'), 'a\\5c40b');
  assert.equal(unescapeLocal('a\\5c40b'), 'a\\40b');
  assert.equal(escapeLocal('a\\5cb'), 'a\\5c5cb');
});

test('XEP-0106: unknown sequences stay literal, a leading or trailing space is refused', () => {
  assert.equal(unescapeLocal('a\\41b'), 'a\\41b');
  assert.equal(unescapeLocal('\\zz'), '\\zz');
  assert.throws(() => escapeLocal(' bob'), code('jid_malformed'));
  assert.throws(() => escapeLocal('bob '), code('jid_malformed'));
});

test('parseJid splits and normalises; garbage is jid_malformed', () => {
  assert.deepEqual(parseJid('Bob@Example.ORG/Phone'), { local: 'bob', domain: 'example.org', resource: 'Phone' });
  assert.deepEqual(parseJid('example.org'), { local: '', domain: 'example.org', resource: '' });
  for (const bad of ['', '@example.org', 'bob@', 'bob@exa mple.org', 'bob@example.org/', 'a:b@example.org']) {
    assert.throws(() => parseJid(bad), code('jid_malformed'), bad);
  }
});

test('addressing classifies domain, bots and proxies (both escape forms), and enforces allowed domains', () => {
  const a = new Addressing('gw.example.org', ['alerts'], ['example.org', 'example.net']);
  assert.deepEqual(a.classify('gw.example.org'), { kind: 'domain' });
  assert.deepEqual(a.classify('alerts@gw.example.org/x'), { kind: 'bot', local: 'alerts@gw.example.org', localpart: 'alerts' });
  const proxy = { kind: 'proxy', local: 'bob\\40example.org@gw.example.org', remote: 'bob@example.org' };
  assert.deepEqual(a.classify('bob\\40example.org@gw.example.org'), proxy);
  assert.deepEqual(a.classify('bob%example.org@gw.example.org'), proxy);
  assert.deepEqual(a.classify('Bob\\40Example.org@gw.example.org'), proxy);
  assert.equal(a.proxyFor('bob@example.org'), 'bob\\40example.org@gw.example.org');
  assert.throws(() => a.classify('carol\\40evil.test@gw.example.org'), code('recipient_not_allowed'));
  assert.throws(() => a.classify('carol%evil.test@gw.example.org'), code('recipient_not_allowed'));
  assert.throws(() => a.proxyFor('carol@evil.test'), code('recipient_not_allowed'));
  assert.throws(() => a.classify('nobody@gw.example.org'), code('not_hosted'));
  assert.throws(() => a.classify('alerts@other.example.org'), code('not_hosted'));
  assert.throws(() => a.proxyFor('example.org'), code('jid_malformed'));
  assert.equal(a.isAllowedJid('x@example.net/r'), true);
  assert.equal(a.isAllowedJid('x@evil.test'), false);
});

test('issue 15 bug 4: RFC 7622 lengths (octets) and characters, XML 1.0 character rules', () => {
  const bad = [
    'bob\u0000@example.org', 'bob@example.org/\u0000', 'bob@exa\u0000mple.org', 'b\u0007ob@example.org', 'bob@example.org/a\u001bb',
    'bob\u007f@example.org', 'bob\u0085@example.org', 'bob@example.org/\uFFFE', 'bob@example.org/\uFFFF', 'bob\uD800@example.org',
    'bob@example.org/x\uDC00', `${'é'.repeat(512)}@example.org`, `bob@example.org/${'ü'.repeat(512)}`, `bob@${'a'.repeat(64)}.org`,
    'bob@a..org', 'bob@.example.org', 'bob@example.org/\n', `${'x'.repeat(1024)}@example.org`, 'bob@example.org\u0000',
  ];
  for (const j of bad) assert.throws(() => parseJid(j), code('jid_malformed'), JSON.stringify(j));
  // the longest parts RFC 7622 allows, and characters XML and PRECIS do allow
  const ok = [`${'x'.repeat(1023)}@example.org`, `bob@example.org/${'r'.repeat(1023)}`, 'bob@example.org/with space', 'δοκιμή@example.org', 'bob@example.org/😀', `bob@${'a'.repeat(63)}.org`];
  for (const j of ok) assert.doesNotThrow(() => parseJid(j), JSON.stringify(j).slice(0, 60));
});
