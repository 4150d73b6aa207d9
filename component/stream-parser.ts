// The XML stream parser of the component connection: @xmpp/xml's Parser (ltx underneath), fed so
// that its cost stays linear in the input. ltx looks for the next '<' (in text) or closing quote
// (in an attribute value) from every position of a chunk that has none after it, so a run of text
// reaching the end of a socket chunk costs the square of its length: a 100 KB body arriving in 64 KB
// chunks held the event loop for 50-150 ms, and a storm of them kept the gateway from answering
// pings and its own keepalive (npm run bench -- storm). Here each chunk is fed up to its last '<' or
// '>' (every run before that ends inside the piece, where ltx's fast-forward works); a short rest is
// fed at once, a long one is held and fed with the next chunk. Held text is never a complete stanza
// (it has no '>'), so nothing is delayed; it holds what ltx would have kept as its remainder.
// The bytes are decoded here too (StreamComponent): @xmpp/connection decodes each socket chunk on
// its own (Buffer#toString), which turns a UTF-8 character split across two TCP segments into two
// U+FFFD, so a message body could arrive altered.
import { StringDecoder } from 'node:string_decoder';
import type { Socket } from 'node:net';
import { Component } from '@xmpp/component-core';
import xml from '@xmpp/xml';

/** A rest (after the last '<' or '>') longer than this is held for the next chunk. */
export const MAX_UNTERMINATED_RUN = 1024;

export class StreamParser extends xml.Parser {
  #held = '';

  override write(data: string): void {
    const s = this.#held.length > 0 ? this.#held + data : data;
    this.#held = '';
    const cut = Math.max(s.lastIndexOf('<'), s.lastIndexOf('>')) + 1;
    if (s.length - cut <= MAX_UNTERMINATED_RUN) {
      super.write(s);
      return;
    }
    if (cut > 0) super.write(s.slice(0, cut));
    this.#held = s.slice(cut);
  }

  override end(data?: string): void {
    const s = this.#held + (data ?? '');
    this.#held = '';
    super.end(s.length > 0 ? s : undefined);
  }
}

/**
 * @xmpp/component-core's Component with the stream parser above and a UTF-8 decoder per socket
 * that carries an incomplete character over to the next chunk.
 */
export class StreamComponent extends Component {
  #decoder = new StringDecoder('utf8');

  constructor(options: { service: string; domain: string }) {
    super(options);
    this.Parser = StreamParser;
  }

  override _attachSocket(socket: Socket): void {
    this.#decoder = new StringDecoder('utf8');
    super._attachSocket(socket);
  }

  override _onData(data: Buffer | string): void {
    const text = typeof data === 'string' ? data : this.#decoder.write(data);
    if (text.length > 0) super._onData(text);
  }
}
