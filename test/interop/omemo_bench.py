#!/usr/bin/env python3
"""python-omemo's own figures for legacy OMEMO, to print next to the gateway's (`npm run bench`).

No XMPP: every device is a python-omemo SessionManager with the oldmemo backend and in-memory storage;
"PEP" (device lists and bundles) and message delivery are dicts in this process. Timed:

* session_build: the initiator's X3DH + first Double Ratchet step + encryption of the first key
  (oldmemo backend's build_session_active) from a bundle already fetched and parsed; devices=3 is the
  three builds for a contact's three devices.
* encrypt: SessionManager.encrypt of a short body to a contact with 1 or 3 devices (AES-GCM of the body,
  one Signal-encrypted key per device, storage included); result is the library's Message object.
* decrypt: SessionManager.decrypt of such a Message on one of the contact's devices (key unwrap,
  AES-GCM, storage included).
  XML (de)serialisation is not included in either.
* mode steady: the same sending chain, one direction (sessions already confirmed);
  mode ping-pong: every recipient device answers every message, so every message starts a new chain
  (the Diffie-Hellman ratchet turns; the receiver's ratchet step is in its decrypt).

Each device sees only itself in its own account's device list, so that no encryption for one's own
other devices is mixed in, and the library's heartbeat after 53 received messages is disabled.

With --backend twomemo the same cases run on OMEMO 2 (python-twomemo); the plaintext is then the
body bytes as given (the XEP-0420 envelope a client would build around it is not included).

Usage: /usr/bin/python3 test/interop/omemo_bench.py [--budget SECONDS] [--max-n N] [--backend oldmemo|twomemo]
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import omemo  # noqa: E402
from omemo.types import DeviceInformation, TrustLevel  # noqa: E402
import oldmemo  # noqa: E402
import oldmemo.etree as oldmemo_etree  # noqa: E402
from oldmemo.oldmemo import NAMESPACE as NS, PlainKeyMaterialImpl  # noqa: E402
import twomemo  # noqa: E402
import twomemo.etree as twomemo_etree  # noqa: E402
from twomemo.twomemo import NAMESPACE as NS2, PlainKeyMaterialImpl as PlainKeyMaterialImpl2  # noqa: E402

# --backend twomemo swaps these for OMEMO 2 (python-twomemo); the cases are the same.
BACKEND: Any = oldmemo.Oldmemo
ETREE: Any = oldmemo_etree
PLAIN_KEY: Any = PlainKeyMaterialImpl
CURRENT_NS = NS

from omemo_storage import MemoryStorage  # noqa: E402

BODY = "The quick brown fox jumps over the lazy dog. 0123456789".encode("utf-8")


class Network:
    """Fake PEP and message delivery."""

    def __init__(self) -> None:
        self.lists: Dict[str, Dict[int, Optional[str]]] = {}
        self.bundles: Dict[Tuple[str, int], Any] = {}   # serialized XML, as fetched from a server
        self.inbox: Dict[str, List[omemo.Message]] = {}


def device_class(net: Network, own_jid: str) -> type:
    state: Dict[str, Optional[int]] = {"device_id": None}

    class BenchSessionManager(omemo.SessionManager):
        STALENESS_MAGIC_NUMBER = 10 ** 9

        async def _upload_bundle(self, bundle: omemo.Bundle) -> None:  # type: ignore[override]
            state["device_id"] = bundle.device_id
            net.bundles[(own_jid, bundle.device_id)] = ETREE.serialize_bundle(bundle)  # type: ignore[arg-type]
            # Others see the device as soon as its bundle is there (its own list download shows only itself,
            # so the library never needs to upload the account's list).
            net.lists.setdefault(own_jid, {})[bundle.device_id] = None

        async def _download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:  # type: ignore[override]
            xml = net.bundles.get((bare_jid, device_id))
            if xml is None:
                raise omemo.BundleNotFound(f"{bare_jid}/{device_id}")
            return ETREE.parse_bundle(xml, bare_jid, device_id)

        async def _delete_bundle(self, namespace: str, device_id: int) -> None:  # type: ignore[override]
            net.bundles.pop((own_jid, device_id), None)

        async def _upload_device_list(self, namespace: str, device_list: Dict[int, Optional[str]]) -> None:  # type: ignore[override]
            net.lists.setdefault(own_jid, {}).update(device_list)

        async def _download_device_list(self, namespace: str, bare_jid: str) -> Dict[int, Optional[str]]:  # type: ignore[override]
            if bare_jid == own_jid:
                own = state["device_id"]
                return {} if own is None else {own: None}
            return dict(net.lists.get(bare_jid, {}))

        async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
            return TrustLevel.TRUSTED if device.trust_level_name == "blind" else TrustLevel.UNDECIDED

        async def _make_trust_decision(self, undecided: Any, identifier: Optional[str]) -> None:
            for device in undecided:
                await self.set_trust(device.bare_jid, device.identity_key, "blind")

        async def _send_message(self, message: omemo.Message, bare_jid: str) -> None:  # type: ignore[override]
            net.inbox.setdefault(bare_jid, []).append(message)

    return BenchSessionManager


async def new_device(net: Network, jid: str) -> Tuple[omemo.SessionManager, Any]:
    storage = MemoryStorage()
    backend = BACKEND(storage)
    sm = await device_class(net, jid).create([backend], storage, jid, None, "undecided")
    await sm.after_history_sync()
    return sm, backend


def summary(op: str, devices: int, mode: str, samples_ns: List[int]) -> Dict[str, Any]:
    us = sorted(s / 1000 for s in samples_ns)
    p90 = us[min(len(us) - 1, int(round(0.9 * (len(us) - 1))))]
    return {"op": op, "devices": devices, "mode": mode, "median_us": round(statistics.median(us), 1),
            "p90_us": round(p90, 1), "n": len(us)}


async def deliver(net: Network, jid: str, sm: omemo.SessionManager) -> None:
    """Lets `sm` decrypt whatever the library sent to `jid` by itself (key-exchange completions)."""
    own_id = (await sm.get_own_device_information())[0].device_id
    for message in net.inbox.pop(jid, []):
        if any(k.device_id == own_id for k, _ in message.keys):
            await sm.decrypt(message)


async def bench_session_build(devices: int, budget: float, max_n: int) -> Dict[str, Any]:
    net = Network()
    _alice, alice_backend = await new_device(net, "alice@bench")
    bundles = []
    for _ in range(devices):
        _sm, _ = await new_device(net, "bob@bench")
    for (jid, device_id), xml in net.bundles.items():
        if jid == "bob@bench":
            bundles.append(ETREE.parse_bundle(xml, jid, device_id))
    samples: List[int] = []
    deadline = time.monotonic() + budget
    warmup = 3
    while len(samples) < max_n and (time.monotonic() < deadline or len(samples) < 20):
        key = PLAIN_KEY.make_empty()
        t0 = time.perf_counter_ns()
        for bundle in bundles:
            await alice_backend.build_session_active(bundle.bare_jid, bundle.device_id, bundle, key)
        t1 = time.perf_counter_ns()
        if warmup:
            warmup -= 1
        else:
            samples.append(t1 - t0)
    return summary("session_build", devices, "-", samples)


async def bench_messages(devices: int, mode: str, budget: float, max_n: int) -> List[Dict[str, Any]]:
    net = Network()
    alice, _ = await new_device(net, "alice@bench")
    bobs = [(await new_device(net, "bob@bench"))[0] for _ in range(devices)]
    await alice.refresh_device_list(CURRENT_NS, "bob@bench")
    for bob in bobs:
        await bob.refresh_device_list(CURRENT_NS, "alice@bench")

    # First message: PreKey messages; every device of Bob answers with an empty message.
    messages, errors = await alice.encrypt(frozenset(["bob@bench"]), {CURRENT_NS: BODY})
    assert not errors and len(next(iter(messages)).keys) == devices, (errors, messages)
    message = next(iter(messages))
    for bob in bobs:
        plaintext, _, _ = await bob.decrypt(message)
        assert plaintext == BODY
    await deliver(net, "alice@bench", alice)

    enc: List[int] = []
    dec: List[int] = []
    deadline = time.monotonic() + budget
    warmup = 3
    first_bob = bobs[0]
    while len(dec) < max_n and (time.monotonic() < deadline or len(dec) < 20):
        t0 = time.perf_counter_ns()
        messages, errors = await alice.encrypt(frozenset(["bob@bench"]), {CURRENT_NS: BODY})
        t1 = time.perf_counter_ns()
        message = next(iter(messages))
        t2 = time.perf_counter_ns()
        plaintext, _, _ = await first_bob.decrypt(message)
        t3 = time.perf_counter_ns()
        assert plaintext == BODY and not errors
        if mode == "ping-pong":
            for bob in bobs[1:]:
                await bob.decrypt(message)
            for bob in bobs:
                replies, _ = await bob.encrypt(frozenset(["alice@bench"]), {CURRENT_NS: b"ok"})
                reply = next(iter(replies))
                assert len(reply.keys) == 1
                got, _, _ = await alice.decrypt(reply)
                assert got == b"ok"
        if warmup:
            warmup -= 1
            continue
        enc.append(t1 - t0)
        dec.append(t3 - t2)
    return [summary("encrypt", devices, mode, enc), summary("decrypt", devices, mode, dec)]


async def amain(args: argparse.Namespace) -> Dict[str, Any]:
    results: List[Dict[str, Any]] = []
    started = time.monotonic()
    for devices in (1, 3):
        results.append(await bench_session_build(devices, args.budget, args.max_n))
    for mode in ("steady", "ping-pong"):
        for devices in (1, 3):
            results.extend(await bench_messages(devices, mode, args.budget, args.max_n))
    versions = {}
    for dist in ("OMEMO", "Oldmemo", "Twomemo", "DoubleRatchet", "X3DH", "XEdDSA"):
        try:
            from importlib.metadata import version
            versions[dist] = version(dist)
        except Exception:
            pass
    return {
        "implementation": f"python-omemo {omemo.__version__['short']} / "
                          + (f"twomemo {twomemo.__version__['short']}" if CURRENT_NS == NS2 else f"oldmemo {oldmemo.__version__['short']}"),
        "versions": versions,
        "python": sys.version.split()[0],
        "results": results,
        "total_s": round(time.monotonic() - started, 2),
        "notes": f"python-omemo SessionManager + {'twomemo' if CURRENT_NS == NS2 else 'oldmemo'} backend, in-memory storage, "
                 "no XML, no network; session_build = the backend's build_session_active from a parsed bundle",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measured case (at least 20 samples)")
    parser.add_argument("--max-n", type=int, default=500, help="samples per case at most")
    parser.add_argument("--backend", choices=("oldmemo", "twomemo"), default="oldmemo")
    args = parser.parse_args()
    global BACKEND, ETREE, PLAIN_KEY, CURRENT_NS
    if args.backend == "twomemo":
        BACKEND, ETREE, PLAIN_KEY, CURRENT_NS = twomemo.Twomemo, twomemo_etree, PlainKeyMaterialImpl2, NS2
    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)
    print(json.dumps(asyncio.run(amain(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
