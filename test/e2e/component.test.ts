// The gateway against a real Prosody: connection, disco and caps, the presence subscription
// handshake, the pubsub service (items, +notify events), addressing errors, and /readyz following
// the server going away and coming back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type Element from 'ltx/lib/Element.js';
import { Prosody } from '../harness/prosody.js';
import { XmppUser, xml } from '../harness/xmpp-user.js';
import { TestGateway, waitUntil } from '../harness/gateway.js';
import { capsVer } from '../../component/caps.js';

const NS_INFO = 'http://jabber.org/protocol/disco#info';
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_EVENT = 'http://jabber.org/protocol/pubsub#event';

describe('gateway component on a real Prosody', () => {
  let server: Prosody;
  let gw: TestGateway;
  let bot: string;

  before(async () => {
    server = await Prosody.start({ extraDomains: ['outside.test'] });
    gw = await TestGateway.start(server);
    bot = `alerts@${gw.domain}`;
  });

  after(async () => {
    await gw?.destroy();
    await server?.destroy();
  });

  test('connects and /readyz says ready', async () => {
    const res = await fetch(`${gw.url}/readyz`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { status: string };
    assert.equal(body.status, 'ready');
  });

  test('a user gets disco#info from a bot JID and from the domain', async () => {
    const alice = await XmppUser.connect(server, 'alice-disco');
    try {
      const res = await alice.iq(xml('iq', { type: 'get', to: bot }, xml('query', { xmlns: NS_INFO })));
      const q = res.getChild('query', NS_INFO)!;
      const ids = q.getChildren('identity').map((i) => `${i.attrs.category}/${i.attrs.type}`);
      assert.ok(ids.includes('client/bot'), `identities: ${ids}`);
      assert.ok(ids.includes('pubsub/pep'));
      const features = q.getChildren('feature').map((f) => f.attrs.var);
      for (const f of [NS_INFO, 'http://jabber.org/protocol/caps', 'urn:xmpp:receipts', NS_PUBSUB]) assert.ok(features.includes(f), f);
      const dom = await alice.iq(xml('iq', { type: 'get', to: gw.domain }, xml('query', { xmlns: NS_INFO })));
      const domFeatures = dom.getChild('query', NS_INFO)!.getChildren('feature').map((f) => f.attrs.var);
      assert.ok(domFeatures.includes('jid\\20escaping'));
      const items = await alice.iq(xml('iq', { type: 'get', to: gw.domain }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })));
      const jids = items.getChild('query')!.getChildren('item').map((i) => i.attrs.jid);
      assert.deepEqual(jids, [bot]);
    } finally {
      await alice.stop();
    }
  });

  test('presence subscription completes both ways, is remembered, and presence carries verifiable caps', async () => {
    const alice = await XmppUser.connect(server, 'alice-sub');
    try {
      await alice.send(xml('presence', { to: bot, type: 'subscribe' }));
      // The gateway accepts, sends its presence with caps, and subscribes back.
      const subscribed = await alice.waitFor((el) => el.is('presence') && el.attrs.type === 'subscribed' && el.attrs.from === bot, 10000, 'step L65');
      assert.ok(subscribed);
      const avail = await alice.waitFor((el) => el.is('presence') && !el.attrs.type && String(el.attrs.from).startsWith(`${bot}/`), 10000, 'step L67');
      const c = avail.getChild('c', 'http://jabber.org/protocol/caps')!;
      assert.ok(c, 'presence has caps');
      const sub = await alice.waitFor((el) => el.is('presence') && el.attrs.type === 'subscribe' && el.attrs.from === bot, 10000, 'step L70');
      assert.ok(sub);
      await alice.send(xml('presence', { to: bot, type: 'subscribed' }));
      await waitUntil(() => gw.gateway.subscriptions.get(bot, alice.bare).to, 5000, 'subscription to');
      const s = gw.gateway.subscriptions.get(bot, alice.bare);
      assert.equal(s.from, true);
      assert.equal(s.to, true);
      // The caps node#ver resolves by disco#info to a feature set whose hash is the announced ver.
      const res = await alice.iq(xml('iq', { type: 'get', to: String(avail.attrs.from) }, xml('query', { xmlns: NS_INFO, node: `${c.attrs.node}#${c.attrs.ver}` })));
      const q = res.getChild('query', NS_INFO)!;
      const identities = q.getChildren('identity').map((i) => ({ category: String(i.attrs.category), type: String(i.attrs.type), name: i.attrs.name as string | undefined }));
      const features = q.getChildren('feature').map((f) => String(f.attrs.var));
      assert.equal(capsVer(identities, features), c.attrs.ver);
      // A probe from the subscribed user is answered with presence.
      await alice.send(xml('presence', { to: bot, type: 'probe' }));
      await alice.waitFor((el) => el.is('presence') && !el.attrs.type && String(el.attrs.from).startsWith(`${bot}/`), 10000, 'step L85');
      // Unsubscribe is remembered, and the bot goes unavailable for her (RFC 6121 §3.3.3).
      await alice.send(xml('presence', { to: bot, type: 'unsubscribe' }));
      await alice.waitFor((el) => el.is('presence') && el.attrs.type === 'unavailable' && String(el.attrs.from).startsWith(`${bot}/`), 10000, 'unavailable after unsubscribe');
      await waitUntil(() => !gw.gateway.subscriptions.get(bot, alice.bare).from, 5000, 'subscription from removed');
    } finally {
      await alice.stop();
    }
  });

  test('pubsub: items by node, by id and max_items; unknown node is item-not-found; publish is forbidden', async () => {
    const node = 'urn:example:test-node';
    gw.gateway.pubsub.publish(bot, node, 'a', xml('thing', { xmlns: 'urn:example:test' }, 'first'), { maxItems: 'max' });
    gw.gateway.pubsub.publish(bot, node, 'b', xml('thing', { xmlns: 'urn:example:test' }, 'second'), { maxItems: 'max' });
    const alice = await XmppUser.connect(server, 'alice-pubsub');
    try {
      const get = (items: Element) => alice.iq(xml('iq', { type: 'get', to: bot }, xml('pubsub', { xmlns: NS_PUBSUB }, items)));
      const texts = (res: Element) => res.getChild('pubsub', NS_PUBSUB)!.getChild('items')!.getChildren('item').map((i) => `${i.attrs.id}:${i.getChildText('thing', 'urn:example:test')}`);
      assert.deepEqual(texts(await get(xml('items', { node }))), ['b:second', 'a:first']);
      assert.deepEqual(texts(await get(xml('items', { node, max_items: '1' }))), ['b:second']);
      assert.deepEqual(texts(await get(xml('items', { node }, xml('item', { id: 'a' })))), ['a:first']);
      await assert.rejects(get(xml('items', { node: 'urn:example:nothing' })), (e: Error & { condition?: string }) => e.condition === 'item-not-found');
      await assert.rejects(
        alice.iq(xml('iq', { type: 'set', to: bot }, xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node }, xml('item', { id: 'x' }, xml('thing', { xmlns: 'urn:example:test' })))))),
        (e: Error & { condition?: string }) => e.condition === 'forbidden',
      );
      // Default PEP semantics: max_items 1 keeps only the newest item.
      gw.gateway.pubsub.publish(bot, 'urn:example:single', 'current', xml('v', { xmlns: 'urn:example:test' }, '1'));
      gw.gateway.pubsub.publish(bot, 'urn:example:single', 'other', xml('v', { xmlns: 'urn:example:test' }, '2'));
      const single = await get(xml('items', { node: 'urn:example:single' }));
      assert.deepEqual(single.getChild('pubsub')!.getChild('items')!.getChildren('item').map((i) => i.attrs.id), ['other']);
    } finally {
      await alice.stop();
    }
  });

  test('+notify: a subscribed contact whose caps ask for the node gets the last item on presence and an event after a publish', async () => {
    const node = 'urn:example:notify-node';
    const features = ['http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/caps', `${node}+notify`];
    const identities = [{ category: 'client', type: 'pc', name: 'test' }];
    const ver = capsVer(identities, features);
    gw.gateway.pubsub.publish(bot, node, 'current', xml('state', { xmlns: 'urn:example:test' }, 'before'));
    const bob = await XmppUser.connect(server, 'bob-notify', { presence: false });
    try {
      bob.client.iqCallee.get(NS_INFO, 'query', () =>
        xml('query', { xmlns: NS_INFO, node: `urn:test#${ver}` }, ...identities.map((i) => xml('identity', i)), ...features.map((f) => xml('feature', { var: f }))),
      );
      // Available with caps, then the subscription handshake; approving the gateway's request makes
      // Prosody send bob's presence to it, now as a subscriber.
      await bob.send(xml('presence', {}, xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: 'sha-1', node: 'urn:test', ver })));
      await bob.send(xml('presence', { to: bot, type: 'subscribe' }));
      await bob.waitFor((el) => el.is('presence') && el.attrs.type === 'subscribe' && el.attrs.from === bot, 10000, 'subscription request from the bot');
      await bob.send(xml('presence', { to: bot, type: 'subscribed' }));
      const last = await bob.waitFor((el) => el.is('message') && !!el.getChild('event', NS_EVENT), 10000, 'last item on presence');
      assert.equal(last.getChild('event', NS_EVENT)!.getChild('items')!.attrs.node, node);
      assert.equal(last.attrs.from, bot);
      gw.gateway.pubsub.publish(bot, node, 'current', xml('state', { xmlns: 'urn:example:test' }, 'after'));
      const ev = await bob.waitFor(
        (el) => el.is('message') && el.getChild('event', NS_EVENT)?.getChild('items')?.getChild('item')?.getChildText('state', 'urn:example:test') === 'after',
        10000,
        'event after publish',
      );
      assert.equal(ev.attrs.type, 'headline');
      // A node the contact did not ask for produces no event.
      gw.gateway.pubsub.publish(bot, 'urn:example:unwanted', 'current', xml('state', { xmlns: 'urn:example:test' }, 'x'));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(bob.received.filter((el) => el.getChild('event', NS_EVENT)?.getChild('items')?.attrs.node === 'urn:example:unwanted').length, 0);
    } finally {
      await bob.stop();
    }
  });

  test('addressing: unknown localparts, proxies outside allowed domains and senders from other domains get errors, never a relay', async () => {
    const alice = await XmppUser.connect(server, 'alice-addr');
    const outsider = await XmppUser.connect(server, 'mallory', { domain: 'outside.test' });
    try {
      const err = async (user: XmppUser, to: string) => {
        await user.send(xml('message', { to, type: 'chat', id: `m-${to}` }, xml('body', {}, 'x')));
        return user.waitFor((el) => el.is('message') && el.attrs.type === 'error' && el.attrs.id === `m-${to}`, 10000, 'step L162');
      };
      const unknown = await err(alice, `nobody@${gw.domain}`);
      assert.ok(unknown.getChild('error')!.getChild('item-not-found'));
      const outsideProxy = await err(alice, `carol\\40elsewhere.test@${gw.domain}`);
      assert.ok(outsideProxy.getChild('error')!.getChild('forbidden'));
      const percentOutside = await err(alice, `carol%elsewhere.test@${gw.domain}`);
      assert.ok(percentOutside.getChild('error')!.getChild('forbidden'));
      const fromOutside = await err(outsider, bot);
      assert.ok(fromOutside.getChild('error')!.getChild('forbidden'));
      // A plaintext message to a bot is refused with a readable error.
      const plain = await err(alice, bot);
      assert.ok(plain.getChild('error')!.getChild('not-acceptable'));
      assert.match(plain.getChild('error')!.getChildText('text', 'urn:ietf:params:xml:ns:xmpp-stanzas') ?? '', /end-to-end encrypted/);
      // An iq to an unhandled namespace gets service-unavailable instead of a timeout.
      await assert.rejects(alice.iq(xml('iq', { type: 'get', to: bot }, xml('query', { xmlns: 'urn:example:nothing' }))), (e: Error & { condition?: string }) => e.condition === 'service-unavailable');
    } finally {
      await alice.stop();
      await outsider.stop();
    }
  });

  test('/readyz turns 503 when Prosody stops and 200 after it is back', async () => {
    await server.stop();
    await waitUntil(async () => (await fetch(`${gw.url}/readyz`)).status === 503, 10000, 'readyz 503');
    const down = (await (await fetch(`${gw.url}/readyz`)).json()) as { checks: { component: { ok: boolean; reason: string } } };
    assert.equal(down.checks.component.ok, false);
    assert.ok(down.checks.component.reason.length > 0);
    await server.start();
    await waitUntil(async () => (await fetch(`${gw.url}/readyz`)).status === 200, 20000, 'readyz 200 again');
    // And it works again: disco answers.
    const alice = await XmppUser.connect(server, 'alice-back');
    try {
      const res = await alice.iq(xml('iq', { type: 'get', to: bot }, xml('query', { xmlns: NS_INFO })));
      assert.ok(res.getChild('query', NS_INFO));
    } finally {
      await alice.stop();
    }
  });

  test('a server that stops answering is noticed by the keepalive ping: /readyz 503, then ready again when it answers', async () => {
    const other = await Prosody.start();
    try {
      // The default keepalive is 30 s; this gateway pings every second.
      const fast = await TestGateway.start(other, { component: { keepalive: '1s' } });
      try {
        assert.equal((await fetch(`${fast.url}/readyz`)).status, 200);
        other.freeze();
        await waitUntil(async () => (await fetch(`${fast.url}/readyz`)).status === 503, 15000, 'readyz 503 while the server is frozen');
        const body = (await (await fetch(`${fast.url}/readyz`)).json()) as { checks: { component: { reason: string } } };
        assert.match(body.checks.component.reason, /stopped answering|cannot connect|no handshake|lost/);
        other.thaw();
        await waitUntil(async () => (await fetch(`${fast.url}/readyz`)).status === 200, 20000, 'ready again after the server thawed');
      } finally {
        other.thaw();
        await fast.destroy();
      }
    } finally {
      await other.destroy();
    }
  });
});
