#!/usr/bin/env python3
"""A controllable OTR XMPP user for interop tests: Debian's python3-potr (OTR v2) on slixmpp, or with
--libotr PATH the C peer test/interop/libotr_peer.c (libotr 4.1, OTR v3) behind the same slixmpp
client and control protocol.

potr 1.0.2 was written for PyCrypto; Debian 12 ships pycryptodome (as Cryptodome), whose DSA key and
AES-CTR APIs differ. The small fixes below (POTR_FIXES) only adapt those calls; potr's own protocol
code (AKE, data messages, fragments, TLVs) runs unchanged.

    /usr/bin/python3 test/interop/otr_user.py --jid alice@example.org --password pw \
        --service 127.0.0.1:5222 --resource phone [--max-message-size 0]

Control protocol: JSON lines, commands on stdin, events on stdout.
Commands
  {"cmd":"query","to":JID}                     send an OTR query (?OTRv2?) -> sent
  {"cmd":"send","to":BARE,"body":TEXT}         encrypt in the session with that contact -> sent | send_error
  {"cmd":"send_raw","to":JID,"body":TEXT}      a body as it is (garbage, plaintext) -> sent
  {"cmd":"disconnect","to":BARE}               end the session (disconnect TLV) -> sent
  {"cmd":"info"} -> result {"fingerprint"}     {"cmd":"stop"}
Events
  ready {"jid","full_jid","fingerprint"}   encrypted {"peer","fingerprint"}   finished {"peer"}
  message {"from_full","body","encrypted"}  otr_error {"from_full","text"}   unreadable {"from_full"}
  stanza_error {"from_full","id","text"}   sent {"ref"}   send_error {"ref","error"}
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import threading
from typing import Any, Dict, Optional

import potr  # noqa: E402
from potr import crypt, proto  # noqa: E402
from potr.compatcrypto import pycrypto as pc  # noqa: E402
from potr.utils import bytes_to_long, long_to_bytes  # noqa: E402
from Cryptodome.Cipher import AES  # noqa: E402
from Cryptodome.PublicKey import DSA  # noqa: E402
import slixmpp  # noqa: E402
from slixmpp import JID  # noqa: E402

log = logging.getLogger("otr_user")


# ---- POTR_FIXES: pycryptodome instead of PyCrypto ------------------------------------------------
def _aesctr(key: bytes, counter: Any = 0) -> Any:
    if isinstance(counter, int):
        counter = pc.Counter(counter)
    # OTR's counter: 8-byte top half (potr's prefix), 8-byte block counter from 0.
    return AES.new(key, AES.MODE_CTR, nonce=counter.byteprefix(), initial_value=0)


def _sign(self: Any, data: bytes) -> bytes:
    k = pc.randrange(2, self.priv.q)
    r, s = self.priv._sign(bytes_to_long(data), k)
    return long_to_bytes(r, 20) + long_to_bytes(s, 20)


def _verify(self: Any, data: bytes, sig: bytes) -> bool:
    r, s = bytes_to_long(sig[:20]), bytes_to_long(sig[20:])
    return bool(self.pub._verify(bytes_to_long(data), (r, s)))


def _generate(cls: Any) -> Any:
    k = DSA.generate(1024)
    return cls((k.y, k.g, k.p, k.q, k.x), private=True)


crypt.AESCTR = _aesctr
pc.AESCTR = _aesctr
pc.DSAKey.sign = _sign
pc.DSAKey.verify = _verify
pc.DSAKey.generate = classmethod(_generate)
# ---------------------------------------------------------------------------------------------------

POLICY = {"ALLOW_V1": False, "ALLOW_V2": True, "REQUIRE_ENCRYPTION": False, "SEND_TAG": False,
          "WHITESPACE_START_AKE": True, "ERROR_START_AKE": True}


def emit(event: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Context(potr.context.Context):
    client: "OtrUser"

    def getPolicy(self, key: str) -> bool:
        return POLICY.get(key, False)

    def _wentEncrypted(self) -> None:
        # Every finished AKE, also a new one within an encrypted session.
        super()._wentEncrypted()
        emit({"event": "encrypted", "peer": self.peer, "fingerprint": fp_hex(self.crypto.theirPubkey)})

    def inject(self, msg: bytes, appdata: Any = None) -> None:
        body = msg.decode("ascii") if isinstance(msg, bytes) else str(msg)
        self.client.xmpp.send_message(mto=self.peer, mbody=body, mtype="chat")


class Account(potr.context.Account):
    contextclass = Context

    def __init__(self, name: str, mms: int) -> None:
        super().__init__(name, "xmpp", mms)

    def loadPrivkey(self) -> Any:
        return None

    def savePrivkey(self) -> None:
        pass

    def saveTrusts(self) -> None:
        pass


def fp_hex(key: Any) -> str:
    return key.fingerprint().hex().upper()


LIBOTR_EVENTS = {8: "unreadable", 9: "unreadable", 12: "otr_error", 3: "connection_ended", 15: "other_instance"}


class LibotrPeer:
    """The C peer as a subprocess: bodies in and out, hex-encoded, one line each."""

    def __init__(self, user: "OtrUser", path: str, state: str) -> None:
        self.user = user
        self.path = path
        self.state = state
        self.proc: Any = None
        self.fingerprint = ""
        self.ready = asyncio.Event()
        self.secure_peers: Dict[str, str] = {}   # bare -> full JID of the last finished AKE

    async def start(self) -> None:
        # A plain Popen and a reader thread (asyncio's subprocess transport stopped our stdin reader
        # under slixmpp); lines are handed to the event loop.
        args = self.user.args
        self.proc = subprocess.Popen(
            [self.path, JID(args.jid).bare, self.state, str(args.max_message_size), args.libotr_policy],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        loop = asyncio.get_event_loop()

        def pump() -> None:
            for line in self.proc.stdout:
                loop.call_soon_threadsafe(self.handle, line)

        threading.Thread(target=pump, daemon=True).start()
        await self.ready.wait()

    def write(self, cmd: str, who: str, body: str) -> None:
        self.proc.stdin.write(f"{cmd} {who} {body.encode('utf-8').hex()}\n".encode())
        self.proc.stdin.flush()

    def handle(self, line: bytes) -> None:
        if True:
            parts = line.decode().rstrip("\n").split(" ")
            kind = parts[0]
            if kind == "fp":
                self.fingerprint = "".join(parts[1:]).upper()
                self.ready.set()
            elif kind == "inject":
                self.user.xmpp.send_message(mto=parts[1], mbody=bytes.fromhex(parts[2] if len(parts) > 2 else "").decode("utf-8"), mtype="chat")
            elif kind == "message":
                emit({"event": "message", "from_full": parts[1], "body": bytes.fromhex(parts[3] if len(parts) > 3 else "").decode("utf-8", "replace"), "encrypted": parts[2] == "1"})
            elif kind == "secure":
                self.secure_peers[JID(parts[1]).bare] = parts[1]
                emit({"event": "encrypted", "peer": parts[1], "fingerprint": "".join(parts[2:]).upper()})
            elif kind in ("finished", "insecure"):
                emit({"event": "finished", "peer": parts[1]})
            elif kind == "event":
                code = int(parts[2])
                text = bytes.fromhex(parts[3] if len(parts) > 3 else "").decode("utf-8", "replace")
                emit({"event": LIBOTR_EVENTS.get(code, "otr_event"), "from_full": parts[1], "code": code, "text": text})
            elif kind == "send_error":
                emit({"event": "error", "error": line.decode().strip()})


class OtrUser:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        Context.client = self
        self.account = Account(args.jid, args.max_message_size)
        self.libotr: Optional[LibotrPeer] = LibotrPeer(self, args.libotr, args.state) if args.libotr else None
        if not self.libotr:
            self.account.getPrivkey()
        host, _, port = args.service.rpartition(":")
        self.address = (host or "127.0.0.1", int(port))
        self.xmpp = slixmpp.ClientXMPP(f"{JID(args.jid).bare}/{args.resource}", args.password)
        self.xmpp["feature_mechanisms"].unencrypted_plain = True
        self.xmpp["feature_mechanisms"].unencrypted_scram = True
        self.xmpp.add_event_handler("session_start", self.on_start)
        self.xmpp.add_event_handler("message", self.on_message)
        self.xmpp.add_event_handler("message_error", self.on_error)
        self.done: "asyncio.Future[int]" = asyncio.get_event_loop().create_future()
        self.states: Dict[str, int] = {}

    def ctx(self, jid: str) -> Context:
        return self.account.getContext(jid)

    def session_for(self, bare: str) -> Optional[Context]:
        for jid, c in self.account.ctxs.items():
            if JID(jid).bare == bare and c.state == potr.context.STATE_ENCRYPTED:
                return c
        return None

    async def on_start(self, _e: Any) -> None:
        self.xmpp.send_presence()
        if self.libotr:
            await self.libotr.start()
        emit({"event": "ready", "jid": JID(self.args.jid).bare, "full_jid": str(self.xmpp.boundjid),
              "fingerprint": self.libotr.fingerprint if self.libotr else fp_hex(self.account.getPrivkey())})

    def on_error(self, msg: Any) -> None:
        emit({"event": "stanza_error", "from_full": str(msg["from"]), "id": msg["id"], "text": msg["error"]["text"]})

    def check_state(self, jid: str, c: Context) -> None:
        before = self.states.get(jid)
        if c.state != before:
            self.states[jid] = c.state
            if c.state == potr.context.STATE_FINISHED:
                emit({"event": "finished", "peer": jid})

    def on_message(self, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal"):
            return
        frm = str(msg["from"])
        body = msg["body"]
        if not body:
            return
        if self.libotr:
            self.libotr.write("recv", frm, body)
            return
        c = self.ctx(frm)
        try:
            text, _tlvs = c.receiveMessage(body.encode("utf-8"))
            if text is not None:
                emit({"event": "message", "from_full": frm, "body": text.decode("utf-8"), "encrypted": True})
        except potr.context.UnencryptedMessage as e:
            emit({"event": "message", "from_full": frm, "body": e.args[0].decode("utf-8", "replace"), "encrypted": False})
        except potr.context.NotOTRMessage as e:
            raw = e.args[0]
            emit({"event": "message", "from_full": frm, "body": raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw), "encrypted": False})
        except potr.context.ErrorReceived as e:
            emit({"event": "otr_error", "from_full": frm, "text": e.args[0].error.decode("utf-8", "replace")})
        except (potr.context.NotEncryptedError, crypt.InvalidParameterError) as e:
            emit({"event": "unreadable", "from_full": frm, "error": type(e).__name__})
        except Exception as e:  # a peer bug must not kill the test user
            log.exception("receive failed")
            emit({"event": "unreadable", "from_full": frm, "error": repr(e)})
        self.check_state(frm, c)

    async def commands(self) -> None:
        # stdin is read by a thread: robust whatever the event loop does with pipes.
        loop = asyncio.get_event_loop()
        lines: "asyncio.Queue[bytes]" = asyncio.Queue()

        def pump() -> None:
            for raw in sys.stdin.buffer:
                loop.call_soon_threadsafe(lines.put_nowait, raw)
            loop.call_soon_threadsafe(lines.put_nowait, b"")

        threading.Thread(target=pump, daemon=True).start()
        while True:
            line = await lines.get()
            if not line:
                break
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            ref = cmd.get("ref")
            name = cmd.get("cmd")
            try:
                if name == "stop":
                    break
                if name == "query":
                    self.xmpp.send_message(mto=cmd["to"], mbody="?OTRv3?" if self.libotr else "?OTRv2?", mtype="chat")
                elif name == "send_raw":
                    self.xmpp.send_message(mto=cmd["to"], mbody=cmd["body"], mtype="chat")
                elif name == "send" and self.libotr:
                    full = self.libotr.secure_peers.get(JID(cmd["to"]).bare)
                    if full is None:
                        raise RuntimeError("no encrypted session")
                    self.libotr.write("send", full, cmd["body"])
                elif name == "send":
                    c = self.session_for(JID(cmd["to"]).bare)
                    if c is None:
                        raise RuntimeError("no encrypted session")
                    c.sendMessage(potr.context.FRAGMENT_SEND_ALL, cmd["body"].encode("utf-8"))
                elif name == "disconnect":
                    c = self.session_for(JID(cmd["to"]).bare)
                    if c is None:
                        raise RuntimeError("no encrypted session")
                    c.disconnect()
                elif name == "info":
                    emit({"event": "result", "ref": ref, "fingerprint": fp_hex(self.account.getPrivkey())})
                    continue
                emit({"event": "sent", "ref": ref})
            except Exception as e:
                emit({"event": "send_error", "ref": ref, "error": str(e)})
        self.xmpp.disconnect()
        await asyncio.sleep(0.3)
        if not self.done.done():
            self.done.set_result(0)

    async def run(self) -> int:
        self.xmpp.connect(address=self.address, force_starttls=False, disable_starttls=True)
        asyncio.ensure_future(self.commands())
        return await self.done


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--resource", default="potr")
    p.add_argument("--max-message-size", type=int, default=0)
    p.add_argument("--libotr", help="path of the built libotr_peer: use libotr 4.1 (OTR v3) instead of potr")
    p.add_argument("--libotr-policy", default="v3", choices=("v3", "v23"))
    p.add_argument("--state", default="/tmp", help="libotr key and instance tag files")
    args = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    async def amain() -> int:
        return await OtrUser(args).run()

    return asyncio.run(amain())


if __name__ == "__main__":
    sys.exit(main())
