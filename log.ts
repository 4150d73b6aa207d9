// Structured JSON logs (pino), one named child logger per subsystem. Serializers cut stanzas and errors
// down to routing facts and codes; bodies, tokens and key material have no field to travel in, and
// the redaction list catches the usual names if a caller passes them anyway.
import { pino, type Logger, type LoggerOptions } from 'pino';
import type { DestinationStream } from 'pino';
import type Element from 'ltx/lib/Element.js';

export type { Logger };

const REDACT = [
  'body', '*.body', 'plaintext', '*.plaintext', 'password', '*.password', 'secret', '*.secret',
  'token', '*.token', 'passphrase', '*.passphrase', 'privateKey', '*.privateKey', 'authorization',
  '*.authorization', 'headers.authorization', 'req.headers.authorization',
];

/** A stanza as a log field: routing facts and the namespace of its payload, never its content. */
export function stanzaSummary(el: Element): Record<string, unknown> {
  const payload = el.getChildElements().map((c) => {
    const ns = c.attrs.xmlns ?? c.name;
    const node = c.getChild('items')?.attrs.node; // pubsub node names are public protocol facts
    return node ? `${ns} ${node}` : ns;
  });
  return { name: el.name, id: el.attrs.id, type: el.attrs.type, from: el.attrs.from, to: el.attrs.to, payload };
}

/** An error as a log field: its code, class and message, and the same for its cause chain. */
export function errorSummary(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: typeof err === 'string' ? err : 'non-error thrown' };
  const out: Record<string, unknown> = { type: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (err.stack) out.stack = err.stack.split('\n').slice(0, 6).join('\n');
  if (err.cause !== undefined) out.cause = errorSummary(err.cause);
  return out;
}

export function createLogger(level = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
    level,
    base: { service: 'xmpp-e2ee-gateway' },
    redact: { paths: REDACT, censor: '[redacted]' },
    serializers: { err: errorSummary },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}
