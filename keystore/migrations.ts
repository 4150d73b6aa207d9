// Schema migrations, applied in order inside one transaction each; `PRAGMA user_version` records
// how far a file has come. Append only: never edit a migration that has shipped.

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'init',
    sql: `
      CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;

      -- Protocol engines' state (identities, prekeys, sessions, ...), every value sealed.
      CREATE TABLE kv (
        protocol TEXT NOT NULL, owner TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        value BLOB NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (protocol, owner, kind, key)
      ) WITHOUT ROWID;

      -- Contacts' devices and keys with their trust, per (bare JID, protocol, identity key).
      CREATE TABLE devices (
        contact TEXT NOT NULL, protocol TEXT NOT NULL, fingerprint TEXT NOT NULL,
        device_id TEXT NOT NULL, trust TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
        PRIMARY KEY (contact, protocol, fingerprint)
      ) WITHOUT ROWID;
      CREATE INDEX devices_by_device ON devices (contact, protocol, device_id);

      -- Remote contacts as the gateway knows them.
      CREATE TABLE contacts (
        jid TEXT PRIMARY KEY, preferred_protocol TEXT,
        pgp_key TEXT, pgp_fingerprint TEXT, otr INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
      ) WITHOUT ROWID;

      -- The protocol a contact last wrote to a hosted JID in, to reply in kind.
      CREATE TABLE last_protocol (
        local TEXT NOT NULL, remote TEXT NOT NULL, protocol TEXT NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (local, remote)
      ) WITHOUT ROWID;

      -- Presence subscriptions between a hosted JID and a remote bare JID (RFC 6121 states).
      CREATE TABLE subscriptions (
        local TEXT NOT NULL, remote TEXT NOT NULL,
        sub_from INTEGER NOT NULL DEFAULT 0,  -- remote receives local's presence
        sub_to INTEGER NOT NULL DEFAULT 0,    -- local receives remote's presence
        pending_out INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (local, remote)
      ) WITHOUT ROWID;

      -- The pubsub service the gateway runs for its hosted JIDs (PEP for components).
      -- Digests of inbound ciphertexts already accepted, for protocols without replay protection
      -- (XEP-0027). Public data: not sealed.
      CREATE TABLE seen_ciphertexts (
        protocol TEXT NOT NULL, digest BLOB NOT NULL, seen_at INTEGER NOT NULL,
        PRIMARY KEY (protocol, digest)
      ) WITHOUT ROWID;
      CREATE INDEX seen_ciphertexts_by_time ON seen_ciphertexts (protocol, seen_at);

      CREATE TABLE pubsub_nodes (
        owner TEXT NOT NULL, node TEXT NOT NULL, access_model TEXT NOT NULL, max_items INTEGER NOT NULL,
        PRIMARY KEY (owner, node)
      ) WITHOUT ROWID;
      CREATE TABLE pubsub_items (
        owner TEXT NOT NULL, node TEXT NOT NULL, item_id TEXT NOT NULL, payload TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (owner, node, item_id)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    name: 'bot queues',
    sql: `
      -- Messages bots posted, until sent; the body is sealed and wiped once the message is sent.
      CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        bot TEXT NOT NULL,
        recipient TEXT NOT NULL,
        body BLOB,
        encryption_requested TEXT,
        encryption TEXT,
        status TEXT NOT NULL,               -- queued | sent | delivered | failed
        error_code TEXT,
        error_message TEXT,
        idempotency_key TEXT,
        request_hash TEXT,
        seq INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        sent_at INTEGER,
        delivered_at INTEGER
      );
      CREATE UNIQUE INDEX outbox_idempotency ON outbox (bot, idempotency_key) WHERE idempotency_key IS NOT NULL;
      CREATE INDEX outbox_queued ON outbox (status, seq);
      CREATE INDEX outbox_line ON outbox (bot, recipient, status, seq);

      -- Webhook deliveries (decrypted messages and status changes), in order per (bot, sender).
      CREATE TABLE webhook_queue (
        id TEXT PRIMARY KEY,                -- the webhook-id, stable across retries
        bot TEXT NOT NULL,
        ordering_key TEXT NOT NULL,         -- the sender: deliveries with one key go in order
        payload BLOB,                       -- sealed JSON; wiped once delivered
        seq INTEGER NOT NULL,
        status TEXT NOT NULL,               -- pending | delivered | dead
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        first_attempt_at INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        delivered_at INTEGER
      );
      CREATE INDEX webhook_pending ON webhook_queue (bot, status, ordering_key, seq);
    `,
  },
  {
    version: 3,
    name: 'bridged messages in the outbox',
    sql: `
      -- Bridged messages share the outbox with bot messages: kind 'bridge' rows carry in 'bot' the
      -- hosted JID they are sent from (a proxy JID) and in 'origin' (sealed JSON) whom to tell about
      -- a receipt or a failure: the original sender's full JID, stanza id and protocol.
      ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'bot';
      ALTER TABLE outbox ADD COLUMN origin BLOB;
    `,
  },
  {
    version: 4,
    name: 'room messages',
    sql: `
      -- A message to a group chat (XEP-0045 room) lists the occupants it could not be encrypted for
      -- (JSON array of bare JIDs), set when it is sent.
      ALTER TABLE outbox ADD COLUMN undelivered_to TEXT;
    `,
  },
  {
    version: 5,
    name: 'outbox indexes of queued rows only',
    sql: `
      -- The sender reads only queued rows (all of them oldest first; one line's head). Indexes of the
      -- queued rows alone stay small (finished rows are kept a week) and marking a message delivered
      -- no longer rewrites index pages: fewer pages per commit (issue 16).
      DROP INDEX outbox_queued;
      DROP INDEX outbox_line;
      CREATE INDEX outbox_queued ON outbox (seq) WHERE status = 'queued';
      CREATE INDEX outbox_line ON outbox (bot, recipient, seq) WHERE status = 'queued';
    `,
  },
  {
    version: 6,
    name: 'devices by identity key',
    sql: `
      -- The same identity key under a second JID is untrusted (trust-store.ts): that check looks
      -- a key up across all contacts, which without this index read the whole devices table.
      CREATE INDEX devices_by_fingerprint ON devices (protocol, fingerprint);
    `,
  },
  {
    version: 7,
    name: 'replay digests in one B-tree',
    sql: `
      -- Every accepted OMEMO message inserts a digest: with this index that was two B-tree updates
      -- (two more WAL pages per commit). Pruning scans the table by digest ranges instead
      -- (keystore/replay-store.ts), a slice at a time.
      DROP INDEX seen_ciphertexts_by_time;
    `,
  },
];
