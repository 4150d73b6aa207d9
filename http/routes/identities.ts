// GET /v1/identities/{jid}: the public identity of a hosted JID (a bot, or a proxy for an allowed
// domain), created on first use, for out-of-band verification. Any valid token may ask.
import { Router } from 'express';
import { GatewayError } from '../../errors.js';
import type { Addressing } from '../../component/addressing.js';
import type { EngineRegistry } from '../../bridges/registry.js';
import type { IdentityFacts } from '../../bridges/engine.js';
import { asRequester } from '../../limits.js';
import { principalOf } from '../auth.js';

export async function identityOf(engines: EngineRegistry, local: string): Promise<Record<string, unknown>> {
  const facts: IdentityFacts = {};
  for (const e of engines.all()) Object.assign(facts, await e.identity(local));
  return { jid: local, omemo: facts.omemo ?? null, omemo2: facts.omemo2 ?? null, pgp: facts.pgp ?? null, otr: facts.otr ?? null, ox: facts.ox ?? null };
}

export function identitiesRoutes(d: { addressing: Addressing; engines: EngineRegistry }): Router {
  const r = Router();
  r.get('/identities/:jid', async (req, res) => {
    const a = d.addressing.classify(req.params.jid!);
    if (a.kind === 'domain') throw new GatewayError('not_hosted', 'The gateway domain has no identity; ask for a bot or proxy JID.');
    // New identities are charged to the token that asked (limits.identities_per_requester_per_minute).
    const p = principalOf(res);
    res.json(await asRequester(p.kind === 'bot' ? `token:${p.bot.localpart}` : 'token:admin', () => identityOf(d.engines, a.local)));
  });
  return r;
}
