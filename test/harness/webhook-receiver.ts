// A bot's webhook endpoint for tests: verifies both signatures on every request, records what it
// accepted, and can be switched down (503) or slow to simulate an outage.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface WebhookDelivery {
  id: string;
  payload: Record<string, unknown>;
  attempts: number;
}

export class WebhookReceiver {
  readonly secret: string;
  readonly accepted: WebhookDelivery[] = [];
  /** Every request, accepted or not: [webhook-id, status]. */
  readonly requests: Array<[string, number]> = [];
  readonly badSignatures: string[] = [];
  up = true;
  #server: Server;
  #wh: Webhook;
  #attempts = new Map<string, number>();

  private constructor(server: Server, secret: string) {
    this.#server = server;
    this.secret = secret;
    this.#wh = new Webhook(secret);
  }

  static async start(secret = 'whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMDAwMDAwMA=='): Promise<WebhookReceiver> {
    const server = createServer();
    const rx = new WebhookReceiver(server, secret);
    server.on('request', (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const id = String(req.headers['webhook-id'] ?? '');
        rx.#attempts.set(id, (rx.#attempts.get(id) ?? 0) + 1);
        if (!rx.up) {
          rx.requests.push([id, 503]);
          res.writeHead(503).end();
          return;
        }
        try {
          const payload = rx.#wh.verify(body, req.headers as Record<string, string>) as Record<string, unknown>;
          rx.accepted.push({ id, payload, attempts: rx.#attempts.get(id)! });
          rx.requests.push([id, 204]);
          res.writeHead(204).end();
        } catch {
          rx.badSignatures.push(id);
          rx.requests.push([id, 400]);
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return rx;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hook`;
  }

  messages(): Array<Record<string, unknown>> {
    return this.accepted.filter((d) => d.payload.type === 'message').map((d) => d.payload);
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}
