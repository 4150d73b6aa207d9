#!/usr/bin/env python3
"""The python-omemo test user (test/interop/omemo_user.py) with timestamps, for bench/bridge.ts.

Same command line and JSON-lines protocol as that user, plus:

* every event carries "t_ns": time.monotonic_ns() when it was emitted. That is CLOCK_MONOTONIC, the
  clock of Node's process.hrtime.bigint() (libuv's uv_hrtime) on Linux, so the benchmark subtracts
  its own timestamps from these directly, without the pipe delay in between; the "clock" command
  lets it check that.
* "message" events also carry "recv_ns" (slixmpp has read and parsed the stanza and handed it to the
  user: the moment it is at the client, before any OMEMO work) and "handle_ns" (the user starts on
  it, after any earlier message in its inbox).
* every <message> written to the socket is reported as {"event": "wrote", "id": ID}, emitted right
  after transport.write (the moment the stanza leaves the client).
* bob's OMEMO state is kept in memory (omemo_storage.MemoryStorage), not in the JSON file.
* commands:
    {"cmd": "clock"} -> result (its t_ns)
    {"cmd": "prepare", "to": JID, "bodies": [TEXT, ...]} -> result {"n"}: encrypts the bodies now, in
        order, and keeps the <encrypted> elements;
    {"cmd": "burst", "to": JID} -> result {"ids"}: sends the prepared messages back to back.

Run with Debian's interpreter, like omemo_user.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from typing import Any, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "interop"))

import omemo_user as base  # noqa: E402
from omemo_storage import MemoryStorage  # noqa: E402
from slixmpp import JID  # noqa: E402

_emit = base.emit
# Receive timestamps of the message being handled (one at a time: the user's inbox is sequential).
_current: Dict[str, int] = {}


def emit(event: Dict[str, Any]) -> None:
    t = time.monotonic_ns()
    if event.get("event") == "message":
        event.update(_current)
    event["t_ns"] = t
    _emit(event)


base.emit = emit  # the user's functions look `emit` up in their module at call time

BENCH_COMMANDS = ("clock", "prepare", "burst")
MESSAGE_ID = re.compile(r"^<message\b[^>]*?\sid=(['\"])(.*?)\1")


class StampedInbox(asyncio.Queue):  # type: ignore[type-arg]
    """The user's inbox: slixmpp puts each parsed <message> here from data_received."""

    def put_nowait(self, item: Any) -> None:
        super().put_nowait((time.monotonic_ns(), item))


class RoutedCommands(asyncio.Queue):  # type: ignore[type-arg]
    """Commands from stdin: the benchmark's own go to a separate worker, the rest to the user's."""

    def __init__(self, bench: "asyncio.Queue[Dict[str, Any]]") -> None:
        super().__init__()
        self.bench = bench

    async def put(self, item: Dict[str, Any]) -> None:
        if item.get("cmd") in BENCH_COMMANDS:
            self.bench.put_nowait(item)
        else:
            await super().put(item)


class BenchUser(base.OmemoUser):
    def __init__(self, args: Any) -> None:
        super().__init__(args)
        # State in memory: the file store rewrites its whole JSON file on every write (several per
        # message), which would make bob's client slower than any real one. A bench run is throwaway.
        self.storage = MemoryStorage()
        self.storage.writes = 0  # type: ignore[attr-defined]  (reported by the "info" command)
        self.inbox = StampedInbox()
        self.bench_commands: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.commands = RoutedCommands(self.bench_commands)
        self.prepared: Dict[str, List[Any]] = {}
        raw = self.xmpp.send_raw

        def send_raw(data: Any) -> None:
            raw(data)
            if isinstance(data, str) and data.startswith("<message"):
                m = MESSAGE_ID.match(data)
                emit({"event": "wrote", "id": m.group(2) if m else None})

        self.xmpp.send_raw = send_raw  # type: ignore[method-assign]

    async def handle_message(self, item: Tuple[int, Any]) -> None:  # type: ignore[override]
        recv_ns, xml = item
        _current.update(recv_ns=recv_ns, handle_ns=time.monotonic_ns())
        try:
            await super().handle_message(xml)
        finally:
            _current.clear()

    async def command_worker(self) -> None:
        await asyncio.gather(super().command_worker(), self.bench_worker())

    async def bench_worker(self) -> None:
        await self.ready.wait()
        while True:
            cmd = await self.bench_commands.get()
            ref = cmd.get("ref")
            try:
                if cmd["cmd"] == "clock":
                    emit({"event": "result", "ref": ref, "cmd": "clock"})
                elif cmd["cmd"] == "prepare":
                    to = JID(base.require_str(cmd, "to")).bare
                    bodies = cmd.get("bodies")
                    if not isinstance(bodies, list):
                        raise base.CommandError("'bodies' (a list) is required")
                    out = [(await self.encrypt_for(to, str(b)))["encrypted"] for b in bodies]
                    self.prepared[to] = out
                    emit({"event": "result", "ref": ref, "cmd": "prepare", "n": len(out)})
                elif cmd["cmd"] == "burst":
                    to = base.require_str(cmd, "to")
                    ids = [self.send_encrypted_stanza(to, enc, None, False) for enc in self.prepared.pop(JID(to).bare, [])]
                    emit({"event": "result", "ref": ref, "cmd": "burst", "ids": ids})
            except Exception as e:
                emit({"event": "error", "ref": ref, "cmd": cmd["cmd"], "error": base.short_error(e)})


def main() -> int:
    base.OmemoUser = BenchUser  # type: ignore[misc]  (main() builds the user by this name)
    return base.main()


if __name__ == "__main__":
    sys.exit(main())
