// Output pacing on the component connection (issue 15). A server reads the component stream in turn
// with its other connections, a chunk at a time: under a flood the answers the flood asks for
// (disco#info results, item-not-found and service-unavailable errors) pile up unread in its receive
// queue, and a ping's answer written after them waits behind all of them (876 KB, seconds, in
// npm run bench -- storm). Node cannot see that queue (the socket's own buffer stays empty: the
// kernel takes everything), so the pacer asks the server: every half window of output it writes
// a marker, an iq ping from the component's domain to itself, which the server routes back only
// once it has read everything written before it. Bytes written after the last marker that came
// back are unconfirmed; past limits.output_window of them, low-priority output is held here instead
// of written, and written as markers come back: round robin between recipients, so one requester's
// pile does not hold back another's answer. Held output beyond limits.max_held_output is shed from
// the recipient with the most held (the flooder), and anything held longer than
// limits.held_output_max_age is shed when its turn comes (its requester has given up by then).
// High-priority output (messages, receipts, presence, the gateway's own iqs, pubsub results, empty
// iq results such as pongs) is never held. What bounds it instead is the inbound side: while more
// than BEHIND_WINDOWS windows are unconfirmed, `behind` is true and the inbound queue starts no new
// handler (inbound-queue.ts), so the answers a flood asks for are not made faster than the server
// reads them; they wait as unhandled stanzas (bounded by limits.max_inbound_queue), never shed, and a
// pong waits behind at most those windows plus the answers of the handlers already running. (In the
// storm bench's burst of 10,000 first-contact device-list reads, whose answers are high priority, the
// gateway wrote them as fast as it made them while Prosody, reading the component stream 8 KB a turn
// in turn with eight busy clients, fell 300-700 KB behind; pongs waited 1-5 s behind those bytes.)
import type Element from 'ltx/lib/Element.js';
import type { Metrics } from '../http/metrics.js';

export type OutputPriority = 'high' | 'low';

const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const NS_DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';

/**
 * Errors of any kind and disco results (answers a stranger can ask for at will, 55% of the bytes
 * in the storm bench) are low priority; everything else is high, pubsub results too: a device
 * list or bundle read is how a contact starts encrypting to a hosted JID (the bench's burst of
 * 10,000 first-contact reads lost a third of its answers to shedding when they were held).
 */
export function outputPriority(el: Element): OutputPriority {
  const type = el.attrs.type;
  if (type === 'error') return 'low';
  if (el.name === 'iq' && type === 'result') {
    const q = el.getChild('query');
    if (q && (q.attrs.xmlns === NS_DISCO_INFO || q.attrs.xmlns === NS_DISCO_ITEMS)) return 'low';
  }
  return 'high';
}

export interface PacerLimits {
  /** Unconfirmed bytes past which low-priority output is held. */
  output_window: number;
  /** Held bytes past which the largest recipient's oldest held stanza is shed. */
  max_held_output: number;
  /** Held longer than this (ms): shed instead of written. */
  held_output_max_age: number;
}

export interface PacerDeps {
  /** The component's domain (markers go from it to it). */
  domain: string;
  limits: PacerLimits;
  metrics: Metrics;
  /** Writes a stanza's text on the stream now (held stanzas and markers; errors are the caller's concern). */
  write: (text: string, name: string) => void;
  now?: () => number;
  /** A marker not back after this long (ms) counts as read; after MAX_LOST of them in a row nothing is held until one comes back. */
  markerTimeoutMs?: number;
  /** The server has confirmed reading more (a marker came back or timed out): `behind` may have changed. */
  onProgress?: () => void;
}

interface Held {
  text: string;
  name: string;
  at: number;
}

export const MARKER_PREFIX = 'gw-mark-';
/** Unconfirmed windows past which the pacer is `behind` (inbound handling waits). */
export const BEHIND_WINDOWS = 8;
/** Markers lost in a row after which this server is taken not to route them (pacing off). */
const MAX_LOST = 3;

export class OutputPacer {
  readonly #d: PacerDeps;
  readonly #now: () => number;
  readonly #markerTimeoutMs: number;
  /** Bytes written on this stream, and of those the ones the server has confirmed reading. */
  #written = 0;
  #confirmed = 0;
  #lastMarkAt = 0;
  /** Low-priority output was offered since the last marker. */
  #lowSinceMark = false;
  /** Outstanding markers: id -> [position in the stream, when written], oldest first. */
  readonly #markers = new Map<string, [number, number]>();
  #nextMarker = 0;
  #lost = 0;
  #off = false;
  /** Inbound work waits on this stream's progress (`behind` said so): markers are written for it too. */
  #demand = false;
  /** Held output per recipient, and the recipients in round-robin order. */
  readonly #held = new Map<string, Held[]>();
  #heldBytes = 0;
  #heldCount = 0;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(d: PacerDeps) {
    this.#d = d;
    this.#now = d.now ?? Date.now;
    this.#markerTimeoutMs = d.markerTimeoutMs ?? 10_000;
  }

  /** Bytes written that the server has not confirmed reading. */
  get unconfirmed(): number {
    return this.#written - this.#confirmed;
  }

  get heldCount(): number {
    return this.#heldCount;
  }

  get heldBytes(): number {
    return this.#heldBytes;
  }

  /**
   * True while more than BEHIND_WINDOWS windows of output are unconfirmed: whoever makes output on
   * demand (the inbound queue) should wait for onProgress. Unconfirmed bytes are only known while
   * markers are out (output without low-priority parts writes none), so the first time this finds
   * them over the mark with no marker out it writes one and says false: the bytes before it are
   * not known to be behind. False while pacing is off or the stream is closed.
   */
  get behind(): boolean {
    if (this.#closed || this.#off) {
      this.#demand = false;
      return false;
    }
    const over = this.unconfirmed >= BEHIND_WINDOWS * this.#d.limits.output_window;
    if (!over) {
      this.#demand = false;
      return false;
    }
    this.#demand = true;
    if (this.#markers.size === 0) {
      this.#mark();
      return false;
    }
    return true;
  }

  /** Whether the server is taken not to route markers back (pacing off on this stream). */
  get off(): boolean {
    return this.#off;
  }

  /**
   * Offers one serialized stanza. Returns true when the caller must write it now (then call
   * wrote()), false when it was held (written later by the pacer, or shed).
   */
  offer(text: string, el: Element): boolean {
    if (this.#closed || outputPriority(el) === 'high') return true;
    this.#lowSinceMark = true;
    if (this.#off) return true;
    if (this.#heldCount === 0 && this.unconfirmed < this.#d.limits.output_window) return true;
    this.#d.metrics.limited.inc({ limit: 'output_window' });
    const key = String(el.attrs.to ?? '').split('/')[0]!.toLowerCase();
    let q = this.#held.get(key);
    if (!q) this.#held.set(key, (q = []));
    q.push({ text, name: el.name, at: this.#now() });
    this.#heldBytes += text.length;
    this.#heldCount++;
    while (this.#heldBytes > this.#d.limits.max_held_output) this.#shedLargest();
    // Something must come back to release what is held.
    if (this.#markers.size === 0) this.#mark();
    this.#arm();
    return false;
  }

  /**
   * Counts text the caller wrote; writes a marker every half window while low-priority output is
   * offered (also while off: one coming back turns pacing on again) or inbound work waits on the
   * output (`behind`). Without either (a bot's messages only) no marker is written: the server's
   * progress matters only to what could be held or is waited for.
   */
  wrote(bytes: number): void {
    this.#written += bytes;
    if ((this.#lowSinceMark || this.#demand) && this.#written - this.#lastMarkAt >= this.#d.limits.output_window / 2) this.#mark();
  }

  /** An inbound stanza: true when it is one of our markers back (consumed: nothing to answer). */
  onInbound(el: Element): boolean {
    if (el.name !== 'iq' || el.attrs.type !== 'get') return false;
    const id = el.attrs.id;
    if (typeof id !== 'string' || !id.startsWith(MARKER_PREFIX) || String(el.attrs.from ?? '') !== this.#d.domain) return false;
    // The server routes markers: a late one too proves it (pacing back on).
    this.#lost = 0;
    this.#off = false;
    const m = this.#markers.get(id);
    if (m) this.#confirm(m[0]);
    this.#d.onProgress?.();
    return true;
  }

  /** The stream ended: held output is dropped (it was for this stream's requesters). */
  close(): void {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    if (this.#heldCount > 0) this.#d.metrics.limited.inc({ limit: 'max_held_output' }, this.#heldCount);
    this.#held.clear();
    this.#heldBytes = 0;
    this.#heldCount = 0;
    this.#markers.clear();
  }

  #mark(): void {
    const id = `${MARKER_PREFIX}${(this.#nextMarker++).toString(36)}`;
    const d = this.#d.domain;
    const text = `<iq type="get" from="${d}" to="${d}" id="${id}"><ping xmlns="urn:xmpp:ping"/></iq>`;
    this.#d.write(text, 'iq');
    this.#written += text.length;
    this.#lastMarkAt = this.#written;
    this.#lowSinceMark = this.#heldCount > 0;
    this.#markers.set(id, [this.#written, this.#now()]);
    this.#arm();
  }

  /** Everything up to `pos` has been read by the server. */
  #confirm(pos: number): void {
    if (pos > this.#confirmed) this.#confirmed = pos;
    for (const [id, [p]] of this.#markers) {
      if (p > this.#confirmed) break;
      this.#markers.delete(id);
    }
    this.#release();
  }

  /** Writes held output, round robin by recipient, while the window has room. */
  #release(): void {
    const window = this.#d.limits.output_window;
    const maxAge = this.#d.limits.held_output_max_age;
    while (this.#heldCount > 0 && (this.unconfirmed < window || this.#off)) {
      const now = this.#now();
      for (const [key, q] of this.#held) {
        const h = q.shift()!;
        this.#heldBytes -= h.text.length;
        this.#heldCount--;
        // Rotate: this recipient goes to the back of the order.
        this.#held.delete(key);
        if (q.length > 0) this.#held.set(key, q);
        if (now - h.at > maxAge) {
          this.#d.metrics.limited.inc({ limit: 'held_output_max_age' });
          continue;
        }
        this.#d.write(h.text, h.name);
        this.wrote(h.text.length);
        break;
      }
    }
    if (this.#heldCount > 0 && this.#markers.size === 0) this.#mark();
  }

  #shedLargest(): void {
    let worst: Held[] | null = null;
    let worstKey = '';
    for (const [k, q] of this.#held) {
      if (!worst || q.length > worst.length) {
        worst = q;
        worstKey = k;
      }
    }
    if (!worst) return;
    const h = worst.shift()!;
    this.#heldBytes -= h.text.length;
    this.#heldCount--;
    if (worst.length === 0) this.#held.delete(worstKey);
    this.#d.metrics.limited.inc({ limit: 'max_held_output' });
  }

  /** A timer while markers are out: a marker not back in time counts as read (a lost one must not hold output forever). */
  #arm(): void {
    if (this.#timer || this.#closed) return;
    this.#timer = setInterval(() => this.tick(), Math.max(50, Math.min(1000, this.#markerTimeoutMs / 4)));
    this.#timer.unref();
  }

  /** Times out markers and releases what may go (run by its timer; tests call it). */
  tick(): void {
    const now = this.#now();
    const first = this.#markers.entries().next();
    if (!first.done) {
      const [id, [pos, at]] = first.value;
      if (now - at >= this.#markerTimeoutMs) {
        this.#markers.delete(id);
        if (++this.#lost >= MAX_LOST) this.#off = true;
        this.#confirm(pos);
        this.#d.onProgress?.();
      }
    }
    if (this.#heldCount > 0) this.#release();
    if (this.#markers.size === 0 && this.#heldCount === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }
}
