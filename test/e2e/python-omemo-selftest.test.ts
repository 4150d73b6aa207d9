// Self-test of the independent OMEMO test user (python-omemo/oldmemo on slixmpp, driven by
// test/harness/omemo-user.ts) against a real Prosody, without the gateway: if these pass, a failing
// gateway interop test points at the gateway, not at the test user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prosody } from '../harness/prosody.js';
import { PythonOmemoUser, pythonOmemoStatus, type OmemoEvent, type ReceivedMessage } from '../harness/omemo-user.js';

const status = pythonOmemoStatus();
// On CI the packages are installed by scripts/install-deps.sh: a missing one must fail, not skip.
const skip = !status.ok && !process.env.CI ? `python-omemo unavailable (${status.why})` : false;

const from = (u: PythonOmemoUser, body: string | null) => (m: ReceivedMessage) => m.from === u.jid && m.encrypted && m.body === body;

test('python-omemo test user: sessions, restart, second device, corruption, replay, receipts', { skip, timeout: 120000 }, async (t) => {
  const server = await Prosody.start();
  const users: PythonOmemoUser[] = [];
  try {
    const [alice, bob] = await Promise.all([
      PythonOmemoUser.start(server, 'alice', { resource: 'dev1' }),
      PythonOmemoUser.start(server, 'bob', { resource: 'phone' }),
    ]);
    users.push(alice, bob);
    let alice2: PythonOmemoUser | undefined;

    await t.test('each device has an id and a Curve25519 fingerprint; the published bundle is fetchable', async () => {
      for (const u of [alice, bob]) {
        assert.ok(Number.isInteger(u.deviceId) && u.deviceId >= 1 && u.deviceId < 2 ** 31, `device id ${u.deviceId}`);
        assert.match(u.fingerprint, /^[0-9a-f]{64}$/);
      }
      assert.notEqual(alice.fingerprint, bob.fingerprint);
      // Bob fetches Alice's list and bundle from her PEP (access model open: no subscription yet).
      const seen = await bob.refresh(alice.jid);
      assert.deepEqual(seen.map((d) => [d.device_id, d.fingerprint, d.session]), [[alice.deviceId, alice.fingerprint, false]]);
    });

    await t.test('subscriptions are accepted both ways and device lists are pushed by PEP (+notify)', async () => {
      await alice.subscribe(bob.jid);
      await alice.waitForEvent((e) => e.event === 'presence' && e.from === bob.jid && e.type === 'available', 10000, "bob's presence");
      await bob.waitForEvent((e) => e.event === 'presence' && e.from === alice.jid && e.type === 'available', 10000, "alice's presence");
      await bob.waitForEvent((e) => e.event === 'devicelist' && e.jid === alice.jid, 10000, "alice's device list event");
    });

    await t.test('five messages each way, starting with a PreKey message, with receipts', async () => {
      for (let i = 1; i <= 5; i++) {
        const a = await alice.send(bob.jid, `a${i} ✓`, { id: `a${i}`, receipt: true });
        assert.deepEqual(a.rids, [bob.deviceId]);
        assert.deepEqual(a.prekey_rids, i === 1 ? [bob.deviceId] : [], `a${i} PreKey keys`);
        const got = await bob.waitForMessage(from(alice, `a${i} ✓`), 10000, `a${i}`);
        assert.equal(got.id, `a${i}`);
        assert.equal(got.device_id, alice.deviceId);
        assert.equal(got.fingerprint, alice.fingerprint);
        assert.equal(got.trust, 'blind');
        if (i === 1) {
          // Bob's library answers the key exchange with an empty (key transport) message.
          const kt = await alice.waitForMessage(from(bob, null), 10000, 'key transport from bob');
          assert.equal(kt.device_id, bob.deviceId);
        }
        const receipt = await alice.waitForEvent((e) => e.event === 'receipt' && e.from === bob.jid && e.id === `a${i}`, 10000, `receipt for a${i}`);
        assert.ok(receipt);

        const b = await bob.send(alice.jid, `b${i}`, { id: `b${i}`, receipt: true });
        assert.deepEqual(b.prekey_rids, [], `b${i} needs no PreKey message`);
        await alice.waitForMessage(from(bob, `b${i}`), 10000, `b${i}`);
        await bob.waitForEvent((e) => e.event === 'receipt' && e.id === `b${i}`, 10000, `receipt for b${i}`);
      }
      const bobDevices = await alice.devices(bob.jid);
      assert.deepEqual(bobDevices.map((d) => [d.device_id, d.session, d.trust]), [[bob.deviceId, true, 'blind']]);
    });

    await t.test("bob's state survives a restart of his process", async () => {
      const { deviceId, fingerprint } = bob;
      await bob.restart();
      assert.equal(bob.deviceId, deviceId);
      assert.equal(bob.fingerprint, fingerprint);
      const a = await alice.send(bob.jid, 'after restart', { id: 'a6' });
      assert.deepEqual(a.prekey_rids, []);
      await bob.waitForMessage(from(alice, 'after restart'), 10000, 'a6');
      const b = await bob.send(alice.jid, 'still here', { id: 'b6' });
      assert.deepEqual(b.prekey_rids, [], 'the old session is used');
      await alice.waitForMessage(from(bob, 'still here'), 10000, 'b6');
    });

    await t.test('alice adds a second device; both receive bob\'s next message', async () => {
      alice2 = await PythonOmemoUser.start(server, 'alice', { resource: 'dev2' });
      users.push(alice2);
      assert.notEqual(alice2.deviceId, alice.deviceId);
      assert.notEqual(alice2.fingerprint, alice.fingerprint);
      const both = [alice.deviceId, alice2.deviceId].sort((x, y) => x - y);
      const hasBoth = (e: OmemoEvent) => e.event === 'devicelist' && e.jid === alice.jid && JSON.stringify(e.devices) === JSON.stringify(both);
      await bob.waitForEvent(hasBoth, 10000, "bob sees alice's two devices (PEP)");
      await alice.waitForEvent(hasBoth, 10000, 'alice dev1 sees her own two devices (PEP)');
      const b = await bob.send(alice.jid, 'to both', { id: 'b7' });
      assert.deepEqual(b.rids, both);
      assert.deepEqual(b.prekey_rids, [alice2.deviceId]);
      const [m1, m2] = await Promise.all([
        alice.waitForMessage(from(bob, 'to both'), 10000, 'b7 on dev1'),
        alice2.waitForMessage(from(bob, 'to both'), 10000, 'b7 on dev2'),
      ]);
      assert.equal(m1.id, 'b7');
      assert.equal(m2.id, 'b7');
      // And alice's first device now encrypts for her second one too.
      const a = await alice.send(bob.jid, 'from dev1', { id: 'a7' });
      assert.deepEqual(a.rids, [bob.deviceId, alice2.deviceId].sort((x, y) => x - y));
      await bob.waitForMessage(from(alice, 'from dev1'), 10000, 'a7');
    });

    await t.test('a corrupted payload or key gives decrypt_error and the session keeps working', async () => {
      for (const what of ['payload', 'key'] as const) {
        await alice.sendCorrupted(bob.jid, `broken ${what}`, what, { id: `c-${what}`, receipt: true });
        const err = await bob.waitForEvent((e) => e.event === 'decrypt_error' && e.id === `c-${what}`, 10000, `decrypt_error for corrupted ${what}`);
        assert.equal(err.from, alice.jid);
        assert.match(String(err.error), what === 'payload' ? /Ciphertext decryption failed|DecryptionFailed/ : /DecryptionFailed|Authentication/);
        await alice.send(bob.jid, `fine after ${what}`, { id: `ok-${what}` });
        await bob.waitForMessage(from(alice, `fine after ${what}`), 10000, `message after corrupted ${what}`);
      }
      assert.equal(bob.messages.filter((m) => String(m.body).startsWith('broken')).length, 0);
      assert.equal(alice.events.filter((e) => e.event === 'receipt' && String(e.id).startsWith('c-')).length, 0, 'no receipt for undecryptable messages');
    });

    await t.test('a replayed message is rejected and not delivered twice', async () => {
      await alice.send(bob.jid, 'only once', { id: 'once', receipt: true });
      await bob.waitForMessage(from(alice, 'only once'), 10000, 'original');
      await alice.replayLast(bob.jid, { id: 'once-again' });
      const err = await bob.waitForEvent((e) => e.event === 'decrypt_error' && e.id === 'once-again', 10000, 'decrypt_error for the replay');
      assert.match(String(err.error), /Duplicate|DecryptionFailed/);
      // A message sent after the replay arrives, so the replay had its chance to be (wrongly) shown.
      await alice.send(bob.jid, 'after replay', { id: 'after-replay' });
      await bob.waitForMessage(from(alice, 'after replay'), 10000, 'after replay');
      assert.equal(bob.messages.filter((m) => m.body === 'only once').length, 1);
    });

    await t.test('plaintext messages are reported as such', async () => {
      await bob.sendPlain(alice.jid, 'in the clear', { id: 'plain1' });
      const m = await alice.waitForMessage((x) => x.id === 'plain1', 10000, 'plaintext');
      assert.equal(m.encrypted, false);
      assert.equal(m.body, 'in the clear');
    });

    await t.test('processes stop cleanly', async () => {
      for (const u of users.splice(0)) assert.equal(await u.stop(), 0, `${u.jid}/${u.resource} exit code`);
    });
  } finally {
    await Promise.all(users.map((u) => u.stop({ timeoutMs: 2000 }).catch(() => null)));
    await server.destroy();
  }
});
