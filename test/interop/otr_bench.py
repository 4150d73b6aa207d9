#!/usr/bin/env python3
"""python-potr's figures for `npm run bench -- otr`: AKE, and per-message encrypt and decrypt in a
ping-pong conversation (keys rotate as in a real one), two contexts in one process, no network.
Prints JSON: {"implementation", "results": [{"op", "median_us", "p90_us", "n"}]}."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import otr_user  # noqa: E402  (applies the pycryptodome fixes to potr)
import potr  # noqa: E402

queue = []


class Ctx(otr_user.Context):
    def inject(self, msg, appdata=None):
        queue.append((self.user.name, self.peer, msg))


class Acc(otr_user.Account):
    contextclass = Ctx


def pump(accounts):
    out = []
    while queue:
        frm, to, msg = queue.pop(0)
        ctx = accounts[to].getContext(frm)
        try:
            text, _ = ctx.receiveMessage(msg)
            if text:
                out.append(text)
        except potr.context.UnencryptedMessage:
            pass
    return out


def stat(samples):
    s = sorted(samples)
    return {"median_us": s[len(s) // 2] * 1e6, "p90_us": s[int(0.9 * (len(s) - 1))] * 1e6, "n": len(s)}


def main():
    n_ake = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    n_msg = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    a, b = Acc("a@x", 0), Acc("b@x", 0)
    a.getPrivkey()
    b.getPrivkey()
    accounts = {"a@x": a, "b@x": b}
    ake = []
    for i in range(n_ake):
        a.ctxs.clear()
        b.ctxs.clear()
        t = time.perf_counter()
        ca = a.getContext("b@x")
        ca.sendMessage(potr.context.FRAGMENT_SEND_ALL, b"?OTRv2?")
        queue.append(("a@x", "b@x", ca.user.getDefaultQueryMessage(ca.getPolicy)))
        pump(accounts)
        ake.append(time.perf_counter() - t)
        assert ca.state == potr.context.STATE_ENCRYPTED
    enc, dec = [], []
    ca, cb = a.getContext("b@x"), b.getContext("a@x")
    for i in range(n_msg):
        for (src, dst, frm) in ((ca, cb, "a@x"), (cb, ca, "b@x")):
            body = ("alert #%d: disk %d%% full on db-%d" % (i, 50 + i % 50, i % 7)).encode()
            t = time.perf_counter()
            src.sendMessage(potr.context.FRAGMENT_SEND_ALL, body)
            t1 = time.perf_counter()
            _, to, msg = queue.pop()
            got, _ = dst.receiveMessage(msg)
            t2 = time.perf_counter()
            assert got == body, (got, body)
            queue.clear()
            enc.append(t1 - t)
            dec.append(t2 - t1)
    print(json.dumps({"implementation": "python3-potr 1.0.2 (pycryptodome)", "results": [
        dict(op="ake", **stat(ake)), dict(op="encrypt", **stat(enc)), dict(op="decrypt", **stat(dec))]}))


if __name__ == "__main__":
    main()
