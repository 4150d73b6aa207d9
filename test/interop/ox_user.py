#!/usr/bin/env python3
"""A controllable OX (XEP-0373/0374, OpenPGP for XMPP) XMPP user for interop tests.

Its OpenPGP is GnuPG (the gpg binary, in a GNUPGHOME under --state), its XMPP slixmpp; this file is
the glue an OX client adds: publishing its key on the metadata and key nodes, reading contacts' keys
with plain pubsub `items` requests, writing and reading <signcrypt> elements. Same command line and
control protocol as omemo_user.py (one JSON object per line: commands on stdin, events on stdout),
so test/harness/omemo-user.ts drives it (option `script`).

Commands (each may carry "ref", echoed in its answer)
  {"cmd":"send","to":JID,"body":TEXT,"id":ID?,"receipt":BOOL?, variations for refusal tests:
        "to_jid":JID? (the <to> inside), "time_offset":SECONDS?, "signer":"alt"|"none"?,
        "recipients":"contact"|"self"?, "tamper":BOOL? (a valid signature over other bytes)}  -> sent
  {"cmd":"replay_last","to":JID,"id":ID?}   the last send's <openpgp> again -> sent
  {"cmd":"keys","jid":JID}   read the contact's metadata and key nodes (plain items requests)
        -> result {"keys":[{"fingerprint","uids","item_id"}],"metadata_item":ID}
  {"cmd":"subscribe","to":JID} -> result
  {"cmd":"new_key"}   a new key, announced instead of the current one -> result {"fingerprint","subkeys","old_subkeys"}
  {"cmd":"stop"}
Events
  ready {"jid","full_jid","device_id":0,"fingerprint"}
  message {"from","from_full","id","type","body","encrypted","signature":"good"|"bad"|"none"|...,
        "signer","announced","to_ok","time","enc_to":[key ids],"device_id":null,"trust":null,"delayed"}
  decrypt_error {"from","id","error"}   message_error {"from","id","condition","text"}
  pep {"from","node","items":[{"id","payload":BOOL}]}   receipt {"from","id"}
  sent {"ref","id","to","recipients"}  result/error/send_error/fatal as in omemo_user.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
import slixmpp
from slixmpp import JID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

log = logging.getLogger("ox_user")

NS_OX = "urn:xmpp:openpgp:0"
NODE_META = "urn:xmpp:openpgp:0:public-keys"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_EVENT = f"{PUBSUB}#event"
XDATA = "jabber:x:data"
RECEIPTS = "urn:xmpp:receipts"
EME = "urn:xmpp:eme:0"
HINTS = "urn:xmpp:hints"
DELAY = "urn:xmpp:delay"
CLIENT = "jabber:client"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
FALLBACK = "This message is encrypted with OX."


def emit(event: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def stamp(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Gpg:
    """GnuPG in its own home, run without a shell, non-interactively."""

    def __init__(self, home: str) -> None:
        os.makedirs(home, mode=0o700, exist_ok=True)
        self.home = home

    def run(self, args: List[str], data: bytes = b"") -> Tuple[int, bytes, List[str]]:
        with tempfile.NamedTemporaryFile(dir=self.home, delete=False) as st:
            status_path = st.name
        try:
            p = subprocess.run(
                ["gpg", "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "",
                 "--trust-model", "always", "--status-file", status_path, *args],
                input=data, capture_output=True, env={**os.environ, "GNUPGHOME": self.home, "LC_ALL": "C"}, timeout=60)
            with open(status_path, encoding="utf-8", errors="replace") as f:
                status = [l[9:].strip() for l in f if l.startswith("[GNUPG:] ")]
            if p.returncode != 0:
                log.debug("gpg %s: %s", args[:2], p.stderr.decode(errors="replace")[-400:])
            return p.returncode, p.stdout, status
        finally:
            os.unlink(status_path)

    def new_key(self, uid: str) -> str:
        code, _, status = self.run(["--quick-gen-key", uid, "future-default", "default", "never"])
        created = [l.split()[2] for l in status if l.startswith("KEY_CREATED")]
        if code != 0 or not created:
            raise RuntimeError("gpg key generation failed")
        return created[-1].upper()

    def export(self, fpr: str) -> bytes:
        return self.run(["--export", "--export-options", "export-minimal", fpr])[1]

    def import_key(self, data: bytes) -> List[str]:
        return [l.split()[2].upper() for l in self.run(["--import"], data)[2] if l.startswith("IMPORT_OK")]

    def subkeys(self, fpr: str) -> List[str]:
        out = self.run(["--with-colons", "--list-keys", fpr])[1].decode("utf-8", "replace")
        return [l.split(":")[4].upper() for l in out.splitlines() if l.startswith("sub:")]

    def uids(self, fpr: str) -> List[str]:
        out = self.run(["--with-colons", "--list-keys", fpr])[1].decode("utf-8", "replace")
        return [re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), l.split(":")[9])
                for l in out.splitlines() if l.startswith("uid:")]


def split_packets(data: bytes) -> List[Tuple[int, int, int, bytes]]:
    """(tag, start, end, body) of each packet, partial-length chunks joined (RFC 4880 §4.2)."""
    out, at = [], 0
    while at < len(data):
        start, ctb = at, data[at]
        at += 1
        if ctb & 0x40:
            tag, body = ctb & 0x3F, b""
            while True:
                l0 = data[at]
                if l0 < 192:
                    n, at, partial = l0, at + 1, False
                elif l0 < 224:
                    n, at, partial = ((l0 - 192) << 8) + data[at + 1] + 192, at + 2, False
                elif l0 == 255:
                    n, at, partial = int.from_bytes(data[at + 1:at + 5], "big"), at + 5, False
                else:
                    n, at, partial = 1 << (l0 & 0x1F), at + 1, True
                body += data[at:at + n]
                at += n
                if not partial:
                    break
        else:
            tag, lt = (ctb >> 2) & 0x0F, ctb & 3
            n, at = {0: (data[at], at + 1), 1: (int.from_bytes(data[at:at + 2], "big"), at + 2),
                     2: (int.from_bytes(data[at:at + 4], "big"), at + 4)}.get(lt, (len(data) - at, at))
            body = data[at:at + n]
            at += n
        out.append((tag, start, at, body))
    return out


def new_packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        ln = bytes([n])
    elif n < 8384:
        ln = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        ln = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + ln + body


def tamper_signed(message: bytes, session_key: str, old: bytes, new: bytes) -> bytes:
    """Replaces `old` by `new` (same length) inside the signed literal data of a SEIPDv1 message whose
    session key we know, with a fresh MDC: the encryption stays valid, the signature does not."""
    algo, key_hex = session_key.split(":")
    if algo not in ("7", "8", "9"):
        raise RuntimeError(f"unexpected cipher {algo}")
    key = bytes.fromhex(key_hex)
    packets = split_packets(message)
    tag, start, end, body = next(p for p in packets if p[0] == 18)
    assert body[0] == 1, "SEIPD version 1"
    plain = Cipher(algorithms.AES(key), modes.CFB(b"\0" * 16)).decryptor().update(body[1:])
    assert plain[-22:-20] == b"\xd3\x14" and plain.count(old) == 1
    inner = plain[:-20].replace(old, new)
    plain2 = inner + hashlib.sha1(inner).digest()
    cipher = Cipher(algorithms.AES(key), modes.CFB(b"\0" * 16)).encryptor().update(plain2)
    return message[:start] + new_packet(18, b"\x01" + cipher) + message[end:]


class OxUser:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bare = JID(args.jid).bare
        self.auto_receipts = args.auto_receipts == "yes"
        self.gpg = Gpg(os.path.join(args.state, "gnupg"))
        self.fpr = ""
        self.alt_fpr = ""   # a second key, never published (unknown-key tests)
        self.contact_keys: Dict[str, List[str]] = {}
        self.last_sent: Dict[str, ET.Element] = {}
        self.ready = asyncio.Event()
        self.inbox: "asyncio.Queue[ET.Element]" = asyncio.Queue()
        self.commands: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.done: "asyncio.Future[int]" = asyncio.get_event_loop().create_future()
        self.stopping = False
        host, _, port = args.service.rpartition(":")
        self.address = (host or "127.0.0.1", int(port))
        x = slixmpp.ClientXMPP(f"{self.bare}/{args.resource}", args.password)
        self.xmpp = x
        for plugin in ("xep_0030", "xep_0004", "xep_0115"):
            x.register_plugin(plugin)
        x["feature_mechanisms"].unencrypted_plain = True
        x["feature_mechanisms"].unencrypted_scram = True
        x.auto_authorize = True
        x.auto_subscribe = True
        x.add_event_handler("session_start", self.on_session_start)
        x.add_event_handler("failed_auth", lambda _e: (emit({"event": "fatal", "error": "authentication failed"}), self.finish(1)))
        x.register_handler(Callback("ox messages", MatchXPath(f"{{{CLIENT}}}message"), lambda m: self.inbox.put_nowait(m.xml)))

    def finish(self, code: int) -> None:
        if not self.done.done():
            self.done.set_result(code)

    # ---------------------------------------------------------------- XMPP

    async def on_session_start(self, _e: Any) -> None:
        if self.ready.is_set():
            return
        try:
            disco = self.xmpp["xep_0030"]
            disco.add_identity(category="client", itype="bot", name="GnuPG OX interop test user")
            for f in (f"{NODE_META}+notify", RECEIPTS, EME, NS_OX):
                disco.add_feature(f)
            await self.xmpp.get_roster()
            self.fpr = self.gpg.new_key(f"xmpp:{self.bare}")
            self.alt_fpr = self.gpg.new_key(f"xmpp:{self.bare}")
            await self.publish_key()
            await self.xmpp["xep_0115"].update_caps(broadcast=False)
            self.xmpp.send_presence()
        except Exception as e:
            log.exception("start failed")
            emit({"event": "fatal", "error": f"start failed: {e}"})
            self.finish(1)
            return
        self.ready.set()
        emit({"event": "ready", "jid": self.bare, "full_jid": str(self.xmpp.boundjid), "device_id": 0, "fingerprint": self.fpr})

    async def iq(self, typ: str, to: Optional[str], payload: ET.Element) -> ET.Element:
        iq = self.xmpp.make_iq(id=self.xmpp.new_id(), ito=to, itype=typ)  # type: ignore[arg-type]
        iq.xml.append(payload)
        return (await iq.send(timeout=15)).xml

    async def publish(self, node: str, item_id: str, payload: ET.Element) -> None:
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        item = ET.SubElement(ET.SubElement(pubsub, f"{{{PUBSUB}}}publish", {"node": node}), f"{{{PUBSUB}}}item", {"id": item_id})
        item.append(payload)
        form = ET.SubElement(ET.SubElement(pubsub, f"{{{PUBSUB}}}publish-options"), f"{{{XDATA}}}x", {"type": "submit"})
        for var, val in (("FORM_TYPE", f"{PUBSUB}#publish-options"), ("pubsub#access_model", "open")):
            ET.SubElement(ET.SubElement(form, f"{{{XDATA}}}field", {"var": var}), f"{{{XDATA}}}value").text = val
        await self.iq("set", None, pubsub)

    async def publish_key(self) -> None:
        """XEP-0373 §4.1: the key node first, then the metadata node listing it."""
        date = stamp(datetime.datetime.now(datetime.timezone.utc))
        pubkey = ET.Element(f"{{{NS_OX}}}pubkey")
        ET.SubElement(pubkey, f"{{{NS_OX}}}data").text = base64.b64encode(self.gpg.export(self.fpr)).decode()
        await self.publish(f"{NODE_META}:{self.fpr}", date, pubkey)
        meta = ET.Element(f"{{{NS_OX}}}public-keys-list")
        ET.SubElement(meta, f"{{{NS_OX}}}pubkey-metadata", {"v4-fingerprint": self.fpr, "date": date})
        await self.publish(NODE_META, "current", meta)

    async def items(self, jid: str, node: str) -> List[ET.Element]:
        """A plain items request (no max_items), as XEP-0060 §6.5.2."""
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB}}}items", {"node": node})
        res = await self.iq("get", jid, pubsub)
        return res.findall(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items/{{{PUBSUB}}}item")

    async def fetch_keys(self, jid: str) -> Dict[str, Any]:
        meta = await self.items(jid, NODE_META)
        if not meta:
            raise CommandError(f"{jid}: empty metadata node")
        fprs = [m.get("v4-fingerprint", "").upper() for m in meta[0].findall(f"{{{NS_OX}}}public-keys-list/{{{NS_OX}}}pubkey-metadata")]
        keys = []
        for fpr in fprs:
            item = (await self.items(jid, f"{NODE_META}:{fpr}"))[0]
            data = base64.b64decode(item.findtext(f"{{{NS_OX}}}pubkey/{{{NS_OX}}}data") or "")
            imported = self.gpg.import_key(data)
            if fpr not in imported:
                raise CommandError(f"{jid}: key node {fpr} holds another key ({imported})")
            uids = self.gpg.uids(fpr)
            if f"xmpp:{jid}" not in uids:
                raise CommandError(f"{jid}: key {fpr} has no user ID xmpp:{jid} ({uids})")
            keys.append({"fingerprint": fpr, "uids": uids, "item_id": item.get("id")})
        self.contact_keys[jid] = [k["fingerprint"] for k in keys]
        return {"keys": keys, "metadata_item": meta[0].get("id")}

    # ---------------------------------------------------------------- incoming

    async def inbox_worker(self) -> None:
        await self.ready.wait()
        while True:
            el = await self.inbox.get()
            try:
                await self.handle(el)
            except Exception as e:
                log.exception("handling a message failed")
                emit({"event": "error", "error": f"internal error: {e}"})

    async def handle(self, el: ET.Element) -> None:
        frm = JID(el.get("from") or self.bare)
        base = {"from": frm.bare, "from_full": str(frm), "id": el.get("id")}
        if el.get("type") == "error":
            err = el.find(f"{{{CLIENT}}}error")
            cond = next((c.tag.split("}")[1] for c in (err if err is not None else []) if c.tag.startswith(f"{{{STANZAS}}}") and not c.tag.endswith("}text")), None)
            text = err.findtext(f"{{{STANZAS}}}text") if err is not None else None
            emit({"event": "message_error", **base, "condition": cond, "text": text})
            return
        event = el.find(f"{{{PUBSUB_EVENT}}}event/{{{PUBSUB_EVENT}}}items")
        if event is not None:
            emit({"event": "pep", "from": frm.bare, "node": event.get("node"),
                  "items": [{"id": i.get("id"), "payload": len(list(i)) > 0} for i in event.findall(f"{{{PUBSUB_EVENT}}}item")]})
            return
        rec = el.find(f"{{{RECEIPTS}}}received")
        if rec is not None:
            emit({"event": "receipt", **base, "id": rec.get("id"), "stanza_id": el.get("id")})
        ox = el.find(f"{{{NS_OX}}}openpgp")
        if ox is None:
            body = el.findtext(f"{{{CLIENT}}}body")
            if body is not None:
                emit({"event": "message", **base, "type": el.get("type", "normal"), "body": body, "encrypted": False,
                      "signature": "none", "device_id": None, "trust": None, "delayed": el.find(f"{{{DELAY}}}delay") is not None})
            return
        await self.handle_ox(el, frm, base, ox.text or "")

    async def handle_ox(self, el: ET.Element, frm: JID, base: Dict[str, Any], b64: str) -> None:
        if frm.bare not in self.contact_keys:
            try:
                await self.fetch_keys(frm.bare)
            except Exception as e:
                log.info("keys of %s: %s", frm.bare, e)
        code, out, status = self.gpg.run(["--decrypt"], base64.b64decode(b64))
        if not any(l.startswith("DECRYPTION_OKAY") for l in status):
            emit({"event": "decrypt_error", **base, "error": f"gpg could not decrypt ({code})"})
            return
        valid = next((l.split() for l in status if l.startswith("VALIDSIG ")), None)
        signature = "good" if valid and any(l.startswith("GOODSIG ") for l in status) else \
            "bad" if any(l.startswith("BADSIG ") for l in status) else \
            "missing-key" if any(l.startswith(("NO_PUBKEY", "ERRSIG")) for l in status) else "none"
        signer = valid[-1].upper() if valid else None
        sc = ET.fromstring(out.decode("utf-8"))
        to_ok = any(JID(t.get("jid", "")).bare == self.bare for t in sc.findall(f"{{{NS_OX}}}to"))
        body = None
        payload = sc.find(f"{{{NS_OX}}}payload")
        if payload is not None:
            b = payload.find(f"{{{CLIENT}}}body")
            body = b.text or "" if b is not None else None
            if payload.find(f"{{{RECEIPTS}}}request") is not None:
                pass
        emit({"event": "message", **base, "type": el.get("type", "normal"), "body": body, "encrypted": True,
              "kind": sc.tag.split("}")[1], "signature": signature, "signer": signer,
              "announced": signer in self.contact_keys.get(frm.bare, []), "to_ok": to_ok,
              "time": sc.find(f"{{{NS_OX}}}time").get("stamp"), "device_id": None, "trust": None,  # type: ignore[union-attr]
              "rpad": len(sc.findtext(f"{{{NS_OX}}}rpad") or ""),
              "enc_to": [l.split()[1].upper() for l in status if l.startswith("ENC_TO ")],
              "delayed": el.find(f"{{{DELAY}}}delay") is not None})
        if el.find(f"{{{RECEIPTS}}}request") is not None and self.auto_receipts and el.get("id"):
            msg = self.xmpp.make_message(mto=str(frm), mtype="chat")
            ET.SubElement(msg.xml, f"{{{RECEIPTS}}}received", {"id": el.get("id")})
            msg.send()

    # ---------------------------------------------------------------- commands

    async def stdin_reader(self) -> None:
        loop = asyncio.get_event_loop()
        reader = asyncio.StreamReader(limit=1 << 22)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                await self.commands.put({"cmd": "stop"})
                return
            try:
                cmd = json.loads(line)
                assert isinstance(cmd, dict) and isinstance(cmd.get("cmd"), str)
            except Exception:
                emit({"event": "error", "error": "bad command line"})
                continue
            await self.commands.put(cmd)

    async def command_worker(self) -> None:
        await self.ready.wait()
        handlers = {"send": self.cmd_send, "replay_last": self.cmd_replay, "keys": self.cmd_keys, "subscribe": self.cmd_subscribe,
                    "new_key": self.cmd_new_key}
        while True:
            cmd = await self.commands.get()
            name, ref = cmd["cmd"], cmd.get("ref")
            if name == "stop":
                self.stopping = True
                try:
                    self.xmpp.send_presence(ptype="unavailable")
                    await asyncio.wait_for(self.xmpp.disconnect(wait=2.0), timeout=5)
                except Exception:
                    pass
                self.finish(0)
                return
            try:
                if name not in handlers:
                    raise CommandError(f"unknown command {name!r}")
                await handlers[name](cmd, ref)
            except Exception as e:
                log.info("command %s failed: %s", name, e)
                emit({"event": "send_error" if name in ("send", "replay_last") else "error", "ref": ref, "cmd": name, "error": str(e)})

    def signcrypt(self, to: str, body: str, to_jid: Optional[str], offset: float) -> bytes:
        from xml.sax.saxutils import escape, quoteattr
        when = stamp(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset))
        rpad = secrets.token_urlsafe(secrets.randbelow(40) + 8)
        return (f"<signcrypt xmlns='{NS_OX}'><to jid={quoteattr(to_jid or to)}/><time stamp='{when}'/>"
                f"<rpad>{rpad}</rpad><payload><body xmlns='{CLIENT}'>{escape(body)}</body></payload></signcrypt>").encode("utf-8")

    async def cmd_send(self, cmd: Dict[str, Any], ref: Any) -> None:
        to = str(cmd["to"])
        if to not in self.contact_keys:
            await self.fetch_keys(to)
        content = self.signcrypt(to, str(cmd["body"]), cmd.get("to_jid"), float(cmd.get("time_offset", 0)))
        recipients = [self.fpr] if cmd.get("recipients") == "self" else [*self.contact_keys[to], self.fpr]
        signer = {"alt": self.alt_fpr, "none": None}.get(cmd.get("signer", ""), self.fpr)
        args = ["--compress-algo", "none"]
        for r in recipients:
            args += ["--recipient", r]
        args += ["--encrypt"] + (["--sign", "--local-user", signer] if signer else [])
        code, data, _ = self.gpg.run(args, content)
        if code != 0:
            raise CommandError(f"gpg --encrypt failed ({code})")
        if cmd.get("tamper"):
            _, _, status = self.gpg.run(["--show-session-key", "--decrypt"], data)
            sk = next(l.split()[1] for l in status if l.startswith("SESSION_KEY"))
            rpad = re.search(rb"<rpad>([^<]+)</rpad>", content).group(1)  # type: ignore[union-attr]
            data = tamper_signed(data, sk, b">" + rpad + b"<", b">" + rpad[:-1] + (b"A" if rpad[-1:] != b"A" else b"B") + b"<")
        ox = ET.Element(f"{{{NS_OX}}}openpgp")
        ox.text = base64.b64encode(data).decode()
        self.last_sent[to] = ox
        self.send_ox(to, ox, cmd.get("id"), bool(cmd.get("receipt")), ref, recipients)

    def send_ox(self, to: str, ox: ET.Element, sid: Optional[str], receipt: bool, ref: Any, recipients: List[str]) -> None:
        msg = self.xmpp.make_message(mto=to, mtype="chat")
        msg["id"] = sid or self.xmpp.new_id()
        msg.xml.append(ox)
        ET.SubElement(msg.xml, f"{{{EME}}}encryption", {"namespace": NS_OX, "name": "OX"})
        ET.SubElement(msg.xml, f"{{{HINTS}}}store")
        msg["body"] = FALLBACK
        if receipt:
            ET.SubElement(msg.xml, f"{{{RECEIPTS}}}request")
        msg.send()
        emit({"event": "sent", "ref": ref, "id": msg["id"], "to": to, "recipients": recipients})

    async def cmd_replay(self, cmd: Dict[str, Any], ref: Any) -> None:
        to = str(cmd["to"])
        if to not in self.last_sent:
            raise CommandError(f"nothing sent to {to}")
        import copy
        self.send_ox(to, copy.deepcopy(self.last_sent[to]), cmd.get("id"), False, ref, [])

    async def cmd_keys(self, cmd: Dict[str, Any], ref: Any) -> None:
        emit({"event": "result", "ref": ref, "cmd": "keys", **(await self.fetch_keys(str(cmd["jid"])))})

    async def cmd_new_key(self, _cmd: Dict[str, Any], ref: Any) -> None:
        """A new key replaces the announced one (the old secret key stays, to read old messages)."""
        old = self.fpr
        self.fpr = self.gpg.new_key(f"xmpp:{self.bare}")
        await self.publish_key()
        emit({"event": "result", "ref": ref, "cmd": "new_key", "fingerprint": self.fpr,
              "subkeys": self.gpg.subkeys(self.fpr), "old_subkeys": self.gpg.subkeys(old)})

    async def cmd_subscribe(self, cmd: Dict[str, Any], ref: Any) -> None:
        self.xmpp.send_presence(pto=str(cmd["to"]), ptype="subscribe")
        emit({"event": "result", "ref": ref, "cmd": "subscribe"})

    async def run(self) -> int:
        tasks = [asyncio.ensure_future(t) for t in (self.stdin_reader(), self.command_worker(), self.inbox_worker())]
        self.xmpp.connect(address=self.address, force_starttls=False, disable_starttls=True)
        try:
            waiter = asyncio.ensure_future(self.ready.wait())
            finished, _ = await asyncio.wait({waiter, self.done}, timeout=self.args.connect_timeout, return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                waiter.cancel()
                emit({"event": "fatal", "error": f"not ready within {self.args.connect_timeout} s"})
                self.finish(1)
            return await self.done
        finally:
            for t in tasks:
                t.cancel()


class CommandError(Exception):
    pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--resource", default="ox" + secrets.token_hex(3))
    p.add_argument("--state", required=True)
    p.add_argument("--trust", default="blind")          # accepted for omemo_user.py compatibility
    p.add_argument("--auto-receipts", choices=("yes", "no"), default="yes")
    p.add_argument("--stale-seconds", type=float, default=30.0)
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--log-level", default=os.environ.get("OX_USER_LOG", "INFO"))
    args = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format=f"%(asctime)s {args.jid} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("slixmpp").setLevel(logging.WARNING)

    async def amain() -> int:
        return await OxUser(args).run()

    try:
        return asyncio.run(amain())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
