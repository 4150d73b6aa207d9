// The engines the gateway runs, listed explicitly (no discovery by magic), in a fixed order.
import type { Element, ProtocolEngine, ProtocolId } from './engine.js';

export class EngineRegistry {
  readonly #engines = new Map<ProtocolId, ProtocolEngine>();

  constructor(engines: ProtocolEngine[]) {
    for (const e of engines) this.#engines.set(e.id, e);
  }

  get(id: ProtocolId): ProtocolEngine | undefined {
    return this.#engines.get(id);
  }

  all(): ProtocolEngine[] {
    return [...this.#engines.values()];
  }

  /** The engine whose payload an inbound stanza carries, if any. */
  recognize(stanza: Element): ProtocolEngine | undefined {
    return this.all().find((e) => e.recognizes(stanza));
  }

  /** Features every hosted JID advertises because of the engines. */
  features(): string[] {
    return this.all().flatMap((e) => [...e.features]);
  }
}
