// PostgreSQL schema of the keystore, applied in order inside one transaction each; gw_meta's
// 'pg_schema' records how far a database has come. Append only, like ../migrations.ts.
//
// The SQLite tables are not repeated here: their rows live in gw_rows as sealed row images (see
// backend.ts), so a migration of the SQLite schema needs no PostgreSQL counterpart.

export interface PgMigration {
  version: number;
  name: string;
  sql: string;
}

export const PG_MIGRATIONS: PgMigration[] = [
  {
    version: 1,
    name: 'init',
    sql: `
      -- The passphrase check (kdf_salt, kdf_params, check: as in SQLite's meta) and schema versions.
      CREATE TABLE gw_meta (key text PRIMARY KEY, value bytea NOT NULL);

      -- The one lease: who is active, under which epoch, until when (the database's clock).
      CREATE TABLE gw_lease (
        id int PRIMARY KEY CHECK (id = 1),
        holder text,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL
      );
      INSERT INTO gw_lease (id, holder, epoch, expires_at) VALUES (1, NULL, 0, now());

      -- Every row of every SQLite table: pk is a keyed digest of (table, primary key), data the
      -- sealed row image. epoch: the lease epoch of the write (fencing is checked in the writing
      -- transaction; the column is kept for audits).
      CREATE SEQUENCE gw_rev;
      CREATE TABLE gw_rows (
        tbl text NOT NULL,
        pk text NOT NULL,
        data bytea NOT NULL,
        rev bigint NOT NULL,
        epoch bigint NOT NULL,
        PRIMARY KEY (tbl, pk)
      );

      -- Messages a standby accepted (POST /v1/messages), sealed, until the active one moves them
      -- into its outbox (the delete commits in the same transaction as the outbox row).
      CREATE TABLE gw_accepted (
        id text PRIMARY KEY,
        idem text UNIQUE,
        data bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
    `,
  },
  {
    version: 2,
    name: 'one round trip per batch',
    sql: `
      -- A write-through batch in one statement (one round trip, its own transaction): the lease
      -- check (FOR SHARE: a takeover waits for it, and it for a takeover) and every write. Returns
      -- false, writing nothing, when the holder or epoch moved on or the lease has expired.
      CREATE FUNCTION gw_ship(p_holder text, p_epoch bigint, up_tbl text[], up_pk text[], up_data bytea[],
                              del_tbl text[], del_pk text[], accepted text[], version bytea)
      RETURNS boolean LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM 1 FROM gw_lease WHERE id = 1 AND holder = p_holder AND epoch = p_epoch AND expires_at > now() FOR SHARE;
        IF NOT FOUND THEN RETURN false; END IF;
        INSERT INTO gw_rows (tbl, pk, data, rev, epoch)
          SELECT u.tbl, u.pk, u.data, nextval('gw_rev'), p_epoch FROM unnest(up_tbl, up_pk, up_data) AS u(tbl, pk, data)
        ON CONFLICT (tbl, pk) DO UPDATE SET data = excluded.data, rev = excluded.rev, epoch = excluded.epoch;
        DELETE FROM gw_rows USING unnest(del_tbl, del_pk) AS d(tbl, pk) WHERE gw_rows.tbl = d.tbl AND gw_rows.pk = d.pk;
        DELETE FROM gw_accepted WHERE id = ANY(accepted);
        IF version IS NOT NULL THEN
          INSERT INTO gw_meta (key, value) VALUES ('sqlite_version', version) ON CONFLICT (key) DO UPDATE SET value = excluded.value;
        END IF;
        RETURN true;
      END $$;
    `,
  },
  {
    version: 3,
    name: 'stanzas handed over',
    sql: `
      -- Stanzas an instance read from the server after its lease had gone (a frozen former active
      -- instance whose connection ejabberd kept feeding), sealed, until the active one handles them.
      CREATE TABLE gw_handoff (
        id text PRIMARY KEY,
        data bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
      );
    `,
  },
  {
    version: 4,
    name: 'hand-over rows deleted with what handling them changed',
    sql: `
      -- gw_ship with the gw_handoff rows the active instance has handled: deleted in the same
      -- transaction as the rows their handling changed, so a crash before it leaves them to be
      -- handled again, never lost. The nine-argument gw_ship stays for an instance of the version
      -- before (a rolling upgrade).
      CREATE FUNCTION gw_ship(p_holder text, p_epoch bigint, up_tbl text[], up_pk text[], up_data bytea[],
                              del_tbl text[], del_pk text[], accepted text[], handoff text[], version bytea)
      RETURNS boolean LANGUAGE plpgsql AS $$
      BEGIN
        IF NOT gw_ship(p_holder, p_epoch, up_tbl, up_pk, up_data, del_tbl, del_pk, accepted, version) THEN RETURN false; END IF;
        DELETE FROM gw_handoff WHERE id = ANY(handoff);
        RETURN true;
      END $$;
    `,
  },
  {
    version: 5,
    name: 'batches in flight together, committed in order',
    sql: `
      -- The write-through sends a batch while the one before it is still in flight (on another
      -- connection), so it need not wait for that one's answer and a turn of the gateway's event loop.
      -- Each batch names its predecessor (p_prev) and its own number (p_seq, never reused within an
      -- epoch). After the lease check, it waits until gw_ship_seq holds p_prev (blocked on the row
      -- while the predecessor, which wrote its number there first, has not committed; a short sleep
      -- while the predecessor has not arrived yet), writes p_seq there, then its rows. So batches
      -- commit in the order they were taken, none touches a row before the one before it has
      -- committed, and a batch whose predecessor rolled back (or never came) raises and rolls back:
      -- PostgreSQL always holds the working copy as it was when one batch was taken, as when batches
      -- went one at a time. The ten-argument gw_ship stays (rolling upgrade).
      CREATE TABLE gw_ship_seq (
        id int PRIMARY KEY CHECK (id = 1),
        epoch bigint NOT NULL,
        seq bigint NOT NULL
      );
      INSERT INTO gw_ship_seq (id, epoch, seq) VALUES (1, 0, 0);
      CREATE FUNCTION gw_ship(p_holder text, p_epoch bigint, up_tbl text[], up_pk text[], up_data bytea[],
                              del_tbl text[], del_pk text[], accepted text[], handoff text[], version bytea,
                              p_prev bigint, p_seq bigint)
      RETURNS boolean LANGUAGE plpgsql AS $$
      DECLARE
        deadline timestamptz := clock_timestamp() + interval '1 second';
        cur_epoch bigint;
        cur_seq bigint;
      BEGIN
        PERFORM 1 FROM gw_lease WHERE id = 1 AND holder = p_holder AND epoch = p_epoch AND expires_at > now() FOR SHARE;
        IF NOT FOUND THEN RETURN false; END IF;
        LOOP
          UPDATE gw_ship_seq SET epoch = p_epoch, seq = p_seq
            WHERE id = 1 AND CASE WHEN epoch = p_epoch THEN seq = p_prev ELSE p_prev = 0 END;
          EXIT WHEN FOUND;
          SELECT epoch, seq INTO cur_epoch, cur_seq FROM gw_ship_seq WHERE id = 1;
          -- Numbers only grow: past p_prev, the predecessor will never be the last one committed.
          IF cur_epoch > p_epoch OR (cur_epoch = p_epoch AND cur_seq > p_prev) OR clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'gw_ship: batch % of epoch % found % where it expected %', p_seq, p_epoch, cur_seq, p_prev
              USING ERRCODE = '40001';
          END IF;
          PERFORM pg_sleep(0.0005);
        END LOOP;
        INSERT INTO gw_rows (tbl, pk, data, rev, epoch)
          SELECT u.tbl, u.pk, u.data, nextval('gw_rev'), p_epoch FROM unnest(up_tbl, up_pk, up_data) AS u(tbl, pk, data)
        ON CONFLICT (tbl, pk) DO UPDATE SET data = excluded.data, rev = excluded.rev, epoch = excluded.epoch;
        DELETE FROM gw_rows USING unnest(del_tbl, del_pk) AS d(tbl, pk) WHERE gw_rows.tbl = d.tbl AND gw_rows.pk = d.pk;
        DELETE FROM gw_accepted WHERE id = ANY(accepted);
        DELETE FROM gw_handoff WHERE id = ANY(handoff);
        IF version IS NOT NULL THEN
          INSERT INTO gw_meta (key, value) VALUES ('sqlite_version', version) ON CONFLICT (key) DO UPDATE SET value = excluded.value;
        END IF;
        RETURN true;
      END $$;
    `,
  },
];
