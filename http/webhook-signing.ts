// Webhook signatures: our `X-Gateway-Signature: sha256=<hex HMAC-SHA256 of the raw body>` and the
// Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256
// of "id.timestamp.body">), both under one key: the decoded bytes of a `whsec_<base64>` secret,
// otherwise the secret's UTF-8 bytes. https://www.standardwebhooks.com/
import { createHmac } from 'node:crypto';

export function signingKey(secret: string): Buffer {
  if (secret.startsWith('whsec_')) {
    const key = Buffer.from(secret.slice(6), 'base64');
    if (key.length > 0) return key;
  }
  return Buffer.from(secret, 'utf8');
}

export function signatureHeaders(key: Buffer, id: string, timestampSeconds: number, body: string): Record<string, string> {
  const hex = createHmac('sha256', key).update(body, 'utf8').digest('hex');
  const std = createHmac('sha256', key).update(`${id}.${timestampSeconds}.${body}`, 'utf8').digest('base64');
  return {
    'x-gateway-signature': `sha256=${hex}`,
    'webhook-id': id,
    'webhook-timestamp': String(timestampSeconds),
    'webhook-signature': `v1,${std}`,
  };
}
