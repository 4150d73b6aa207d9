// XEP-0115 entity capabilities: our `ver` string, and a cache of remote entities' features resolved
// by disco#info and verified against the hash they announced. https://xmpp.org/extensions/xep-0115.html
import { createHash } from 'node:crypto';
import xml from '@xmpp/xml';
import type Element from 'ltx/lib/Element.js';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';

export const NS_CAPS = 'http://jabber.org/protocol/caps';
export const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
export const NS_DATA = 'jabber:x:data';

export interface Identity {
  category: string;
  type: string;
  name?: string;
  lang?: string;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The verification string S of XEP-0115 §5.1, then base64(SHA-1(S)). */
export function capsVer(identities: Identity[], features: string[], forms: Element[] = []): string {
  let s = '';
  const ids = [...identities].sort(
    (a, b) => cmp(a.category, b.category) || cmp(a.type, b.type) || cmp(a.lang ?? '', b.lang ?? '') || cmp(a.name ?? '', b.name ?? ''),
  );
  for (const i of ids) s += `${i.category}/${i.type}/${i.lang ?? ''}/${i.name ?? ''}<`;
  for (const f of [...new Set(features)].sort(cmp)) s += `${f}<`;
  const withType = forms
    .map((form) => {
      const fields = form.getChildren('field');
      const typeField = fields.find((f) => f.attrs.var === 'FORM_TYPE');
      return { form, fields, formType: typeField?.getChildText('value') ?? '' };
    })
    .filter((f) => f.formType !== '')
    .sort((a, b) => cmp(a.formType, b.formType));
  for (const { fields, formType } of withType) {
    s += `${formType}<`;
    const others = fields.filter((f) => f.attrs.var !== 'FORM_TYPE').sort((a, b) => cmp(String(a.attrs.var), String(b.attrs.var)));
    for (const f of others) {
      s += `${f.attrs.var}<`;
      for (const v of f.getChildren('value').map((v) => v.getText()).sort(cmp)) s += `${v}<`;
    }
  }
  return createHash('sha1').update(s, 'utf8').digest('base64');
}

/** Parses a disco#info <query> into identities, features and forms. */
export function parseDiscoInfo(query: Element): { identities: Identity[]; features: string[]; forms: Element[] } {
  const identities = query.getChildren('identity').map((i) => ({
    category: String(i.attrs.category ?? ''),
    type: String(i.attrs.type ?? ''),
    ...(i.attrs.name !== undefined ? { name: String(i.attrs.name) } : {}),
    ...(i.attrs['xml:lang'] !== undefined ? { lang: String(i.attrs['xml:lang']) } : {}),
  }));
  const features = query.getChildren('feature').map((f) => String(f.attrs.var ?? ''));
  const forms = query.getChildren('x', NS_DATA).filter((x) => x.attrs.type === 'result');
  return { identities, features, forms };
}

/** Remote entities' feature sets: by verified caps ver (shared by many JIDs), and per full JID. */
export class RemoteCaps {
  readonly #byVer = new LRUCache<string, ReadonlySet<string>>({ max: 1000 });
  readonly #byJid = new LRUCache<string, ReadonlySet<string>>({ max: 10000 });
  readonly #inflight = new Map<string, Promise<ReadonlySet<string> | null>>();
  readonly #request: (iq: Element) => Promise<Element>;
  readonly #log: Logger;

  constructor(request: (iq: Element) => Promise<Element>, log: Logger) {
    this.#request = request;
    this.#log = log;
  }

  /** Features of `full` as last resolved, if known. */
  known(full: string): ReadonlySet<string> | undefined {
    return this.#byJid.get(full);
  }

  forget(full: string): void {
    this.#byJid.delete(full);
  }

  /**
   * Resolves the features announced by a presence's <c/> element, asking `full` with disco#info
   * (as hosted JID `asker`) when the ver is new. Returns null when the entity does not answer.
   */
  async resolve(asker: string, full: string, c: Element): Promise<ReadonlySet<string> | null> {
    const ver = String(c.attrs.ver ?? '');
    const hash = String(c.attrs.hash ?? '');
    const node = String(c.attrs.node ?? '');
    const cached = hash === 'sha-1' ? this.#byVer.get(ver) : undefined;
    if (cached) {
      this.#byJid.set(full, cached);
      return cached;
    }
    const key = `${full}\0${ver}`;
    let p = this.#inflight.get(key);
    if (!p) {
      p = this.#query(asker, full, node ? `${node}#${ver}` : undefined, hash === 'sha-1' ? ver : undefined).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return p;
  }

  async #query(asker: string, full: string, node: string | undefined, expectVer: string | undefined): Promise<ReadonlySet<string> | null> {
    try {
      const res = await this.#request(
        xml('iq', { type: 'get', from: asker, to: full }, xml('query', { xmlns: NS_DISCO_INFO, ...(node ? { node } : {}) })),
      );
      const query = res.getChild('query', NS_DISCO_INFO);
      if (!query) return null;
      const info = parseDiscoInfo(query);
      const features = new Set(info.features);
      this.#byJid.set(full, features);
      if (expectVer) {
        if (capsVer(info.identities, info.features, info.forms) === expectVer) this.#byVer.set(expectVer, features);
        else this.#log.debug({ full }, 'caps ver does not match disco#info; not cached by ver');
      }
      return features;
    } catch (e) {
      this.#log.debug({ err: e, full }, 'disco#info for caps failed');
      return null;
    }
  }
}
