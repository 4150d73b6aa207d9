// WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the commit that
// crosses wal_autocheckpoint pages (1000 by default): that commit copies every page written since
// the last one back into the database file and fsyncs twice (synchronous = NORMAL), milliseconds
// on the thread of whoever committed. On a keystore file that is written per message (OMEMO
// sessions and replay digests, the outbox), that was a third of a steady decrypt's keystore write.
//
// Here a worker thread with its own connection to the same file runs PASSIVE checkpoints (they
// never wait for, nor block, the writer) every CHECK_MS; the main connection's own automatic
// checkpoint stays as a fallback at FALLBACK_PAGES, should the worker fall behind or be gone.
// Durability is unchanged: a commit is in the WAL when it returns, as before; a checkpoint only
// moves committed pages into the main file.
// The worker starts lazily, once the WAL file has grown past START_BYTES (most keystores of the
// tests never do), and stop() ends it synchronously (Atomics), before the main connection closes.
//
// What bounds the WAL file: SQLite starts the WAL over from its beginning only when a write begins
// with every frame already copied back, and a checkpoint on another thread never gets there while
// the writer commits without pause (each round leaves behind what was committed during it; in the
// storm bench's burst of 10,000 new identities, ~600 commits a second, the WAL grew to the old
// 16384-page fallback, 64 MB, and stayed that size on disk). So the fallback is FALLBACK_PAGES =
// 4096 (16 MB): the writer's own checkpoint then has only the frames since the worker's last round
// to copy (and its two fsyncs, ~10 ms here), once per 16 MB written under such a burst, and the
// WAL starts over after it. JOURNAL_LIMIT_BYTES (journal_size_limit) makes SQLite cut the file back
// to 4 MB when it starts over, so a burst does not leave a large WAL file behind.
import { statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

const CHECK_MS = 200;
const START_BYTES = 1 << 20;
/** The main connection's own checkpoint threshold once the worker runs (pages; 4 KB each). */
export const FALLBACK_PAGES = 4096;
/** The main connection's journal_size_limit: the WAL file is cut back to this when it starts over. */
export const JOURNAL_LIMIT_BYTES = 4 * 1024 * 1024;
const STOP_WAIT_MS = 5000;

// Control words shared with the worker: [0] command (0 run, 1 stop), [1] state (0 running, 1 closed).
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const ctl = new Int32Array(workerData.ctl);
let db;
try {
  const Database = require(workerData.driver);
  db = new Database(workerData.path, { fileMustExist: true });
  db.pragma('synchronous = NORMAL');
  while (Atomics.load(ctl, 0) === 0) {
    try { db.pragma('wal_checkpoint(PASSIVE)'); } catch { /* busy or gone: the next round, or the fallback */ }
    Atomics.wait(ctl, 0, 0, workerData.checkMs);
  }
} finally {
  try { db && db.close(); } catch {}
  Atomics.store(ctl, 1, 1);
  Atomics.notify(ctl, 1);
}
`;

export class Checkpointer {
  readonly #path: string;
  readonly #driver: string;
  readonly #onStart: () => void;
  readonly #ctl = new Int32Array(new SharedArrayBuffer(8));
  #worker: Worker | undefined;
  #timer: NodeJS.Timeout | undefined;

  /** `onStart` runs when the worker starts (the keystore raises the main connection's threshold then). */
  constructor(path: string, driver: string, onStart: () => void) {
    this.#path = path;
    this.#driver = driver;
    this.#onStart = onStart;
    this.#timer = setInterval(() => this.#maybeStart(), 500);
    this.#timer.unref();
  }

  get running(): boolean {
    return this.#worker !== undefined;
  }

  #maybeStart(): void {
    let size = 0;
    try {
      size = statSync(`${this.#path}-wal`).size;
    } catch {
      return;
    }
    if (size >= START_BYTES) this.start();
  }

  /** Starts the worker now (the keystore starts it on its own once the WAL has grown). */
  start(): void {
    if (this.#worker) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { path: this.#path, driver: this.#driver, ctl: this.#ctl.buffer, checkMs: CHECK_MS } });
    w.unref();
    // A worker that fails leaves the fallback checkpoint in charge; nothing to report beyond that.
    w.on('error', () => {});
    this.#worker = w;
    this.#onStart();
  }

  /** Stops the worker and waits (synchronously, bounded) until its connection is closed. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    const w = this.#worker;
    if (!w) return;
    this.#worker = undefined;
    Atomics.store(this.#ctl, 0, 1);
    Atomics.notify(this.#ctl, 0);
    const deadline = Date.now() + STOP_WAIT_MS;
    while (Atomics.load(this.#ctl, 1) === 0 && Date.now() < deadline) Atomics.wait(this.#ctl, 1, 0, 50);
    void w.terminate().catch(() => {});
  }
}
