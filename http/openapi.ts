// The OpenAPI 3 description of the HTTP API, served at /openapi.json. test/unit/api.test.ts holds
// every route and status code the implementation answers against this document.
import { Router } from 'express';

const err = (description: string) => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });
const E = {
  400: err('Malformed request or invalid field (the message names it)'),
  401: err('Missing or invalid bearer token'),
  403: err('The token may not do this, or the address is outside the allowed domains'),
  404: err('Not found'),
  409: err('Conflicts with the current state'),
  413: err('Body too large'),
  429: err('Rate limited; see Retry-After'),
  503: err('Overloaded (back-pressure, code overloaded) or not ready; see Retry-After'),
};
const json = (description: string, schema: object) => ({ description, content: { 'application/json': { schema } } });
const jidParam = { name: 'jid', in: 'path', required: true, schema: { type: 'string' }, description: 'A bare JID (URL-encoded)' };
const bearer = [{ bearer: [] }];

export const openapi = {
  openapi: '3.0.3',
  info: {
    title: 'xmpp-e2ee-gateway',
    version: '0.1.0',
    description: 'Bots send and receive end-to-end encrypted XMPP messages without touching keys. Webhooks are described in README.md.',
    license: { name: 'AGPL-3.0-or-later' },
  },
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    schemas: {
      Error: {
        type: 'object',
        required: ['error'],
        properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } } },
      },
      Message: {
        type: 'object',
        required: ['id', 'to', 'status', 'encryption'],
        properties: {
          id: { type: 'string' },
          to: { type: 'string' },
          status: { type: 'string', enum: ['queued', 'sent', 'delivered', 'failed'] },
          encryption: { type: 'string', nullable: true, enum: ['omemo2', 'omemo', 'ox', 'pgp', 'otr', 'none', null] },
          error: { $ref: '#/components/schemas/Error/properties/error' },
          created_at: { type: 'string', format: 'date-time' },
          sent_at: { type: 'string', format: 'date-time' },
          delivered_at: { type: 'string', format: 'date-time' },
          undelivered_to: { type: 'array', items: { type: 'string' }, description: 'Room messages: occupants (real bare JIDs) with no usable device, who got no key' },
        },
      },
      Room: {
        type: 'object',
        required: ['jid', 'nick', 'state', 'occupants', 'devices', 'last_error'],
        properties: {
          jid: { type: 'string' },
          nick: { type: 'string' },
          state: { type: 'string', enum: ['offline', 'joining', 'joined', 'not_private', 'waiting', 'error'] },
          non_anonymous: { type: 'boolean', nullable: true },
          members_only: { type: 'boolean', nullable: true },
          occupants: { type: 'integer', description: 'Other occupants, the bot excluded' },
          occupants_without_devices: { type: 'integer' },
          devices: { type: 'integer', description: "Devices in the occupants' device lists" },
          joined_at: { type: 'string', format: 'date-time', nullable: true },
          last_error: {
            type: 'object',
            nullable: true,
            properties: {
              code: {
                type: 'string',
                enum: ['registration_required', 'banned', 'room_missing', 'password_required', 'nick_conflict', 'room_full', 'room_not_private', 'kicked', 'room_shutdown', 'not_in_room', 'join_timeout', 'other'],
              },
              message: { type: 'string' },
              at: { type: 'string', format: 'date-time' },
            },
          },
        },
      },
      Device: {
        type: 'object',
        properties: {
          protocol: { type: 'string' },
          device_id: { oneOf: [{ type: 'integer' }, { type: 'string' }] },
          fingerprint: { type: 'string' },
          label: { type: 'string', description: "OMEMO 2 only: the label the contact's device list gives the device, when there is one (a signed label whose signature does not verify is left out)" },
          label_verified: { type: 'boolean', description: 'true: signed by the device\'s identity key (XEP-0384 0.9); false: unsigned, the word of whoever controls the account\'s PEP node' },
          trust: { type: 'string', enum: ['verified', 'trusted', 'untrusted', 'distrusted'] },
          active: { type: 'boolean' },
          first_seen: { type: 'string', format: 'date-time' },
          last_seen: { type: 'string', format: 'date-time' },
        },
      },
    },
  },
  paths: {
    '/healthz': { get: { summary: 'The process is up', responses: { 200: json('OK', { type: 'object' }) } } },
    '/readyz': {
      get: {
        summary: 'Ready while the component is connected and the keystore open',
        responses: { 200: json('Ready', { type: 'object' }), 503: json('Not ready; checks say why', { type: 'object' }) },
      },
    },
    '/metrics': { get: { summary: 'Prometheus metrics', responses: { 200: { description: 'Prometheus text format', content: { 'text/plain': {} } } } } },
    '/openapi.json': { get: { summary: 'This document', responses: { 200: json('OpenAPI 3', { type: 'object' }) } } },
    '/v1/messages': {
      post: {
        summary: 'Send an end-to-end encrypted message from the bot (bot token)',
        security: bearer,
        parameters: [{ name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', maxLength: 255 } }],
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: {
                type: 'object',
                required: ['to', 'body'],
                additionalProperties: false,
                properties: {
                  to: { type: 'string', description: 'Recipient bare JID, or one of the bot\'s rooms (a groupchat message to every occupant)' },
                  body: { type: 'string' },
                  encryption: { type: 'string', enum: ['omemo2', 'omemo', 'ox', 'pgp', 'otr', 'none'] },
                },
              },
            },
          },
        },
        responses: {
          202: json('Durably queued', { type: 'object', properties: { id: { type: 'string' }, status: { type: 'string' } } }),
          400: E[400], 401: E[401], 403: E[403], 409: E[409], 413: E[413], 429: E[429], 503: E[503],
        },
      },
    },
    '/v1/messages/{id}': {
      get: {
        summary: "A message's status (the bot that sent it, or the admin)",
        security: bearer,
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { 200: json('The message', { $ref: '#/components/schemas/Message' }), 401: E[401], 404: E[404] },
      },
    },
    '/v1/identities/{jid}': {
      get: {
        summary: 'Public identity of a hosted JID (created on first use); any valid token',
        security: bearer,
        parameters: [jidParam],
        responses: { 200: json('Fingerprints and public keys', { type: 'object' }), 400: E[400], 401: E[401], 403: E[403], 404: E[404], 429: E[429] },
      },
    },
    '/v1/contacts/{jid}/devices': {
      get: {
        summary: "A contact's devices and keys with trust (admin); refresh=true re-reads what the contact publishes first",
        security: bearer,
        parameters: [
          jidParam,
          { name: 'refresh', in: 'query', required: false, schema: { type: 'boolean' }, description: "Re-read the contact's OMEMO and OMEMO 2 device lists and bundles and OX keys before answering" },
          { name: 'as', in: 'query', required: false, schema: { type: 'string' }, description: 'The hosted JID (bot or proxy) that reads; the first configured bot by default' },
        ],
        responses: {
          200: json('Devices', {
            type: 'object',
            properties: {
              jid: { type: 'string' },
              devices: { type: 'array', items: { $ref: '#/components/schemas/Device' } },
              read_as: { type: 'string' },
              refreshed: { type: 'array', items: { type: 'object', properties: { protocol: { type: 'string' }, ok: { type: 'boolean' }, error: { type: 'string' } } } },
            },
          }),
          400: E[400], 401: E[401], 403: E[403], 404: E[404],
        },
      },
    },
    '/v1/contacts/{jid}/trust': {
      put: {
        summary: 'Set the trust of one of a contact\'s devices or keys, by fingerprint (admin)',
        security: bearer,
        parameters: [jidParam],
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: {
                type: 'object',
                required: ['fingerprint', 'trust'],
                properties: { fingerprint: { type: 'string' }, trust: { type: 'string', enum: ['verified', 'trusted', 'untrusted', 'distrusted'] }, protocol: { type: 'string' } },
              },
            },
          },
        },
        responses: { 200: json('The device', { $ref: '#/components/schemas/Device' }), 400: E[400], 401: E[401], 403: E[403], 404: E[404] },
      },
    },
    '/v1/contacts/{jid}': {
      put: {
        summary: "Set a contact's preferred protocol, or null to clear it (admin)",
        security: bearer,
        parameters: [jidParam],
        requestBody: {
          required: true,
          content: { 'application/json': { schema: { type: 'object', required: ['protocol'], properties: { protocol: { type: 'string', nullable: true } } } } },
        },
        responses: { 200: json('Saved', { type: 'object' }), 400: E[400], 401: E[401], 403: E[403] },
      },
    },
    '/v1/contacts/{jid}/pgp-key': {
      put: {
        summary: "Register a legacy (XEP-0027) user's armored public key (admin)",
        security: bearer,
        parameters: [jidParam],
        requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['key'], properties: { key: { type: 'string' } } } } } },
        responses: { 200: json('Registered', { type: 'object' }), 400: E[400], 401: E[401], 403: E[403], 404: E[404] },
      },
      delete: {
        summary: "Remove a contact's registered XEP-0027 key (admin)",
        security: bearer,
        parameters: [jidParam],
        responses: { 204: { description: 'Removed' }, 400: E[400], 401: E[401], 403: E[403], 404: E[404] },
      },
    },
    '/v1/bots/{localpart}/rooms': {
      get: {
        summary: "The bot's group chats: state, occupant and device counts, last error (admin, or that bot)",
        security: bearer,
        parameters: [{ name: 'localpart', in: 'path', required: true, schema: { type: 'string' } }],
        responses: {
          200: json('Rooms', { type: 'object', properties: { bot: { type: 'string' }, rooms: { type: 'array', items: { $ref: '#/components/schemas/Room' } } } }),
          401: E[401], 404: E[404],
        },
      },
    },
    '/v1/webhooks/dead-letters': {
      get: {
        summary: 'Webhook deliveries that kept failing (admin)',
        security: bearer,
        parameters: [{ name: 'bot', in: 'query', required: false, schema: { type: 'string' } }],
        responses: { 200: json('Dead letters', { type: 'object' }), 401: E[401], 403: E[403] },
      },
    },
    '/v1/webhooks/dead-letters/{id}/retry': {
      post: {
        summary: 'Put a dead letter back in line (admin)',
        security: bearer,
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { 202: json('Pending again', { type: 'object' }), 401: E[401], 403: E[403], 404: E[404] },
      },
    },
  },
} as const;

export function openapiRoutes(): Router {
  const r = Router();
  r.get('/openapi.json', (_req, res) => {
    res.json(openapi);
  });
  return r;
}
