// Nodes and items of the pubsub service the gateway runs for its hosted JIDs. Public data (device
// lists, bundles, public keys), so stored as XML text, not sealed.
import type { Keystore } from './keystore.js';

export interface NodeConfig {
  accessModel: 'open' | 'presence';
  /** 0 means unlimited ('max'). */
  maxItems: number;
}

export interface StoredItem {
  id: string;
  payload: string;
}

export class PubsubStore {
  readonly #node;
  readonly #upsertNode;
  readonly #items;
  readonly #upsertItem;
  readonly #nextSeq;
  readonly #trim;
  readonly #deleteItem;
  readonly #deleteNodeItems;
  readonly #deleteNode;
  readonly #nodes;
  readonly #ks: Keystore;

  constructor(ks: Keystore) {
    this.#ks = ks;
    const db = ks.db;
    this.#node = db.prepare<[string, string], { access_model: 'open' | 'presence'; max_items: number }>(
      'SELECT access_model, max_items FROM pubsub_nodes WHERE owner = ? AND node = ?',
    );
    this.#upsertNode = db.prepare(
      'INSERT INTO pubsub_nodes (owner, node, access_model, max_items) VALUES (?, ?, ?, ?) ' +
        'ON CONFLICT (owner, node) DO UPDATE SET access_model = excluded.access_model, max_items = excluded.max_items',
    );
    this.#items = db.prepare<[string, string], { item_id: string; payload: string }>(
      'SELECT item_id, payload FROM pubsub_items WHERE owner = ? AND node = ? ORDER BY seq DESC',
    );
    this.#nextSeq = db.prepare<[string, string], { s: number | null }>('SELECT max(seq) AS s FROM pubsub_items WHERE owner = ? AND node = ?');
    this.#upsertItem = db.prepare(
      'INSERT INTO pubsub_items (owner, node, item_id, payload, seq) VALUES (?, ?, ?, ?, ?) ' +
        'ON CONFLICT (owner, node, item_id) DO UPDATE SET payload = excluded.payload, seq = excluded.seq',
    );
    this.#trim = db.prepare(
      'DELETE FROM pubsub_items WHERE owner = ? AND node = ? AND item_id NOT IN (SELECT item_id FROM pubsub_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?)',
    );
    this.#deleteItem = db.prepare('DELETE FROM pubsub_items WHERE owner = ? AND node = ? AND item_id = ?');
    this.#deleteNodeItems = db.prepare('DELETE FROM pubsub_items WHERE owner = ? AND node = ?');
    this.#deleteNode = db.prepare('DELETE FROM pubsub_nodes WHERE owner = ? AND node = ?');
    this.#nodes = db.prepare<[string], { node: string }>('SELECT node FROM pubsub_nodes WHERE owner = ? ORDER BY node');
  }

  node(owner: string, node: string): NodeConfig | undefined {
    const r = this.#node.get(owner, node);
    return r ? { accessModel: r.access_model, maxItems: r.max_items } : undefined;
  }

  nodes(owner: string): string[] {
    return this.#nodes.all(owner).map((r) => r.node);
  }

  /** Newest first. */
  items(owner: string, node: string): StoredItem[] {
    return this.#items.all(owner, node).map((r) => ({ id: r.item_id, payload: r.payload }));
  }

  /** Creates or reconfigures the node, stores the item as the newest and trims to max items. */
  publish(owner: string, node: string, config: NodeConfig, itemId: string, payload: string): void {
    this.#ks.transaction(() => {
      this.#upsertNode.run(owner, node, config.accessModel, config.maxItems);
      const seq = (this.#nextSeq.get(owner, node)?.s ?? 0) + 1;
      this.#upsertItem.run(owner, node, itemId, payload, seq);
      if (config.maxItems > 0) this.#trim.run(owner, node, owner, node, config.maxItems);
    });
  }

  retract(owner: string, node: string, itemId?: string): void {
    this.#ks.transaction(() => {
      if (itemId === undefined) {
        this.#deleteNodeItems.run(owner, node);
        this.#deleteNode.run(owner, node);
      } else {
        this.#deleteItem.run(owner, node, itemId);
      }
    });
  }
}
