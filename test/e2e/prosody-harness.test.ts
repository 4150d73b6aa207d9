import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { XmppUser, xml } from '../harness/xmpp-user.js';

test('the test Prosody starts, users log in and exchange a message', async () => {
  const server = await Prosody.start();
  try {
    const alice = await XmppUser.connect(server, 'alice');
    const bob = await XmppUser.connect(server, 'bob');
    await alice.send(xml('message', { to: bob.jid, type: 'chat', id: 'h1' }, xml('body', {}, 'hello')));
    const got = await bob.waitFor((el) => el.is('message') && el.attrs.id === 'h1');
    assert.equal(got.getChildText('body'), 'hello');
    await alice.stop();
    await bob.stop();
  } finally {
    await server.destroy();
  }
});
