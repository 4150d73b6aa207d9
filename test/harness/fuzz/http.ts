// HTTP requests for the fuzz test: malformed JSON, odd encodings, odd paths, odd JIDs, wrong tokens.
import zlib from 'node:zlib';
import { ADMIN_TOKEN } from '../scenario.js';
import { oddJid } from './mutate.js';
import type { Rng } from './rng.js';

const BOT_TOKEN = 'alerts-bot-token-scenario-0001';

export interface HttpCase {
  what: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer | string;
}

const enc = (s: string) => encodeURIComponent(s);

export function httpCase(rng: Rng, n: number): HttpCase {
  const token = rng.pick([BOT_TOKEN, BOT_TOKEN, ADMIN_TOKEN, ADMIN_TOKEN, ADMIN_TOKEN, 'wrong', '']);
  const headers: Record<string, string> = token ? { authorization: rng.chance(0.05) ? `Basic ${token}` : `Bearer ${token}` } : {};
  const jid = rng.chance(0.5) ? oddJid(rng, 'gw.example.org') : rng.pick(['bob@example.org', 'bob\\40example.org@gw.example.org', 'alerts@gw.example.org']);
  const rawSeg = rng.pick([enc(jid), jid.replace(/\//g, '%2F'), '%', '%zz', '%E0%A4%A', '%C3%28', '%00', '%2e%2e', '..', 'x'.repeat(rng.pick([10, 5000])), '%F0%9F%98%80', '%uD800']);
  const path = rng.pick([
    `/v1/identities/${rawSeg}`,
    `/v1/messages/${rawSeg}`,
    `/v1/contacts/${rawSeg}/devices`,
    `/v1/contacts/${rawSeg}/trust`,
    `/v1/contacts/${rawSeg}/pgp-key`,
    `/v1/contacts/${rawSeg}`,
    '/v1/messages',
    '/v1/messages',
    '/v1/messages',
    `/v1/webhooks/dead-letters/${rawSeg}/retry`,
    '/v1/webhooks/dead-letters',
    '/v1//messages',
    '/v1/messages?x=%zz',
    '/healthz',
    '/readyz',
    '/openapi.json',
    `/${rawSeg}`,
  ]);
  const method = rng.pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'POST', 'POST']);
  if (method === 'GET' || method === 'DELETE' || method === 'OPTIONS' || rng.chance(0.1)) return { what: `#${n} no body`, method, path, headers };
  const json = rng.pick([
    () => JSON.stringify({ to: jid, body: `http-${n}` }),
    () => JSON.stringify({ to: jid, body: `http-${n}`, encryption: rng.pick(['omemo', 'pgp', 'none', 'rot13', 5, null]) }),
    () => JSON.stringify({ to: jid }),
    () => JSON.stringify({ to: [jid], body: {} }),
    () => JSON.stringify({ key: rng.pick(['garbage', '-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----']) }),
    () => JSON.stringify({ fingerprint: 'x'.repeat(rng.pick([0, 64, 5000])), trust: rng.pick(['verified', 'bogus', 1]) }),
    () => JSON.stringify({ protocol: rng.pick(['omemo', 'pgp', null, 'x', 1]) }),
    () => '{"to": "bob@example.org", "body": ',
    () => '{"to": "bob@example.org", "body": "x", "to": "b\\u0000ob@example.org"}',
    () => '[]',
    () => 'null',
    () => '"string"',
    () => '{"__proto__": {"x": 1}, "to": "bob@example.org", "body": "x"}',
    () => `{"to": "${'\\ud800'}", "body": "x"}`,
    () => '{'.repeat(5000),
    () => JSON.stringify({ to: 'bob@example.org', body: 'x'.repeat(rng.pick([10, 2_000_000])) }),
  ])();
  const ctype = rng.pick(['application/json', 'application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'application/json; charset=koi8-r', 'text/plain', 'application/x-www-form-urlencoded', '']);
  if (ctype) headers['content-type'] = ctype;
  const encoding = rng.pick([undefined, undefined, undefined, 'gzip', 'deflate', 'br', 'identity', 'x-bogus', 'gzip, deflate']);
  let body: Buffer | string = json;
  if (encoding) {
    headers['content-encoding'] = encoding;
    const raw = Buffer.from(json);
    const good = encoding === 'gzip' ? zlib.gzipSync(raw) : encoding === 'deflate' ? zlib.deflateSync(raw) : encoding === 'br' ? zlib.brotliCompressSync(raw) : raw;
    body = rng.chance(0.5) ? good : rng.pick([raw, good.subarray(0, Math.max(1, good.length >> 1)), Buffer.concat([good, rng.bytes(8)])]);
  }
  return { what: `#${n} ${encoding ?? 'plain'} ${ctype}`, method, path, headers, body };
}
