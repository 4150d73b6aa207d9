// GET /v1/bots/{localpart}/rooms (admin, or that bot): each configured room's state, occupant and
// device counts and last error, so that a bot owner sees what to fix (membership, bans, anonymity).
import { Router } from 'express';
import type { Config } from '../../config.js';
import { GatewayError } from '../../errors.js';
import type { RoomView } from '../../bridges/rooms/room-service.js';
import { principalOf } from '../auth.js';

export function roomsRoutes(d: { config: Config; views: (localpart: string) => RoomView[] }): Router {
  const r = Router();
  r.get('/bots/:localpart/rooms', (req, res) => {
    const localpart = req.params.localpart!;
    const p = principalOf(res);
    // Another bot is as invisible as a missing one.
    if ((p.kind === 'bot' && p.bot.localpart !== localpart) || !d.config.bots.some((b) => b.localpart === localpart)) {
      throw new GatewayError('not_found', 'No such bot.');
    }
    res.json({ bot: localpart, rooms: d.views(localpart) });
  });
  return r;
}
