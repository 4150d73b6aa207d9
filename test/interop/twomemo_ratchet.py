#!/usr/bin/env python3
"""OMEMO 2 building blocks from Debian's python-twomemo / python-doubleratchet / python-xeddsa, driven
over JSON lines for the gateway's unit tests (test/unit/omemo2-ratchet.test.ts): known answers for
the KDFs, the message AEAD and the payload cipher, XEdDSA checks, and one side of a Double Ratchet
session (python as initiator) so both implementations talk to each other.

One JSON object per line on stdin, one answer per line on stdout; bytes are base64.
  {"op":"kdf","rk","dh","ck"}                  -> {"root": 64 bytes, "chain": 64 bytes}
  {"op":"aead","mk","ad","dh","n","pn","pt"}   -> {"wire": OMEMOAuthenticatedMessage}
  {"op":"payload_open","key","tag","ct"}       -> {"pt"} | {"error"}
  {"op":"xeddsa","priv","msg","sig","pub"}     -> {"ed_pub", "x_pub", "valid": sig verifies for pub}
  {"op":"alice","sk","spk_pub","ad","pts":[]}  -> {"wires":[]}  python's initial message and more
  {"op":"encrypt","pt"} -> {"wire"}      {"op":"decrypt","wire"} -> {"pt"} | {"error"}
"""
import asyncio
import base64
import json
import sys

import doubleratchet
from doubleratchet.recommended import diffie_hellman_ratchet_curve25519
import xeddsa
from twomemo.twomemo import (AEADImpl, DoubleRatchetImpl, EncryptedKeyMaterialImpl, MessageChainKDFImpl,
                             RootChainKDFImpl, Twomemo, ContentImpl, PlainKeyMaterialImpl)
from twomemo.twomemo_pb2 import OMEMOMessage

b = lambda s: base64.b64decode(s)
e = lambda x: base64.b64encode(x).decode()


async def main() -> None:
    state = {"dr": None, "ad": None}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        c = json.loads(line)
        op = c["op"]
        out: dict
        try:
            if op == "kdf":
                out = {"root": e(await RootChainKDFImpl.derive(b(c["rk"]), b(c["dh"]), 64)),
                       "chain": e(await MessageChainKDFImpl.derive(b(c["ck"]), DoubleRatchetImpl.MESSAGE_CHAIN_CONSTANT, 64))}
            elif op == "aead":
                header = OMEMOMessage(n=c["n"], pn=c["pn"], dh_pub=b(c["dh"])).SerializeToString()
                out = {"wire": e(await AEADImpl.encrypt(b(c["pt"]), b(c["mk"]), b(c["ad"]) + header))}
            elif op == "payload_open":
                pt = await Twomemo.decrypt_plaintext(None, ContentImpl(b(c["ct"])), PlainKeyMaterialImpl(b(c["key"]), b(c["tag"])))  # type: ignore[arg-type]
                out = {"pt": e(pt)}
            elif op == "xeddsa":
                priv = b(c["priv"])
                ed_pub = xeddsa.priv_to_ed25519_pub(priv)
                out = {"ed_pub": e(ed_pub), "x_pub": e(xeddsa.priv_to_curve25519_pub(priv)),
                       "valid": xeddsa.ed25519_verify(b(c["sig"]), b(c["pub"]), b(c["msg"]))}
            elif op == "alice":
                state["ad"] = b(c["ad"])
                pts = [b(x) for x in c["pts"]]
                dr, first = await DoubleRatchetImpl.encrypt_initial_message(
                    diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet, RootChainKDFImpl, MessageChainKDFImpl,
                    DoubleRatchetImpl.MESSAGE_CHAIN_CONSTANT, 1000, 1000, AEADImpl, b(c["sk"]), b(c["spk_pub"]),
                    pts[0], state["ad"])
                state["dr"] = dr
                wires = [first.ciphertext]
                for pt in pts[1:]:
                    wires.append((await dr.encrypt_message(pt, state["ad"])).ciphertext)
                out = {"wires": [e(w) for w in wires]}
            elif op == "encrypt":
                out = {"wire": e((await state["dr"].encrypt_message(b(c["pt"]), state["ad"])).ciphertext)}
            elif op == "decrypt":
                msg = EncryptedKeyMaterialImpl.parse(b(c["wire"]), "x@y", 1).encrypted_message
                out = {"pt": e(await state["dr"].decrypt_message(msg, state["ad"]))}
            else:
                out = {"error": f"unknown op {op}"}
        except Exception as ex:  # noqa: BLE001  (the answer names the failure)
            out = {"error": f"{type(ex).__name__}: {ex}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


asyncio.run(main())
