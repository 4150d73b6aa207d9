// Stanzas a former active instance read from the server without the lease (a frozen instance that
// ejabberd kept feeding; PgBackend.handOff, table gw_handoff): the active instance handles each as if
// the server had sent it here. Its row is deleted only once it has been handled, in the write-through
// batch that ships what handling it changed in the working copy (one PostgreSQL transaction): a crash
// before that commit leaves the row for the next active instance, so a hand-over is never lost.
import type { Logger } from 'pino';
import type { PgBackend, WriteThrough } from '../keystore/pg/backend.js';
import { parseXml, type Element } from '../component/xml.js';

export interface HandoffImporterDeps {
  backend: PgBackend;
  wt: WriteThrough;
  /** Handles one stanza; resolves true once handled, false when this instance may not act now (the row stays). */
  handle: (el: Element) => Promise<boolean>;
  log: Logger;
}

/** Handed-over stanzas handled at once (the rest wait their turn, as the inbound queue does). */
const CONCURRENCY = 16;

export class HandoffImporter {
  readonly #d: HandoffImporterDeps;
  /** Rows waiting, being handled, or handled and not yet known deleted: not taken again by a later poll. */
  readonly #inHand = new Set<string>();
  readonly #waiting: Array<{ id: string; el: Element }> = [];
  readonly #running = new Set<Promise<void>>();

  constructor(d: HandoffImporterDeps) {
    this.#d = d;
  }

  /** Reads the waiting rows, oldest first, and takes those not in hand to be handled; resolves with how many it took. */
  async poll(limit = 200): Promise<number> {
    const rows = await this.#d.backend.handoffBatch(limit);
    let started = 0;
    for (const h of rows) {
      if (this.#inHand.has(h.id)) continue;
      this.#inHand.add(h.id);
      let el: Element;
      try {
        el = parseXml(h.xml);
      } catch (err) {
        this.#d.log.warn({ err }, 'a handed-over stanza does not parse; dropped');
        this.#d.wt.dropHandoff(h.id);
        continue;
      }
      started++;
      this.#waiting.push({ id: h.id, el });
    }
    this.#pump();
    if (started) this.#d.log.info({ stanzas: started }, 'handling stanzas a former active instance read without the lease');
    return started;
  }

  /** Resolves once every stanza taken so far is handled and its row's delete settled (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.#running.size) await Promise.allSettled([...this.#running]);
  }

  #pump(): void {
    while (this.#running.size < CONCURRENCY && this.#waiting.length) {
      const { id, el } = this.#waiting.shift()!;
      const p = this.#handleOne(id, el).finally(() => {
        this.#running.delete(p);
        this.#pump();
      });
      this.#running.add(p);
    }
  }

  async #handleOne(id: string, el: Element): Promise<void> {
    let handled = false;
    try {
      handled = await this.#d.handle(el);
    } catch (err) {
      this.#d.log.warn({ err }, 'a handed-over stanza could not be handled; left for a later attempt');
    }
    if (!handled) {
      this.#inHand.delete(id);
      return;
    }
    this.#d.wt.dropHandoff(id);
    try {
      await this.#d.wt.barrier();
      this.#inHand.delete(id);
    } catch {
      // Not shipped: the delete goes with a later batch (the write-through keeps it), or, fenced,
      // the row stays for the next active instance. Either way it is not handled again here.
    }
  }
}
