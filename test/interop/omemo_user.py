#!/usr/bin/env python3
"""A controllable OMEMO XMPP user for interop tests: legacy OMEMO (eu.siacs.conversations.axolotl,
python-oldmemo), OMEMO 2 (urn:xmpp:omemo:2, python-twomemo) or both (--backends oldmemo,twomemo).

The OMEMO implementation is Syndace's python-omemo + python-oldmemo/python-twomemo as packaged by Debian; this file
is only the glue those libraries leave to their user: storage (a JSON file), PEP upload/download of
bundles and device lists, sending, trust decisions, XEP-0420 envelopes for OMEMO 2 (python-twomemo
encrypts bytes; the envelope is the client's), and an XMPP client (slixmpp) around it. With both
backends, python-omemo sends each device the newest version it lists (one stanza per version).

Run with Debian's interpreter (the packages live in /usr/lib/python3/dist-packages):

    /usr/bin/python3 test/interop/omemo_user.py --jid alice@example.org --password password \
        --service 127.0.0.1:5222 --resource dev1 --state /tmp/alice-dev1

Control protocol: one JSON object per line; commands on stdin, events on stdout (flushed after each
line); logging on stderr (OMEMO_USER_LOG=DEBUG or --log-level for more). The driver is
test/harness/omemo-user.ts. Every command may carry "ref", echoed in its answer.

Commands
  {"cmd":"send","to":JID,"body":TEXT,"id":ID?,"receipt":BOOL?,"sce_to":JID?}  OMEMO-encrypt (sce_to: the
        OMEMO 2 envelope's <to> instead of the recipient's bare JID, for misaddressing tests) to all the contact's devices
        and our own other devices (refetching the contact's device list first when it was not fetched or
        pushed within --stale-seconds) -> sent | send_error
  {"cmd":"send_plain","to":JID,"body":TEXT,"id":ID?,"receipt":BOOL?,"type":"chat"?} -> sent
  {"cmd":"send_corrupted","to":JID,"body":TEXT,"what":"payload"|"key","id":ID?,"receipt":BOOL?}
        a properly encrypted message with one bit flipped in the payload, or in the ciphertext of every
        Signal message in the <key>s (framing kept, so the receiver's MAC check fails) -> sent | send_error
  {"cmd":"replay_last","to":JID,"id":ID?}  the last `send` to that bare JID again, same <encrypted> bytes,
        new stanza id -> sent | send_error
  {"cmd":"subscribe","to":JID} -> result
  {"cmd":"approve","jid":JID}  accept a subscription request held back (--approve-subscriptions no) -> result
  {"cmd":"deny","jid":JID}     decline one (presence type unsubscribed) -> result
  {"cmd":"refresh","jid":JID}   refetch the device list -> result (as for devices)
  {"cmd":"devices","jid":JID}   -> result {"devices":[{"device_id","fingerprint","trust","active","session",
        "own"}], "listed":[active ids in the cached list], "problems":{device_id: why its bundle is unusable}}
  {"cmd":"trust","jid":JID,"device_id":N | "fingerprint":HEX,"level":"verified"|"blind"|"undecided"|"distrusted"}
  {"cmd":"set","auto_receipts":BOOL?,"trust":"blind"|"manual"?,"stale_seconds":N?} -> result
  {"cmd":"info"} -> result {"device_id","fingerprint","own_devices","prekeys","signed_prekey_id",...}
  {"cmd":"stop"}  clean disconnect, exit 0 (also on end of stdin)
Group chats (XEP-0045; occupants' real JIDs are tracked from their presence)
  {"cmd":"muc_join","room":JID,"nick":NICK,"history":BOOL?} -> result {"occupants":{nick: real JID|null},"codes"}
        once our own presence (status 110) arrives | error (the join was refused: its condition)
  {"cmd":"muc_leave","room":JID} -> result
  {"cmd":"muc_config","room":JID,"fields":{var: value | [values]}}  owner: submit the room configuration
  {"cmd":"muc_affiliation","room":JID,"jid":JID,"affiliation":"member"|"owner"|"outcast"|"none"} -> result
  {"cmd":"muc_kick","room":JID,"nick":NICK} -> result
  {"cmd":"muc_destroy","room":JID} -> result
  {"cmd":"send_groupchat","room":JID,"body":TEXT,"id":ID?,"skip":[JID]?}  OMEMO-encrypt to every device of every
        occupant (their real JIDs; not those in skip) and our own other devices; one groupchat message per OMEMO
        version -> sent | send_error
  Plain groupchat text: send_plain with "type":"groupchat".

Events
  ready {"jid","full_jid","device_id","fingerprint"}   fingerprint: 64 hex of the Curve25519 identity key
  message {"from","from_full","id","type","body","device_id","encrypted","trust","fingerprint"?,"delayed",
        "namespace"?: "oldmemo"|"twomemo", "fingerprint_ed25519"?, "kex"?: our key started a session}
        every received chat message; body null for an empty (key transport) OMEMO message; plaintext
        messages have encrypted false, device_id and trust null
  decrypt_error {"from","from_full","id","sid","error"}   ("no key for this device" when no <key> has our rid)
  receipt {"from","from_full","id": acked id,"stanza_id"}
  subscribe_request {"from"}   a subscription request, held back until "approve" (--approve-subscriptions no)
  sent {"ref","id","to","rids","prekey_rids","errors","skipped"} / send_error {"ref","cmd","error"}
  result {"ref","cmd",...}   error {"ref"?,"error"}   fatal {"error"} (then exit 1)
  auto_sent {"to","id","kind":"empty","rids"}  messages the library sent by itself (key-exchange completion,
        heartbeat)
  devicelist {"jid","devices"}  a device list pushed by PEP and applied
  presence {"from","from_full","type"}   message_error {"from","id","condition"}
  groupchat messages are "message" events with "type":"groupchat", "nick", "real_jid" (null if hidden) and,
        when encrypted, "rids" (every device id the header has a key for); our own reflections are
        "reflection" {"room","id"}; muc_presence {"room","nick","real_jid","available","codes"}
  disconnected {"reason"} / reconnected {"jid"}  (the user reconnects by itself, e.g. after a server restart)

Trust: "blind" (default) trusts every device of every contact when first seen (sending or receiving);
"manual" trusts only what `trust` commands say, and a send to a contact with undecided devices fails.
Receipts (XEP-0184) are answered after successful decryption when --auto-receipts is yes (default).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import json
import logging
import os
import secrets
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, FrozenSet, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import omemo  # noqa: E402
from omemo.types import DeviceInformation, TrustLevel  # noqa: E402
import oldmemo  # noqa: E402
import twomemo  # noqa: E402
import twomemo.etree as twomemo_etree  # noqa: E402
from twomemo.twomemo import NAMESPACE as NS2  # noqa: E402
from twomemo.twomemo_pb2 import OMEMOKeyExchange as TwoKeyExchange, OMEMOAuthenticatedMessage as TwoAuth, \
    OMEMOMessage as TwoMessage  # noqa: E402  (framing only, for corruption tests)
import oldmemo.etree as oldmemo_etree  # noqa: E402  (needs python3-xmlschema)
from oldmemo.oldmemo import NAMESPACE as NS  # noqa: E402
from oldmemo.oldmemo_pb2 import OMEMOKeyExchange  # noqa: E402  (protobuf framing only, for corruption tests)
import xeddsa  # noqa: E402
import slixmpp  # noqa: E402
from slixmpp import JID  # noqa: E402
from slixmpp.exceptions import IqError, IqTimeout  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

from omemo_storage import JsonFileStorage  # noqa: E402

log = logging.getLogger("omemo_user")

DEVICELIST_NODE = f"{NS}.devicelist"
BUNDLE_NODE_PREFIX = f"{NS}.bundles:"
DEVICES_NODE_2 = f"{NS2}:devices"
BUNDLES_NODE_2 = f"{NS2}:bundles"
SCE = "urn:xmpp:sce:1"
BACKEND_NS = {"oldmemo": NS, "twomemo": NS2}
NS_NAME = {NS: "oldmemo", NS2: "twomemo"}
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER = f"{PUBSUB}#owner"
PUBSUB_EVENT = f"{PUBSUB}#event"
PUBSUB_ERRORS = f"{PUBSUB}#errors"
XDATA = "jabber:x:data"
RECEIPTS = "urn:xmpp:receipts"
EME = "urn:xmpp:eme:0"
HINTS = "urn:xmpp:hints"
DELAY = "urn:xmpp:delay"
CLIENT = "jabber:client"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = f"{MUC}#user"
MUC_ADMIN = f"{MUC}#admin"
MUC_OWNER = f"{MUC}#owner"
FALLBACK_BODY = "This message is OMEMO-encrypted; your client cannot read it."

# Trust level names stored by the library (the library calls them "custom trust levels").
TRUST_BLIND = "blind"          # trusted automatically (blind trust)
TRUST_VERIFIED = "verified"    # trusted by a `trust` command
TRUST_UNDECIDED = "undecided"  # the library's starting value for a new identity key
TRUST_DISTRUSTED = "distrusted"
TRUST_LEVELS = {
    TRUST_BLIND: TrustLevel.TRUSTED,
    TRUST_VERIFIED: TrustLevel.TRUSTED,
    TRUST_UNDECIDED: TrustLevel.UNDECIDED,
    TRUST_DISTRUSTED: TrustLevel.DISTRUSTED,
}


def emit(event: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def short_error(e: BaseException) -> str:
    """'Type: first line of the message (CauseType: first line of the cause)', each part cut short."""
    def line(x: BaseException) -> str:
        text = str(x).strip()
        return text.splitlines()[0][:160] if text else ""
    text = line(e)
    cause = e.__cause__ or e.__context__
    out = f"{type(e).__name__}: {text}" if text else type(e).__name__
    if cause is not None and cause is not e:
        ctext = line(cause)
        out += f" ({type(cause).__name__}{': ' + ctext if ctext else ''})"
    return out


def fingerprint(identity_key_ed25519: bytes) -> str:
    """64 lowercase hex chars of the Curve25519 identity key, without the 0x05 type byte."""
    return xeddsa.ed25519_pub_to_curve25519_pub(identity_key_ed25519).hex()


def xdata_form(form_type: str, fields: Dict[str, str]) -> ET.Element:
    x = ET.Element(f"{{{XDATA}}}x", {"type": "submit"})
    ft = ET.SubElement(x, f"{{{XDATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    ET.SubElement(ft, f"{{{XDATA}}}value").text = form_type
    for var, value in fields.items():
        f = ET.SubElement(x, f"{{{XDATA}}}field", {"var": var})
        ET.SubElement(f, f"{{{XDATA}}}value").text = value
    return x


def pick_item(items: List[ET.Element]) -> Optional[ET.Element]:
    """The item with id 'current' if there is one, else the last one."""
    if not items:
        return None
    for item in items:
        if item.get("id") == "current":
            return item
    return items[-1]


def parse_device_list_payload(list_el: Optional[ET.Element]) -> Dict[int, Optional[str]]:
    if list_el is None:
        return {}
    # oldmemo's schema requires at least one <device/>; an empty list is valid on the wire.
    if list_el.find(f"{{{NS}}}device") is None:
        return {}
    return oldmemo_etree.parse_device_list(list_el)


def parse_device_list_payload_2(devices_el: Optional[ET.Element]) -> Dict[int, Optional[str]]:
    if devices_el is None or devices_el.find(f"{{{NS2}}}device") is None:
        return {}
    return twomemo_etree.parse_device_list(devices_el)


def build_envelope(body: str, frm: str, to: str) -> bytes:
    """An XEP-0420 envelope as slixmpp-omemo sends it: the body in <content>, rpad, from, to, time."""
    env = ET.Element(f"{{{SCE}}}envelope")
    content = ET.SubElement(env, f"{{{SCE}}}content")
    ET.SubElement(content, f"{{{CLIENT}}}body").text = body
    ET.SubElement(env, f"{{{SCE}}}rpad").text = secrets.token_urlsafe(secrets.randbelow(40) + 1)
    ET.SubElement(env, f"{{{SCE}}}from", {"jid": frm})
    ET.SubElement(env, f"{{{SCE}}}to", {"jid": to})
    ET.SubElement(env, f"{{{SCE}}}time", {"stamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return ET.tostring(env, encoding="utf-8")


def open_envelope(data: bytes, sender: str, own: str) -> str:
    """The body of an envelope after the receiver checks of XEP-0420: from is the sender, to is us."""
    env = ET.fromstring(data.decode("utf-8"))
    if env.tag != f"{{{SCE}}}envelope":
        raise ValueError("not an SCE envelope")
    frm = env.find(f"{{{SCE}}}from")
    if frm is not None and JID(frm.get("jid", "")).bare != sender:
        raise ValueError(f"SCE from {frm.get('jid')} is not the sender {sender}")
    to = env.find(f"{{{SCE}}}to")
    if to is not None and JID(to.get("jid", "")).bare != own:
        raise ValueError(f"SCE to {to.get('jid')} is not us")
    body = env.find(f"{{{SCE}}}content/{{{CLIENT}}}body")
    return "" if body is None else (body.text or "")


class InteropSessionManager(omemo.SessionManager):
    """python-omemo's SessionManager with its XMPP-facing methods implemented over our slixmpp client.

    The library builds the instance itself in `create()` (and calls upload/download while doing so),
    so the client is handed over as a class attribute before `create()` is called.
    """

    user: "OmemoUser"

    async def _upload_bundle(self, bundle: omemo.Bundle) -> Any:  # type: ignore[override]
        if bundle.namespace == NS2:
            try:
                await self.user.publish(BUNDLES_NODE_2, lambda: twomemo_etree.serialize_bundle(bundle),
                                        item_id=str(bundle.device_id), max_items="max")
            except (IqError, IqTimeout) as e:
                raise omemo.BundleUploadFailed(describe_iq_failure(e)) from e
            return
        if bundle.namespace != NS:
            raise omemo.UnknownNamespace(bundle.namespace)
        assert isinstance(bundle, oldmemo.oldmemo.BundleImpl)
        try:
            await self.user.publish(f"{BUNDLE_NODE_PREFIX}{bundle.device_id}",
                                    lambda: oldmemo_etree.serialize_bundle(bundle))
        except (IqError, IqTimeout) as e:
            raise omemo.BundleUploadFailed(describe_iq_failure(e)) from e

    async def _download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:  # type: ignore[override]
        if namespace not in (NS, NS2):
            raise omemo.UnknownNamespace(namespace)
        node = BUNDLES_NODE_2 if namespace == NS2 else f"{BUNDLE_NODE_PREFIX}{device_id}"
        try:
            items = await self.user.fetch_items(bare_jid, node, item_id=str(device_id) if namespace == NS2 else None)
        except IqError as e:
            self.user.note_peer_problem(bare_jid, device_id, f"bundle fetch: {describe_iq_failure(e)}")
            if iq_condition(e) == "item-not-found":
                raise omemo.BundleNotFound(f"{bare_jid}/{device_id}: item-not-found") from e
            raise omemo.BundleDownloadFailed(f"{bare_jid}/{device_id}: {describe_iq_failure(e)}") from e
        except IqTimeout as e:
            self.user.note_peer_problem(bare_jid, device_id, "bundle fetch: timeout")
            raise omemo.BundleDownloadFailed(f"{bare_jid}/{device_id}: timeout") from e
        if namespace == NS2:
            item = next((i for i in items if i.get("id") == str(device_id)), None)
        else:
            item = pick_item(items)
        bundle_el = None if item is None else item.find(f"{{{namespace}}}bundle")
        if bundle_el is None:
            self.user.note_peer_problem(bare_jid, device_id, "bundle fetch: no <bundle/> item")
            raise omemo.BundleNotFound(f"{bare_jid}/{device_id}: no bundle item")
        try:
            etree = twomemo_etree if namespace == NS2 else oldmemo_etree
            bundle = etree.parse_bundle(bundle_el, bare_jid, device_id)
        except Exception as e:  # schema or key format errors: the bundle is unusable
            self.user.note_peer_problem(bare_jid, device_id, f"unusable bundle: {short_error(e)}")
            raise omemo.BundleDownloadFailed(f"{bare_jid}/{device_id}: unusable bundle: {short_error(e)}") from e
        self.user.peer_problems.pop(f"{bare_jid}/{device_id}", None)
        return bundle

    async def _delete_bundle(self, namespace: str, device_id: int) -> Any:  # type: ignore[override]
        if namespace not in (NS, NS2):
            raise omemo.UnknownNamespace(namespace)
        if namespace == NS2:
            pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
            retract = ET.SubElement(pubsub, f"{{{PUBSUB}}}retract", {"node": BUNDLES_NODE_2})
            ET.SubElement(retract, f"{{{PUBSUB}}}item", {"id": str(device_id)})
        else:
            pubsub = ET.Element(f"{{{PUBSUB_OWNER}}}pubsub")
            ET.SubElement(pubsub, f"{{{PUBSUB_OWNER}}}delete", {"node": f"{BUNDLE_NODE_PREFIX}{device_id}"})
        try:
            await self.user.iq("set", self.user.own_bare, pubsub)
        except IqError as e:
            if iq_condition(e) != "item-not-found":
                raise omemo.BundleDeletionFailed(describe_iq_failure(e)) from e
        except IqTimeout as e:
            raise omemo.BundleDeletionFailed("timeout") from e

    async def _upload_device_list(self, namespace: str, device_list: Dict[int, Optional[str]]) -> Any:  # type: ignore[override]
        if namespace not in (NS, NS2):
            raise omemo.UnknownNamespace(namespace)
        try:
            if namespace == NS2:
                await self.user.publish(DEVICES_NODE_2, lambda: twomemo_etree.serialize_device_list(device_list))
            else:
                await self.user.publish(DEVICELIST_NODE, lambda: oldmemo_etree.serialize_device_list(device_list))
        except (IqError, IqTimeout) as e:
            raise omemo.DeviceListUploadFailed(describe_iq_failure(e)) from e

    async def _download_device_list(self, namespace: str, bare_jid: str) -> Dict[int, Optional[str]]:  # type: ignore[override]
        if namespace not in (NS, NS2):
            raise omemo.UnknownNamespace(namespace)
        try:
            items = await self.user.fetch_items(bare_jid, DEVICES_NODE_2 if namespace == NS2 else DEVICELIST_NODE)
        except IqError as e:
            if iq_condition(e) == "item-not-found":
                self.user.list_fetched[bare_jid] = time.monotonic()
                return {}
            raise omemo.DeviceListDownloadFailed(f"{bare_jid}: {describe_iq_failure(e)}") from e
        except IqTimeout as e:
            raise omemo.DeviceListDownloadFailed(f"{bare_jid}: timeout") from e
        item = pick_item(items)
        try:
            if namespace == NS2:
                devices = parse_device_list_payload_2(None if item is None else item.find(f"{{{NS2}}}devices"))
            else:
                devices = parse_device_list_payload(None if item is None else item.find(f"{{{NS}}}list"))
        except Exception as e:
            raise omemo.DeviceListDownloadFailed(f"{bare_jid}: malformed device list: {short_error(e)}") from e
        self.user.list_fetched[bare_jid] = time.monotonic()
        return devices

    async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
        try:
            return TRUST_LEVELS[device.trust_level_name]
        except KeyError:
            raise omemo.UnknownTrustLevel(device.trust_level_name)

    async def _make_trust_decision(self, undecided: FrozenSet[DeviceInformation], identifier: Optional[str]) -> Any:
        if self.user.trust_mode != "blind":
            return  # manual: decisions come only from `trust` commands; encryption then fails with StillUndecided
        for device in undecided:
            await self.set_trust(device.bare_jid, device.identity_key, TRUST_BLIND)

    async def _send_message(self, message: omemo.Message, bare_jid: str) -> Any:  # type: ignore[override]
        # Messages the library sends by itself: empty (key transport) messages that complete a key exchange
        # or keep a session from going stale.
        if message.namespace not in (NS, NS2):
            raise omemo.UnknownNamespace(message.namespace)
        try:
            etree = twomemo_etree if message.namespace == NS2 else oldmemo_etree
            stanza_id = self.user.send_encrypted_stanza(bare_jid, etree.serialize_message(message),
                                                        None, receipt=False, body=False, ns=message.namespace)
        except Exception as e:
            raise omemo.MessageSendingFailed(short_error(e)) from e
        emit({"event": "auto_sent", "to": bare_jid, "id": stanza_id, "kind": "empty",
              "rids": sorted(k.device_id for k, _ in message.keys), "namespace": NS_NAME[message.namespace]})


def iq_condition(e: IqError) -> str:
    try:
        return str(e.iq["error"]["condition"])
    except Exception:
        return "unknown"


def describe_iq_failure(e: BaseException) -> str:
    if isinstance(e, IqTimeout):
        return "timeout"
    if isinstance(e, IqError):
        text = ""
        try:
            text = e.iq["error"]["text"]
        except Exception:
            pass
        extra = ""
        if e.iq.xml.find(f".//{{{PUBSUB_ERRORS}}}precondition-not-met") is not None:
            extra = " (precondition-not-met)"
        return f"{e.iq['error']['type']}/{iq_condition(e)}{extra}{': ' + text if text else ''}"
    return short_error(e)


class OmemoUser:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.own_bare = JID(args.jid).bare
        self.trust_mode: str = args.trust
        # The access model of our OMEMO nodes (open, as XEP-0384 asks; presence, as some clients
        # publish) and whether subscription requests are accepted at once.
        self.access_model: str = args.access_model
        self.approve_subscriptions: bool = args.approve_subscriptions == "yes"
        self.held_requests: set = set()
        self.auto_receipts: bool = args.auto_receipts == "yes"
        self.stale_seconds: float = args.stale_seconds
        self.label: Optional[str] = args.label
        os.makedirs(args.state, exist_ok=True)
        self.storage = JsonFileStorage(os.path.join(args.state, "omemo-state.json"))
        self.sm: Optional[InteropSessionManager] = None
        self.own_device_id: Optional[int] = None
        self.backend: Any = None   # the first backend (bundle info)
        self.backends: List[Any] = []
        self.namespaces: List[str] = [BACKEND_NS[b] for b in args.backends.split(",")]
        self.lock = asyncio.Lock()           # one OMEMO operation at a time (the library is not re-entrant)
        self.inbox: "asyncio.Queue[ET.Element]" = asyncio.Queue()   # incoming messages, in order
        self.commands: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.list_fetched: Dict[str, float] = {}
        self.last_sent: Dict[str, Dict[str, Any]] = {}  # bare JID -> {"encrypted": Element, "receipt": bool}
        self.peer_problems: Dict[str, str] = {}
        self.rooms: Dict[str, Dict[str, Optional[str]]] = {}   # room -> nick -> real bare JID (None: hidden)
        self.room_nicks: Dict[str, str] = {}                    # room -> our nick
        self.joins: Dict[str, "asyncio.Future[Dict[str, Any]]"] = {}
        self.stopping = False
        self.ready = asyncio.Event()
        self.started = False
        self.features_added = False
        self.done: "asyncio.Future[int]" = asyncio.get_event_loop().create_future()

        host, _, port = args.service.rpartition(":")
        self.address = (host or "127.0.0.1", int(port))
        xmpp = slixmpp.ClientXMPP(f"{self.own_bare}/{args.resource}", args.password)
        self.xmpp = xmpp
        for plugin in ("xep_0030", "xep_0004", "xep_0128", "xep_0115", "xep_0199"):
            xmpp.register_plugin(plugin)
        xmpp["xep_0199"].enable_keepalive = False
        # Tests run Prosody on loopback without TLS; allow PLAIN there too (SCRAM is preferred anyway).
        xmpp["feature_mechanisms"].unencrypted_plain = True
        xmpp["feature_mechanisms"].unencrypted_scram = True
        # Subscriptions are handled below (accept, then subscribe back).
        xmpp.auto_authorize = None
        xmpp.auto_subscribe = False

        xmpp.add_event_handler("session_start", self.on_session_start)
        xmpp.add_event_handler("session_bind", self.on_session_bind)
        xmpp.add_event_handler("failed_auth", self.on_failed_auth)
        xmpp.add_event_handler("disconnected", self.on_disconnected)
        xmpp.add_event_handler("connection_failed", self.on_connection_failed)
        xmpp.add_event_handler("presence_subscribe", self.on_presence_subscribe)
        xmpp.add_event_handler("presence", self.on_presence)
        xmpp.register_handler(Callback("interop messages", MatchXPath(f"{{{CLIENT}}}message"),
                                       lambda msg: self.inbox.put_nowait(msg.xml)))

    # ---------------------------------------------------------------- XMPP plumbing

    def on_session_bind(self, _jid: Any) -> None:
        if self.features_added:
            return
        self.features_added = True
        disco = self.xmpp["xep_0030"]
        disco.add_identity(category="client", itype="bot", name="python-omemo interop test user")
        features = [RECEIPTS, EME]
        if NS in self.namespaces:
            features.append(f"{DEVICELIST_NODE}+notify")
        if NS2 in self.namespaces:
            features.append(f"{DEVICES_NODE_2}+notify")
        for feature in features:
            disco.add_feature(feature)

    async def on_session_start(self, _event: Any) -> None:
        try:
            await self.xmpp.get_roster()
        except (IqError, IqTimeout) as e:
            log.warning("roster fetch failed: %s", describe_iq_failure(e))
        if not self.started:
            self.started = True
            try:
                await self.start_omemo()
            except Exception as e:
                log.exception("OMEMO start failed")
                emit({"event": "fatal", "error": f"OMEMO start failed: {short_error(e)}"})
                self.finish(1)
                return
        await self.xmpp["xep_0115"].update_caps(broadcast=False)
        self.xmpp.send_presence()
        if self.ready.is_set():
            emit({"event": "reconnected", "jid": self.own_bare})
            return
        own, _ = await self.sm.get_own_device_information()  # type: ignore[union-attr]
        self.own_device_id = own.device_id
        self.ready.set()
        emit({"event": "ready", "jid": self.own_bare, "full_jid": str(self.xmpp.boundjid),
              "device_id": own.device_id, "fingerprint": fingerprint(own.identity_key),
              "fingerprint_ed25519": own.identity_key.hex(), "backends": [NS_NAME[n] for n in self.namespaces]})

    async def start_omemo(self) -> None:
        InteropSessionManager.user = self
        self.backends = [twomemo.Twomemo(self.storage) if n == NS2 else oldmemo.Oldmemo(self.storage) for n in self.namespaces]
        self.backend = self.backends[0]
        self.sm = await InteropSessionManager.create(
            self.backends, self.storage, self.own_bare, self.label, TRUST_UNDECIDED,
        )
        # Make sure our device is in the published list and the bundle is there (also after a restart,
        # and when another device of the account overwrote the list meanwhile).
        await self.sm.ensure_data_consistency()
        # No MAM catch-up here: leave history-sync mode at once so pre keys are deleted when used and
        # key exchanges are answered right away.
        await self.sm.after_history_sync()

    def on_failed_auth(self, _event: Any) -> None:
        emit({"event": "fatal", "error": "authentication failed"})
        self.finish(1)

    def on_connection_failed(self, event: Any) -> None:
        log.warning("connection failed: %s", event)

    def on_disconnected(self, reason: Any) -> None:
        if self.stopping or self.done.done():
            return
        emit({"event": "disconnected", "reason": str(reason or "")})
        # Come back (e.g. the test restarted Prosody); slixmpp keeps retrying with its own backoff.
        self.xmpp.connect(address=self.address, force_starttls=False, disable_starttls=True)

    def on_presence_subscribe(self, pres: Any) -> None:
        who = pres["from"].bare
        if not self.approve_subscriptions:
            self.held_requests.add(who)
            emit({"event": "subscribe_request", "from": who})
            return
        self.approve(who)

    def approve(self, who: str) -> None:
        self.xmpp.send_presence(pto=who, ptype="subscribed")
        item = self.xmpp.client_roster[who] if who in self.xmpp.client_roster else None
        if item is None or not (item["to"] or item["pending_out"]):
            self.xmpp.send_presence(pto=who, ptype="subscribe")

    def on_presence(self, pres: Any) -> None:
        if not self.ready.is_set():
            return
        if self.track_muc(pres.xml):
            return
        emit({"event": "presence", "from": pres["from"].bare, "from_full": str(pres["from"]),
              "type": pres["type"]})

    def track_muc(self, xml: ET.Element) -> bool:
        """Occupant presence of a room we joined (or are joining): tracked, reported, never a contact's."""
        frm = JID(xml.get("from") or "")
        room = frm.bare
        if room not in self.room_nicks:
            return False
        nick = frm.resource
        typ = xml.get("type", "available")
        if not nick and typ != "error":
            return True  # the room's own presence (ejabberd sends one, e.g. for its avatar): no occupant
        if typ == "error":
            err = xml.find(f"{{{CLIENT}}}error")
            cond = None
            if err is not None:
                cond = next((c.tag.split("}")[1] for c in err if c.tag.startswith(f"{{{STANZAS}}}")
                             and not c.tag.endswith("}text")), None)
            fut = self.joins.pop(room, None)
            if fut is not None and not fut.done():
                fut.set_exception(CommandError(f"join refused: {cond}"))
            return True
        x = xml.find(f"{{{MUC_USER}}}x")
        item = x.find(f"{{{MUC_USER}}}item") if x is not None else None
        codes = sorted(int(c.get("code", "0")) for c in (x.findall(f"{{{MUC_USER}}}status") if x is not None else []))
        real = item.get("jid") if item is not None else None
        real_bare = JID(real).bare if real else None
        occupants = self.rooms.setdefault(room, {})
        available = typ != "unavailable"
        if available:
            occupants[nick] = real_bare
        else:
            occupants.pop(nick, None)
        emit({"event": "muc_presence", "room": room, "nick": nick, "real_jid": real_bare, "available": available,
              "codes": codes})
        if 110 in codes and available:
            fut = self.joins.pop(room, None)
            if fut is not None and not fut.done():
                fut.set_result({"occupants": dict(occupants), "codes": codes})
        return True

    def finish(self, code: int) -> None:
        if not self.done.done():
            self.done.set_result(code)

    async def iq(self, typ: str, to: str, payload: ET.Element, timeout: float = 10) -> ET.Element:
        iq = self.xmpp.make_iq(id=self.xmpp.new_id(), ito=to, itype=typ)  # type: ignore[arg-type]
        iq.xml.append(payload)
        result = await iq.send(timeout=timeout)
        return result.xml

    async def fetch_items(self, jid: str, node: str, item_id: Optional[str] = None) -> List[ET.Element]:
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        items = ET.SubElement(pubsub, f"{{{PUBSUB}}}items", {"node": node})
        if item_id is not None:
            ET.SubElement(items, f"{{{PUBSUB}}}item", {"id": item_id})
        result = await self.iq("get", jid, pubsub)
        return result.findall(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items/{{{PUBSUB}}}item")

    async def publish(self, node: str, make_payload: Any, item_id: str = "current", max_items: Optional[str] = None) -> None:
        """Publishes item 'current' with publish-options access_model (--access-model, open by default);
        if the server refuses the options (precondition-not-met: the node exists with another access
        model) configure the node and publish again."""
        options_max_items = max_items
        for attempt in range(3):
            pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
            publish = ET.SubElement(pubsub, f"{{{PUBSUB}}}publish", {"node": node})
            item = ET.SubElement(publish, f"{{{PUBSUB}}}item", {"id": item_id})
            item.append(make_payload())
            options = ET.SubElement(pubsub, f"{{{PUBSUB}}}publish-options")
            fields = {"pubsub#access_model": self.access_model}
            if options_max_items is not None:
                fields["pubsub#max_items"] = options_max_items
            options.append(xdata_form(f"{PUBSUB}#publish-options", fields))
            try:
                await self.iq("set", self.own_bare, pubsub)
                if max_items is not None and options_max_items is None:
                    try:
                        await self.configure_access(node, max_items)
                    except IqError as ce:
                        log.info("%s: node configuration refused (%s); keeping the server's max_items", node, ce.text)
                return
            except IqError as e:
                precondition = e.iq.xml.find(f".//{{{PUBSUB_ERRORS}}}precondition-not-met") is not None
                if options_max_items is not None and "pubsub#max_items" in (e.text or ""):
                    # ejabberd 23.01 knows no pubsub#max_items in publish-options: publish without it,
                    # then set it in the node configuration.
                    log.info("%s: publish-options without pubsub#max_items (server refused it)", node)
                    options_max_items = None
                    continue
                if attempt < 2 and precondition:
                    log.info("%s: precondition-not-met, configuring the node to access_model=%s", node, self.access_model)
                    await self.configure_access(node, max_items)
                    continue
                raise

    async def configure_access(self, node: str, max_items: Optional[str] = None) -> None:
        pubsub = ET.Element(f"{{{PUBSUB_OWNER}}}pubsub")
        configure = ET.SubElement(pubsub, f"{{{PUBSUB_OWNER}}}configure", {"node": node})
        fields = {"pubsub#access_model": self.access_model}
        if max_items is not None:
            fields["pubsub#max_items"] = max_items
        configure.append(xdata_form(f"{PUBSUB}#node_config", fields))
        await self.iq("set", self.own_bare, pubsub)

    def note_peer_problem(self, jid: str, device_id: int, problem: str) -> None:
        self.peer_problems[f"{jid}/{device_id}"] = problem
        log.warning("%s/%s: %s", jid, device_id, problem)

    def send_encrypted_stanza(self, to: str, encrypted: ET.Element, stanza_id: Optional[str], receipt: bool,
                              body: bool = True, mtype: str = "chat", ns: str = NS) -> str:
        msg = self.xmpp.make_message(mto=to, mtype=mtype)
        msg["id"] = stanza_id or self.xmpp.new_id()
        if body:
            msg["body"] = FALLBACK_BODY
        msg.xml.append(encrypted)
        ET.SubElement(msg.xml, f"{{{EME}}}encryption", {"namespace": ns, "name": "OMEMO 2" if ns == NS2 else "OMEMO"})
        ET.SubElement(msg.xml, f"{{{HINTS}}}store")
        if receipt:
            ET.SubElement(msg.xml, f"{{{RECEIPTS}}}request")
        msg.send()
        return str(msg["id"])

    # ---------------------------------------------------------------- incoming

    async def inbox_worker(self) -> None:
        await self.ready.wait()
        while True:
            xml = await self.inbox.get()
            try:
                await self.handle_message(xml)
            except Exception as e:  # never die on a peer's stanza
                log.exception("handling a message failed")
                emit({"event": "error", "error": f"internal error handling a message: {short_error(e)}"})

    async def handle_message(self, xml: ET.Element) -> None:
        mtype = xml.get("type", "normal")
        frm = JID(xml.get("from") or self.own_bare)
        base = {"from": frm.bare, "from_full": str(frm), "id": xml.get("id")}
        if mtype == "error":
            err = xml.find(f"{{{CLIENT}}}error")
            cond = None
            if err is not None:
                cond = next((c.tag.split("}")[1] for c in err if c.tag.startswith(f"{{{STANZAS}}}")
                             and not c.tag.endswith("}text")), None)
            emit({"event": "message_error", **base, "condition": cond})
            return
        event = xml.find(f"{{{PUBSUB_EVENT}}}event")
        if event is not None:
            await self.handle_pep_event(frm.bare, event)
            return
        received = xml.find(f"{{{RECEIPTS}}}received")
        if received is not None:
            emit({"event": "receipt", **base, "id": received.get("id"), "stanza_id": xml.get("id")})
        encrypted = xml.find(f"{{{NS}}}encrypted")
        if encrypted is None and NS2 in self.namespaces:
            encrypted = xml.find(f"{{{NS2}}}encrypted")
        body_el = xml.find(f"{{{CLIENT}}}body")
        if mtype == "groupchat":
            room, nick = frm.bare, frm.resource
            if nick and nick == self.room_nicks.get(room):
                emit({"event": "reflection", "room": room, "id": xml.get("id")})
                return
            base["nick"] = nick
            base["real_jid"] = self.rooms.get(room, {}).get(nick)
        wants_receipt = xml.find(f"{{{RECEIPTS}}}request") is not None and mtype != "groupchat"
        delayed = xml.find(f"{{{DELAY}}}delay") is not None
        if encrypted is not None:
            await self.handle_encrypted(xml, frm, base, encrypted, wants_receipt, delayed)
        elif body_el is not None:
            emit({"event": "message", **base, "type": mtype, "body": body_el.text or "", "device_id": None,
                  "encrypted": False, "trust": None, "delayed": delayed})
            if wants_receipt and self.auto_receipts and xml.get("id"):
                self.send_receipt(str(frm), str(xml.get("id")))

    async def handle_encrypted(self, xml: ET.Element, frm: JID, base: Dict[str, Any], encrypted: ET.Element,
                               wants_receipt: bool, delayed: bool) -> None:
        assert self.sm is not None
        ns = encrypted.tag[1:].split("}")[0]
        header = encrypted.find(f"{{{ns}}}header")
        sid = header.get("sid") if header is not None else None
        sender = frm.bare
        if xml.get("type") == "groupchat":
            base["rids"] = sorted(int(k.get("rid", "0")) for k in (header.iter(f"{{{ns}}}key") if header is not None else []))
            base["namespace"] = NS_NAME[ns]
            if not base.get("real_jid"):
                emit({"event": "decrypt_error", **base, "sid": sid, "error": "the room hides the sender's real JID"})
                return
            sender = base["real_jid"]
        try:
            async with self.lock:
                if ns == NS2:
                    message = twomemo_etree.parse_message(encrypted, sender)
                else:
                    message = await oldmemo_etree.parse_message(encrypted, sender, self.own_bare, self.sm)
                plaintext, device, _key = await self.sm.decrypt(message)
            text = None
            if plaintext is not None:
                # XEP-0420 in a group chat: the envelope's <to> names the room, not us.
                own = frm.bare if xml.get("type") == "groupchat" else self.own_bare
                text = open_envelope(plaintext, sender, own) if ns == NS2 else plaintext.decode("utf-8", errors="replace")
        except omemo.MessageNotForUs:
            emit({"event": "decrypt_error", **base, "sid": sid, "error": "no key for this device"})
            return
        except Exception as e:
            log.info("decryption failed for %s: %s", base, short_error(e))
            emit({"event": "decrypt_error", **base, "sid": sid, "error": short_error(e)})
            return
        trust = device.trust_level_name
        if self.trust_mode == "blind" and trust == TRUST_UNDECIDED:
            # Blind trust: a device is trusted from the first time we see it, sending or receiving.
            async with self.lock:
                await self.sm.set_trust(device.bare_jid, device.identity_key, TRUST_BLIND)
            trust = TRUST_BLIND
        emit({"event": "message", **base, "type": xml.get("type", "normal"), "body": text,
              "device_id": device.device_id, "encrypted": True, "trust": trust,
              "fingerprint": fingerprint(device.identity_key), "fingerprint_ed25519": device.identity_key.hex(),
              "namespace": NS_NAME[ns], "kex": self.own_key_is_kex(encrypted, ns), "delayed": delayed})
        if wants_receipt and self.auto_receipts and xml.get("id"):
            self.send_receipt(str(frm), str(xml.get("id")))

    def own_key_is_kex(self, encrypted: ET.Element, ns: str) -> bool:
        """Whether our <key> starts a session (OMEMO 2 kex='true', legacy prekey='true')."""
        attr = "kex" if ns == NS2 else "prekey"
        for key in encrypted.iter(f"{{{ns}}}key"):
            if key.get("rid") == str(self.own_device_id):
                return key.get(attr) in ("true", "1")
        return False

    def send_receipt(self, to: str, acked_id: str) -> None:
        msg = self.xmpp.make_message(mto=to, mtype="chat")
        msg["id"] = self.xmpp.new_id()
        ET.SubElement(msg.xml, f"{{{RECEIPTS}}}received", {"id": acked_id})
        msg.send()

    async def handle_pep_event(self, jid: str, event: ET.Element) -> None:
        assert self.sm is not None
        items = event.find(f"{{{PUBSUB_EVENT}}}items")
        node = None if items is None else items.get("node")
        ns = NS if node == DEVICELIST_NODE else NS2 if node == DEVICES_NODE_2 else None
        if items is None or ns not in self.namespaces:
            return
        item = pick_item(items.findall(f"{{{PUBSUB_EVENT}}}item"))
        if item is None:
            return
        try:
            if ns == NS2:
                devices = parse_device_list_payload_2(item.find(f"{{{NS2}}}devices"))
            else:
                devices = parse_device_list_payload(item.find(f"{{{NS}}}list"))
            async with self.lock:
                await self.sm.update_device_list(ns, jid, devices)
            self.list_fetched[jid] = time.monotonic()
            emit({"event": "devicelist", "jid": jid, "devices": sorted(devices), "namespace": NS_NAME[ns]})
        except Exception as e:
            log.warning("device list event from %s not applied: %s", jid, short_error(e))
            emit({"event": "error", "error": f"device list event from {jid}: {short_error(e)}"})

    # ---------------------------------------------------------------- commands

    async def stdin_reader(self) -> None:
        loop = asyncio.get_event_loop()
        reader = asyncio.StreamReader(limit=1 << 22)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                log.info("stdin closed: stopping")
                await self.commands.put({"cmd": "stop"})
                return
            text = line.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                cmd = json.loads(text)
                if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                    raise ValueError("a command is a JSON object with a string 'cmd'")
            except ValueError as e:
                emit({"event": "error", "error": f"bad command line: {e}", "line": text[:200]})
                continue
            await self.commands.put(cmd)

    async def command_worker(self) -> None:
        await self.ready.wait()
        handlers = {
            "send": self.cmd_send, "send_plain": self.cmd_send_plain, "send_corrupted": self.cmd_send_corrupted,
            "replay_last": self.cmd_replay_last, "subscribe": self.cmd_subscribe, "approve": self.cmd_approve, "deny": self.cmd_deny, "refresh": self.cmd_refresh,
            "devices": self.cmd_devices, "trust": self.cmd_trust, "set": self.cmd_set, "info": self.cmd_info,
            "muc_join": self.cmd_muc_join, "muc_leave": self.cmd_muc_leave, "muc_config": self.cmd_muc_config,
            "muc_affiliation": self.cmd_muc_affiliation, "muc_kick": self.cmd_muc_kick,
            "muc_destroy": self.cmd_muc_destroy, "send_groupchat": self.cmd_send_groupchat,
        }
        while True:
            cmd = await self.commands.get()
            name = cmd["cmd"]
            ref = cmd.get("ref")
            if name == "stop":
                await self.stop()
                return
            handler = handlers.get(name)
            if handler is None:
                emit({"event": "error", "ref": ref, "error": f"unknown command {name!r}"})
                continue
            try:
                await handler(cmd, ref)
            except CommandError as e:
                emit({"event": "send_error" if name.startswith(("send", "replay")) else "error",
                      "ref": ref, "cmd": name, "error": str(e)})
            except Exception as e:
                log.exception("command %s failed", name)
                emit({"event": "send_error" if name.startswith(("send", "replay")) else "error",
                      "ref": ref, "cmd": name, "error": short_error(e)})

    async def maybe_refresh(self, jid: str) -> Optional[str]:
        """Refetches the device list of `jid` when it was never fetched or pushed in this run, or longer
        ago than --stale-seconds (components send no PEP events). Returns the error, if any."""
        assert self.sm is not None
        fetched = self.list_fetched.get(jid)
        if fetched is not None and time.monotonic() - fetched <= self.stale_seconds:
            return None
        try:
            for ns in self.namespaces:
                await self.sm.refresh_device_list(ns, jid)
            return None
        except omemo.XMPPInteractionFailed as e:
            log.warning("device list refresh for %s failed: %s", jid, short_error(e))
            return short_error(e)

    async def encrypt_for(self, to_bare: str, body: str, recipients: Optional[List[str]] = None,
                          sce_to: Optional[str] = None) -> Dict[str, Any]:
        """Encrypts for to_bare's devices, or (group chats) for every JID in `recipients`."""
        assert self.sm is not None
        jids = sorted(set(recipients)) if recipients is not None else [to_bare]
        async with self.lock:
            refresh_errors = [err for err in [*[await self.maybe_refresh(j) for j in jids], await self.maybe_refresh(self.own_bare)] if err]
            try:
                plaintexts = {NS: body.encode("utf-8"), NS2: build_envelope(body, self.own_bare, sce_to or to_bare)}
                messages, errors = await self.sm.encrypt(frozenset(jids), {n: plaintexts[n] for n in self.namespaces},
                                                         backend_priority_order=[n for n in (NS2, NS) if n in self.namespaces],
                                                         identifier=to_bare)
            except omemo.NoEligibleDevices as e:
                raise CommandError(f"no eligible devices for {to_bare} ({', '.join(sorted(e.bare_jids))})"
                                   + (f" (device list: {'; '.join(refresh_errors)})" if refresh_errors else "")
                                   + self.problems_of(to_bare)) from e
            except omemo.StillUndecided as e:
                undecided = [f"{d.bare_jid}/{d.device_id} {fingerprint(d.identity_key)}"
                             for jid in (to_bare, self.own_bare) for d in await self.sm.get_device_information(jid)
                             if d.trust_level_name == TRUST_UNDECIDED and d.device_id != self.own_device_id]
                raise CommandError(f"undecided trust (trust mode {self.trust_mode}): {', '.join(undecided)}") from e
        # One stanza per version (python-omemo gives each device the newest version it lists).
        out = [(m.namespace, (twomemo_etree if m.namespace == NS2 else oldmemo_etree).serialize_message(m))
               for m in sorted(messages, key=lambda m: m.namespace != NS2)]
        rids = {k.device_id for m in messages for k, _ in m.keys}
        skipped = [{"jid": jid, "device_id": dev, "error": self.peer_problems.get(f"{jid}/{dev}", "not encrypted for")}
                   for jid in (*jids, self.own_bare) for dev in await self.active_listed(jid)
                   if dev not in rids and not (jid == self.own_bare and dev == self.own_device_id)]
        return {
            "encrypted": out,
            "rids": sorted(rids),
            "rids_by_namespace": {NS_NAME[m.namespace]: sorted(k.device_id for k, _ in m.keys) for m in messages},
            "prekey_rids": sorted(k.device_id for m in messages for k, kex in m.keys if kex is not None),
            "errors": [{"jid": err.bare_jid, "device_id": err.device_id, "error": short_error(err.exception)}
                       for err in errors],
            "skipped": skipped,
        }

    async def active_listed(self, jid: str) -> List[int]:
        """Device ids in the library's cached device list of `jid` that are still in the published list."""
        listed = (await self.storage.load_list(f"/devices/{jid}/list", int)).maybe([])
        out = []
        for dev in listed:
            active = (await self.storage.load_dict(f"/devices/{jid}/{dev}/active", bool)).maybe({})
            if any(active.get(n, False) for n in self.namespaces):
                out.append(dev)
        return sorted(out)

    def problems_of(self, jid: str) -> str:
        found = [f"{k}: {v}" for k, v in self.peer_problems.items() if k.startswith(jid + "/")]
        return f" [{'; '.join(found)}]" if found else ""

    async def cmd_send(self, cmd: Dict[str, Any], ref: Any) -> None:
        to, body = require_str(cmd, "to"), require_str(cmd, "body")
        to_bare = JID(to).bare
        result = await self.encrypt_for(to_bare, body, sce_to=cmd.get("sce_to"))
        receipt = bool(cmd.get("receipt", False))
        kept = copy.deepcopy(result["encrypted"])
        ids = self.send_all(to, result["encrypted"], cmd.get("id"), receipt)
        self.last_sent[to_bare] = {"encrypted": kept, "receipt": receipt, "to": to}
        emit({"event": "sent", "ref": ref, "id": ids[0], "ids": ids, "to": to, "rids": result["rids"],
              "rids_by_namespace": result["rids_by_namespace"], "namespaces": [NS_NAME[n] for n, _ in result["encrypted"]],
              "prekey_rids": result["prekey_rids"], "errors": result["errors"], "skipped": result["skipped"]})

    def send_all(self, to: str, encrypted: List[Any], stanza_id: Optional[str], receipt: bool) -> List[str]:
        """One stanza per OMEMO version; the first carries the given id, the others id-2, id-3..."""
        ids = []
        for i, (ns, el) in enumerate(encrypted):
            sid = stanza_id if i == 0 or stanza_id is None else f"{stanza_id}-{i + 1}"
            ids.append(self.send_encrypted_stanza(to, el, sid, receipt, ns=ns))
        return ids

    async def cmd_send_plain(self, cmd: Dict[str, Any], ref: Any) -> None:
        to, body = require_str(cmd, "to"), require_str(cmd, "body")
        msg = self.xmpp.make_message(mto=to, mtype=cmd.get("type", "chat"), mbody=body)
        msg["id"] = cmd.get("id") or self.xmpp.new_id()
        if cmd.get("receipt"):
            ET.SubElement(msg.xml, f"{{{RECEIPTS}}}request")
        msg.send()
        emit({"event": "sent", "ref": ref, "id": str(msg["id"]), "to": to})

    async def cmd_send_corrupted(self, cmd: Dict[str, Any], ref: Any) -> None:
        to, body = require_str(cmd, "to"), require_str(cmd, "body")
        what = cmd.get("what", "payload")
        if what not in ("payload", "key"):
            raise CommandError("what must be 'payload' or 'key'")
        if not body:
            raise CommandError("send_corrupted needs a non-empty body (an empty one has no payload)")
        result = await self.encrypt_for(JID(to).bare, body)
        for ns, encrypted in result["encrypted"]:
            if what == "payload":
                payload = encrypted.find(f"{{{ns}}}payload")
                assert payload is not None and payload.text
                data = bytearray(base64.b64decode(payload.text))
                data[len(data) // 2] ^= 0x01
                payload.text = base64.b64encode(bytes(data)).decode("ascii")
            else:
                for key in encrypted.iter(f"{{{ns}}}key"):
                    raw = base64.b64decode(key.text or "")
                    if ns == NS2:
                        corrupted = corrupt_key_2(raw, key.get("kex") in ("true", "1"))
                    else:
                        corrupted = corrupt_key(raw, key.get("prekey") in ("true", "1"))
                    key.text = base64.b64encode(corrupted).decode("ascii")
        ids = self.send_all(to, result["encrypted"], cmd.get("id"), bool(cmd.get("receipt", False)))
        stanza_id = ids[0]
        emit({"event": "sent", "ref": ref, "id": stanza_id, "ids": ids, "to": to, "rids": result["rids"],
              "prekey_rids": result["prekey_rids"], "errors": result["errors"], "corrupted": what})

    async def cmd_replay_last(self, cmd: Dict[str, Any], ref: Any) -> None:
        to = require_str(cmd, "to")
        last = self.last_sent.get(JID(to).bare)
        if last is None:
            raise CommandError(f"nothing was sent to {JID(to).bare} yet")
        ids = self.send_all(to, copy.deepcopy(last["encrypted"]), cmd.get("id"), last["receipt"])
        emit({"event": "sent", "ref": ref, "id": ids[0], "ids": ids, "to": to, "replayed": True})

    async def cmd_subscribe(self, cmd: Dict[str, Any], ref: Any) -> None:
        to = JID(require_str(cmd, "to")).bare
        self.xmpp.send_presence(pto=to, ptype="subscribe")
        emit({"event": "result", "ref": ref, "cmd": "subscribe", "to": to})

    def take_held_request(self, cmd: Dict[str, Any]) -> str:
        """The bare JID of the held subscription request the command names (no longer held)."""
        who = JID(require_str(cmd, "jid")).bare
        if who not in self.held_requests:
            raise CommandError(f"no subscription request from {who} is held")
        self.held_requests.discard(who)
        return who

    async def cmd_approve(self, cmd: Dict[str, Any], ref: Any) -> None:
        who = self.take_held_request(cmd)
        self.approve(who)
        emit({"event": "result", "ref": ref, "cmd": "approve", "jid": who})

    async def cmd_deny(self, cmd: Dict[str, Any], ref: Any) -> None:
        who = self.take_held_request(cmd)
        self.xmpp.send_presence(pto=who, ptype="unsubscribed")
        emit({"event": "result", "ref": ref, "cmd": "deny", "jid": who})

    async def cmd_refresh(self, cmd: Dict[str, Any], ref: Any) -> None:
        assert self.sm is not None
        jid = JID(require_str(cmd, "jid")).bare
        async with self.lock:
            for ns in self.namespaces:
                await self.sm.refresh_device_list(ns, jid)
        await self.cmd_devices({"jid": jid}, ref, "refresh")

    async def cmd_devices(self, cmd: Dict[str, Any], ref: Any, name: str = "devices") -> None:
        assert self.sm is not None and self.backend is not None
        jid = JID(require_str(cmd, "jid")).bare
        out = []
        async with self.lock:
            for dev in sorted(await self.sm.get_device_information(jid), key=lambda d: d.device_id):
                sessions = [await b.load_session(jid, dev.device_id) for b in self.backends]
                active = dict(dev.active)
                out.append({
                    "device_id": dev.device_id,
                    "fingerprint": fingerprint(dev.identity_key),
                    "fingerprint_ed25519": dev.identity_key.hex(),
                    "trust": dev.trust_level_name,
                    "active": any(active.get(n, False) for n in self.namespaces),
                    "namespaces": [NS_NAME[n] for n in self.namespaces if active.get(n, False)],
                    "session": any(x is not None for x in sessions),
                    "own": jid == self.own_bare and dev.device_id == self.own_device_id,
                    "label": dev.label,
                })
            listed = await self.active_listed(jid)
        problems = {k.split("/")[-1]: v for k, v in self.peer_problems.items() if k.startswith(jid + "/")}
        emit({"event": "result", "ref": ref, "cmd": name, "jid": jid, "devices": out, "listed": listed,
              "problems": problems})

    async def cmd_trust(self, cmd: Dict[str, Any], ref: Any) -> None:
        assert self.sm is not None
        jid = JID(require_str(cmd, "jid")).bare
        level = cmd.get("level", TRUST_VERIFIED)
        if level not in TRUST_LEVELS:
            raise CommandError(f"level must be one of {sorted(TRUST_LEVELS)}")
        async with self.lock:
            devices = await self.sm.get_device_information(jid)
            chosen = [d for d in devices if d.device_id == cmd.get("device_id")
                      or (cmd.get("fingerprint") and fingerprint(d.identity_key) == str(cmd["fingerprint"]).lower())]
            if not chosen:
                raise CommandError(f"no such device of {jid}")
            for d in chosen:
                await self.sm.set_trust(jid, d.identity_key, level)
        emit({"event": "result", "ref": ref, "cmd": "trust", "jid": jid,
              "device_ids": [d.device_id for d in chosen], "level": level})

    async def cmd_set(self, cmd: Dict[str, Any], ref: Any) -> None:
        if "auto_receipts" in cmd:
            self.auto_receipts = bool(cmd["auto_receipts"])
        if "trust" in cmd:
            if cmd["trust"] not in ("blind", "manual"):
                raise CommandError("trust must be blind or manual")
            self.trust_mode = cmd["trust"]
        if "stale_seconds" in cmd:
            self.stale_seconds = float(cmd["stale_seconds"])
        emit({"event": "result", "ref": ref, "cmd": "set", "auto_receipts": self.auto_receipts,
              "trust": self.trust_mode, "stale_seconds": self.stale_seconds})

    async def cmd_info(self, _cmd: Dict[str, Any], ref: Any) -> None:
        assert self.sm is not None and self.backend is not None
        async with self.lock:
            own, others = await self.sm.get_own_device_information()
            bundle = await self.backend.get_bundle(self.own_bare, own.device_id)
        emit({"event": "result", "ref": ref, "cmd": "info", "jid": self.own_bare, "device_id": own.device_id,
              "fingerprint": fingerprint(own.identity_key), "own_devices": sorted(d.device_id for d in others),
              "prekeys": len(bundle.pre_key_ids), "signed_prekey_id": bundle.signed_pre_key_id,
              "state_writes": self.storage.writes})

    # ---------------------------------------------------------------- group chats

    async def cmd_muc_join(self, cmd: Dict[str, Any], ref: Any) -> None:
        room, nick = JID(require_str(cmd, "room")).bare, require_str(cmd, "nick")
        fut: "asyncio.Future[Dict[str, Any]]" = asyncio.get_event_loop().create_future()
        self.joins[room] = fut
        self.room_nicks[room] = nick
        self.rooms[room] = {}
        pres = self.xmpp.make_presence(pto=f"{room}/{nick}")
        x = ET.SubElement(pres.xml, f"{{{MUC}}}x")
        if not cmd.get("history", True):
            ET.SubElement(x, f"{{{MUC}}}history", {"maxstanzas": "0"})
        pres.send()
        try:
            joined = await asyncio.wait_for(fut, timeout=15)
        except CommandError:
            self.room_nicks.pop(room, None)
            raise
        emit({"event": "result", "ref": ref, "cmd": "muc_join", "room": room, **joined})

    async def cmd_muc_leave(self, cmd: Dict[str, Any], ref: Any) -> None:
        room = JID(require_str(cmd, "room")).bare
        nick = self.room_nicks.pop(room, None)
        self.rooms.pop(room, None)
        if nick is not None:
            self.xmpp.send_presence(pto=f"{room}/{nick}", ptype="unavailable")
        emit({"event": "result", "ref": ref, "cmd": "muc_leave", "room": room})

    async def muc_iq(self, room: str, ns: str, child: ET.Element) -> None:
        query = ET.Element(f"{{{ns}}}query")
        query.append(child)
        try:
            await self.iq("set", room, query)
        except IqError as e:
            raise CommandError(describe_iq_failure(e)) from e

    async def cmd_muc_config(self, cmd: Dict[str, Any], ref: Any) -> None:
        room = JID(require_str(cmd, "room")).bare
        fields = cmd.get("fields") or {}
        x = ET.Element(f"{{{XDATA}}}x", {"type": "submit"})
        ft = ET.SubElement(x, f"{{{XDATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
        ET.SubElement(ft, f"{{{XDATA}}}value").text = "http://jabber.org/protocol/muc#roomconfig"
        for var, value in fields.items():
            f = ET.SubElement(x, f"{{{XDATA}}}field", {"var": var})
            for v in (value if isinstance(value, list) else [value]):
                ET.SubElement(f, f"{{{XDATA}}}value").text = str(v).lower() if isinstance(v, bool) else str(v)
        query = ET.Element(f"{{{MUC_OWNER}}}query")
        query.append(x)
        try:
            await self.iq("set", room, query)
        except IqError as e:
            raise CommandError(describe_iq_failure(e)) from e
        emit({"event": "result", "ref": ref, "cmd": "muc_config", "room": room})

    async def cmd_muc_affiliation(self, cmd: Dict[str, Any], ref: Any) -> None:
        room, jid, aff = JID(require_str(cmd, "room")).bare, require_str(cmd, "jid"), require_str(cmd, "affiliation")
        await self.muc_iq(room, MUC_ADMIN, ET.Element(f"{{{MUC_ADMIN}}}item", {"jid": jid, "affiliation": aff}))
        emit({"event": "result", "ref": ref, "cmd": "muc_affiliation", "room": room, "jid": jid, "affiliation": aff})

    async def cmd_muc_kick(self, cmd: Dict[str, Any], ref: Any) -> None:
        room, nick = JID(require_str(cmd, "room")).bare, require_str(cmd, "nick")
        await self.muc_iq(room, MUC_ADMIN, ET.Element(f"{{{MUC_ADMIN}}}item", {"nick": nick, "role": "none"}))
        emit({"event": "result", "ref": ref, "cmd": "muc_kick", "room": room, "nick": nick})

    async def cmd_muc_destroy(self, cmd: Dict[str, Any], ref: Any) -> None:
        room = JID(require_str(cmd, "room")).bare
        await self.muc_iq(room, MUC_OWNER, ET.Element(f"{{{MUC_OWNER}}}destroy"))
        self.room_nicks.pop(room, None)
        emit({"event": "result", "ref": ref, "cmd": "muc_destroy", "room": room})

    async def cmd_send_groupchat(self, cmd: Dict[str, Any], ref: Any) -> None:
        room, body = JID(require_str(cmd, "room")).bare, require_str(cmd, "body")
        if room not in self.room_nicks:
            raise CommandError(f"not in {room}")
        occupants = self.rooms.get(room, {})
        hidden = [n for n, j in occupants.items() if j is None]
        if hidden:
            raise CommandError(f"the room hides the real JIDs of {', '.join(sorted(hidden))}")
        skip = set(cmd.get("skip") or [])
        recipients = sorted({j for j in occupants.values() if j and j != self.own_bare and j not in skip})
        if not recipients:
            raise CommandError(f"nobody else is in {room}")
        result = await self.encrypt_for(room, body, recipients)
        # One groupchat stanza per OMEMO version (each device gets the newest it lists); the first
        # carries the given id, the others id-2, id-3...
        ids = []
        for i, (ns, encrypted) in enumerate(result["encrypted"]):
            sid = cmd.get("id") if i == 0 or cmd.get("id") is None else f"{cmd.get('id')}-{i + 1}"
            ids.append(self.send_encrypted_stanza(room, encrypted, sid, False, mtype="groupchat", ns=ns))
        emit({"event": "sent", "ref": ref, "id": ids[0], "ids": ids, "to": room, "recipients": recipients, "rids": result["rids"],
              "rids_by_namespace": result["rids_by_namespace"], "namespaces": [NS_NAME[n] for n, _ in result["encrypted"]],
              "prekey_rids": result["prekey_rids"], "errors": result["errors"], "skipped": result["skipped"]})

    async def stop(self) -> None:
        self.stopping = True
        try:
            self.xmpp.send_presence(ptype="unavailable")
            await asyncio.wait_for(self.xmpp.disconnect(wait=2.0), timeout=5)
        except Exception as e:
            log.info("disconnect: %s", short_error(e))
        self.finish(0)

    # ---------------------------------------------------------------- main

    async def run(self) -> int:
        tasks = [asyncio.ensure_future(t) for t in (self.stdin_reader(), self.command_worker(), self.inbox_worker())]
        self.xmpp.connect(address=self.address, force_starttls=False, disable_starttls=True)
        try:
            waiter = asyncio.ensure_future(self.ready.wait())
            finished, _ = await asyncio.wait({waiter, self.done}, timeout=self.args.connect_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                waiter.cancel()
                emit({"event": "fatal", "error": f"not ready within {self.args.connect_timeout} s "
                                                 f"(server {self.address[0]}:{self.address[1]})"})
                self.finish(1)
            return await self.done
        finally:
            for t in tasks:
                t.cancel()


class CommandError(Exception):
    pass


def require_str(cmd: Dict[str, Any], key: str) -> str:
    value = cmd.get(key)
    if not isinstance(value, str):
        raise CommandError(f"'{key}' (a string) is required")
    return value


def corrupt_key(raw: bytes, prekey: bool) -> bytes:
    """Flips one bit inside the AES-CBC ciphertext of a Signal (Pre)WhisperMessage, leaving the framing
    intact so that the receiver reaches the MAC check. WhisperMessage = 0x33 || protobuf || mac(8); the
    protobuf's last field is the ciphertext, so the byte before the MAC belongs to it."""
    if prekey:
        kex = OMEMOKeyExchange.FromString(raw[1:])
        inner = bytearray(kex.message)
        inner[-9] ^= 0x01
        kex.message = bytes(inner)
        return raw[:1] + kex.SerializeToString()
    data = bytearray(raw)
    data[-9] ^= 0x01
    return bytes(data)


def corrupt_key_2(raw: bytes, kex: bool) -> bytes:
    """Flips one bit in the AES-CBC ciphertext inside an OMEMO 2 OMEMOAuthenticatedMessage (possibly
    inside an OMEMOKeyExchange), keeping the framing, so that the receiver reaches the MAC check."""
    def flip(auth: Any) -> None:
        m = TwoMessage.FromString(auth.message)
        ct = bytearray(m.ciphertext)
        ct[len(ct) // 2] ^= 0x01
        m.ciphertext = bytes(ct)
        auth.message = m.SerializeToString()
    if kex:
        k = TwoKeyExchange.FromString(raw)
        flip(k.message)
        return k.SerializeToString()
    a = TwoAuth.FromString(raw)
    flip(a)
    return a.SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--service", required=True, help="HOST:PORT of the server's c2s listener (plain TCP)")
    parser.add_argument("--resource", default="dev" + secrets.token_hex(3))
    parser.add_argument("--state", required=True, help="directory for this device's state (omemo-state.json)")
    parser.add_argument("--trust", choices=("blind", "manual"), default="blind")
    parser.add_argument("--access-model", choices=("open", "presence"), default="open",
                        help="access model of the published OMEMO nodes")
    parser.add_argument("--approve-subscriptions", choices=("yes", "no"), default="yes",
                        help="no: report subscription requests (subscribe_request) and wait for approve")
    parser.add_argument("--auto-receipts", choices=("yes", "no"), default="yes")
    parser.add_argument("--stale-seconds", type=float, default=30.0,
                        help="refetch a contact's device list before sending when older than this")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--backends", default="oldmemo",
                        help="comma-separated OMEMO versions this device speaks: oldmemo, twomemo, or both")
    parser.add_argument("--label", default=None, help="this device's OMEMO 2 label (published unsigned, as twomemo does)")
    parser.add_argument("--log-level", default=os.environ.get("OMEMO_USER_LOG", "INFO"))
    args = parser.parse_args()

    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format=f"%(asctime)s {args.jid}/{args.resource} %(levelname)s %(name)s: %(message)s")
    if args.log_level.upper() != "DEBUG":
        for noisy in ("slixmpp", "omemo", "oldmemo", "twomemo", "x3dh", "doubleratchet"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    async def amain() -> int:
        return await OmemoUser(args).run()

    try:
        return asyncio.run(amain())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
