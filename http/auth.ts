// Bearer tokens: one per bot (plain, or `sha256:<hex>` of the token) and one for the admin. We
// compare SHA-256 digests with timingSafeEqual, so neither the token nor its length leaks by timing.
import { hash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { BotConfig } from '../config.js';
import { GatewayError } from '../errors.js';

export type Principal = { kind: 'admin' } | { kind: 'bot'; bot: BotConfig };

const digestOf = (token: string): Buffer => {
  if (token.startsWith('sha256:')) return Buffer.from(token.slice(7), 'hex');
  return hash('sha256', token, 'buffer');
};

export class TokenAuth {
  readonly #entries: Array<{ digest: Buffer; principal: Principal }>;

  constructor(adminToken: string, bots: readonly BotConfig[]) {
    this.#entries = [
      { digest: digestOf(adminToken), principal: { kind: 'admin' } },
      ...bots.map((bot) => ({ digest: digestOf(bot.token), principal: { kind: 'bot', bot } as Principal })),
    ];
  }

  /** The principal a presented token belongs to, or null. Checks every entry (no early exit). */
  identify(token: string): Principal | null {
    // One-shot digest (crypto.hash: no Hash object per request, issue 16).
    const presented = hash('sha256', token, 'buffer');
    let found: Principal | null = null;
    for (const e of this.#entries) {
      if (timingSafeEqual(presented, e.digest) && !found) found = e.principal;
    }
    return found;
  }

  /** Express middleware: sets res.locals.principal or answers 401. */
  middleware() {
    return (req: Request, res: Response, next: NextFunction): void => {
      const h = req.headers.authorization;
      const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
      const principal = m ? this.identify(m[1]!) : null;
      if (!principal) {
        res.setHeader('WWW-Authenticate', 'Bearer');
        next(new GatewayError('unauthorized', m ? 'The bearer token is not valid.' : undefined));
        return;
      }
      res.locals.principal = principal;
      next();
    };
  }
}

export function principalOf(res: Response): Principal {
  return res.locals.principal as Principal;
}

export function requireAdmin(res: Response): void {
  if (principalOf(res).kind !== 'admin') throw new GatewayError('forbidden', 'This call needs the admin token.');
}

