// One table of every error a user can act on: its HTTP status, the XMPP stanza error condition it
// maps to, and a sentence that is safe to show (never a body, key or secret). `cause` is only logged.

export const ERRORS = {
  // configuration and startup
  config_invalid: { http: 500, condition: 'internal-server-error', text: 'The configuration is invalid.' },
  keystore_passphrase_wrong: { http: 500, condition: 'internal-server-error', text: 'The keystore passphrase does not open this keystore.' },
  keystore_unavailable: { http: 503, condition: 'internal-server-error', text: 'The keystore is not open.' },
  component_auth_failed: { http: 503, condition: 'internal-server-error', text: 'The XMPP server refused the component secret.' },
  // HTTP API
  bad_request: { http: 400, condition: 'bad-request', text: 'The request is malformed.' },
  bad_json: { http: 400, condition: 'bad-request', text: 'The request body is not valid JSON.' },
  invalid_field: { http: 400, condition: 'bad-request', text: 'A field of the request is invalid.' },
  unauthorized: { http: 401, condition: 'not-authorized', text: 'A valid bearer token is required.' },
  forbidden: { http: 403, condition: 'forbidden', text: 'This token may not do that.' },
  not_found: { http: 404, condition: 'item-not-found', text: 'No such resource.' },
  conflict: { http: 409, condition: 'conflict', text: 'The request conflicts with the current state.' },
  payload_too_large: { http: 413, condition: 'not-acceptable', text: 'The request body is too large.' },
  rate_limited: { http: 429, condition: 'resource-constraint', text: 'Too many requests; retry later.' },
  standby: { http: 503, condition: 'service-unavailable', text: 'This instance is a standby; send this request to the active instance.' },
  not_ready: { http: 503, condition: 'remote-server-timeout', text: 'The gateway is not connected to the XMPP server.' },
  // addressing and routing
  jid_malformed: { http: 400, condition: 'jid-malformed', text: 'The address is not a valid JID.' },
  recipient_not_allowed: { http: 403, condition: 'forbidden', text: 'The recipient is outside the domains this gateway may bridge.' },
  not_hosted: { http: 404, condition: 'item-not-found', text: 'The gateway does not host that address.' },
  // sending
  no_encryption_available: { http: 409, condition: 'not-acceptable', text: 'The recipient supports no end-to-end encryption this gateway can use.' },
  // The contact's keys (PEP nodes) are readable by their approved contacts only (access model
  // presence or roster, e.g. Profanity's bundles): the sending address must be let in first.
  keys_not_visible: { http: 409, condition: 'not-acceptable', text: 'The recipient lets approved contacts only read their encryption keys; the sending address has asked them for approval (a presence subscription).' },
  no_trusted_devices: { http: 409, condition: 'not-acceptable', text: 'The recipient has no trusted device to encrypt to.' },
  bot_not_receiving: { http: 409, condition: 'service-unavailable', text: 'This bot does not receive messages.' },
  plaintext_refused: { http: 400, condition: 'not-acceptable', text: 'This gateway accepts only end-to-end encrypted messages.' },
  no_otr_session: { http: 409, condition: 'recipient-unavailable', text: 'No OTR session with the recipient could be set up in time.' },
  expired: { http: 409, condition: 'remote-server-timeout', text: 'The message could not be sent before it expired.' },
  remote_timeout: { http: 504, condition: 'remote-server-timeout', text: 'The remote entity did not answer in time.' },
  remote_error: { http: 502, condition: 'remote-server-not-found', text: 'The remote entity answered with an error.' },
  // a stanza we would write holds a character XML 1.0 does not allow (a server would close the stream)
  stanza_unserializable: { http: 400, condition: 'bad-request', text: 'The message holds a character XML does not allow; it cannot be sent.' },
  // group chats (XEP-0045 rooms of bots)
  room_not_private: { http: 409, condition: 'not-acceptable', text: 'The room does not reveal its occupants\' real JIDs (it is not non-anonymous), so it cannot be end-to-end encrypted.' },
  room_not_joined: { http: 503, condition: 'recipient-unavailable', text: 'The bot is not (yet) in the room.' },
  room_unavailable: { http: 409, condition: 'forbidden', text: 'The room refuses the bot (not a member, banned, or it does not exist).' },
  // limits (limits.ts)
  stanza_rate_limited: { http: 429, condition: 'resource-constraint', text: 'Too many stanzas from you or your domain; slow down and retry later.' },
  stanza_too_large: { http: 413, condition: 'policy-violation', text: 'The stanza or its body is larger than this gateway accepts.' },
  identity_rate_limited: { http: 429, condition: 'resource-constraint', text: 'The gateway is creating too many new identities right now; retry in a minute.' },
  identity_limit_reached: { http: 403, condition: 'policy-violation', text: 'The gateway hosts as many identities as it is configured to (bridge.max_hosted_identities).' },
  overloaded: { http: 503, condition: 'resource-constraint', text: 'The gateway is overloaded; retry later.' },
  // anything else
  internal: { http: 500, condition: 'internal-server-error', text: 'Internal error.' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

export class GatewayError extends Error {
  readonly code: ErrorCode;
  /** Safe to show to the user who caused it: no bodies, keys or secrets. */
  readonly userText: string;

  constructor(code: ErrorCode, userText?: string, options?: { cause?: unknown }) {
    super(userText ?? ERRORS[code].text, options);
    this.name = 'GatewayError';
    this.code = code;
    this.userText = userText ?? ERRORS[code].text;
  }

  get http(): number {
    return ERRORS[this.code].http;
  }

  get condition(): string {
    return ERRORS[this.code].condition;
  }
}

/**
 * A contact's node (device list, bundle, key) that the asking hosted JID may not read. `certain`:
 * the answer says the node is there but closed to us (an access-model condition, or a bundle of a
 * device we saw listed): keys_not_visible, the contact's approval lets us in. Otherwise (a plain
 * forbidden, which Prosody also answers for a node or an account that is not there) it may be
 * either, and counts as nothing offered (no_encryption_available). Both ask for approval.
 */
export class KeysNotVisibleError extends GatewayError {
  readonly certain: boolean;
  constructor(certain: boolean, userText: string, options?: { cause?: unknown }) {
    super(certain ? 'keys_not_visible' : 'no_encryption_available', userText, options);
    this.name = 'KeysNotVisibleError';
    this.certain = certain;
  }
}

/** A configuration problem: names the key path and what is wrong, e.g. `component.secret: required`. */
export class ConfigError extends GatewayError {
  readonly path: string;
  constructor(path: string, problem: string) {
    super('config_invalid', `${path}: ${problem}`);
    this.name = 'ConfigError';
    this.path = path;
  }
}

/** Normalises anything thrown into a GatewayError; unknown errors become `internal` (the cause kept for logs). */
export function toGatewayError(e: unknown): GatewayError {
  if (e instanceof GatewayError) return e;
  return new GatewayError('internal', undefined, { cause: e });
}
