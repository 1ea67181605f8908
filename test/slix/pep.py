#!/usr/bin/python3
"""Drive Debian's slixmpp through PEP, bookmarks and carbons scenarios for the Go end-to-end tests.

Each run performs one scenario and prints one JSON object on the last line of
standard output; slixmpp's debug log goes to standard error. The login and
connection handling is client.py's.

Scenarios:
  pep        --jid and --peer-jid become mutual contacts; the peer announces
             +notify interests through XEP-0115 caps; the first publishes a
             XEP-0084 avatar and OMEMO device lists and bundles (open access,
             as slixmpp-omemo does with XEP-0060 publish-options); the peer
             gets notifications and fetches them, --third-jid (no
             subscription) fetches the OMEMO nodes but not the avatar; a new
             resource of the peer gets the last items on presence; retract and
             node delete notify
  bookmarks  XEP-0048 bookmarks stored in XEP-0049 private storage show up as
             XEP-0402 items on a second resource and back, and XEP-0223 private
             PEP storage stays private to the account (--peer-jid tries)
  carbons    two resources of --jid with XEP-0280 enabled and --peer-jid
             exchange messages; the resource that is not addressed gets the
             received and sent copies, and a <private/> message none
"""

import asyncio
import base64
import hashlib

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

from client import STEP_TIMEOUT, Client, next_matching, ping, run_scenario, scenario_parser

AVATAR_META = "urn:xmpp:avatar:metadata"
AVATAR_DATA = "urn:xmpp:avatar:data"
AXOLOTL = "eu.siacs.conversations.axolotl"
AXOLOTL_DEVICES = AXOLOTL + ".devicelist"
OMEMO2 = "urn:xmpp:omemo:2"
OMEMO2_DEVICES = OMEMO2 + ":devices"
OMEMO2_BUNDLES = OMEMO2 + ":bundles"
BOOKMARKS2 = "urn:xmpp:bookmarks:1"


def new_client(args, cert, jid, password, plugins=()):
    c = Client(jid, password, "PLAIN", args.host, args.port, cert)
    for p in ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0199") + tuple(plugins):
        c.register_plugin(p)
    c.events = asyncio.Queue()
    c.presences = asyncio.Queue()

    def on_event(kind):
        def handler(msg):
            ev = msg["pubsub_event"]
            items = ev["items"]
            out = {"kind": kind, "from": str(msg["from"]), "to": str(msg["to"]), "node": items["node"]}
            if kind == "publish":
                out["id"] = msg["pubsub_event"]["items"]["item"]["id"]
                out["xml"] = ET.tostring(msg["pubsub_event"]["items"]["item"].xml, encoding="unicode")
            elif kind == "retract":
                out["id"] = msg["pubsub_event"]["items"]["retract"]["id"]
            elif kind == "delete":
                out["node"] = ev["delete"]["node"]
            c.events.put_nowait(out)
        return handler

    c.add_event_handler("pubsub_publish", on_event("publish"))
    c.add_event_handler("pubsub_retract", on_event("retract"))
    c.add_event_handler("pubsub_delete", on_event("delete"))
    c.add_event_handler("presence", lambda p: c.presences.put_nowait({"from": str(p["from"]), "type": p["type"]}))
    return c


async def announce(c, interests, priority=0):
    """Announce +notify interests in caps, then send available presence."""
    for ns in interests:
        c["xep_0030"].add_feature(ns + "+notify")
    await c["xep_0115"].update_caps(broadcast=False)
    c.send_presence(ppriority=priority)


def form(ftype, fields):
    f = slixmpp.plugins.xep_0004.stanza.Form()
    f["type"] = "submit"
    f.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#" + ftype)
    for k, v in fields.items():
        f.add_field(var=k, value=v)
    return f


def el(xml):
    return ET.fromstring(xml)


def error_of(e):
    cond = e.iq["error"]["condition"]
    app = [child.tag.split("}")[1] for child in e.iq["error"].xml
           if child.tag.startswith("{http://jabber.org/protocol/pubsub#errors}")]
    return cond + (":" + app[0] if app else "")


async def befriend(a, b):
    """Make a and b mutual contacts with slixmpp's automatic subscription handling."""
    for c in (a, b):
        await c.get_roster(timeout=STEP_TIMEOUT)
    a.send_presence(pto=b.boundjid.bare, ptype="subscribe")
    await next_matching(a.presences, lambda p: p["from"] == str(b.boundjid) and p["type"] == "available",
                        "the peer's presence after subscribing")
    await next_matching(b.presences, lambda p: p["from"] == str(a.boundjid) and p["type"] == "available",
                        "the first user's presence after subscribing")


async def scenario_pep(args, cert):
    a = new_client(args, cert, args.jid + "/pa", args.password, ("xep_0084",))
    b = new_client(args, cert, args.peer_jid + "/pb", args.peer_password, ("xep_0084",))
    c = new_client(args, cert, args.third_jid + "/pc", args.third_password)
    clients = [a, b, c]
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(a.login(), b.login(), c.login())):
            res["error"] = "login failed"
            return res
        await announce(a, [])
        await announce(b, [AVATAR_META, AXOLOTL_DEVICES, OMEMO2_DEVICES])
        await befriend(a, b)
        me = a.boundjid.bare

        info = await a["xep_0030"].get_info(jid=me, timeout=STEP_TIMEOUT)
        res["account_features"] = sorted(info["disco_info"]["features"])
        res["account_identities"] = sorted("%s/%s" % (i[0], i[1]) for i in info["disco_info"]["identities"])

        # XEP-0084: data first, then metadata, which is what contacts are told about.
        data = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
        avatar_id = hashlib.sha1(data).hexdigest()
        await a["xep_0084"].publish_avatar(data, timeout=STEP_TIMEOUT)
        await a["xep_0084"].publish_avatar_metadata(
            items=[{"id": avatar_id, "type": "image/png", "bytes": len(data)}], timeout=STEP_TIMEOUT)
        ev = await next_matching(b.events, lambda e: e["node"] == AVATAR_META and e["kind"] == "publish",
                                 "the avatar metadata notification")
        res["avatar_event"] = {"from": ev["from"], "id": ev["id"]}
        got = await b["xep_0084"].retrieve_avatar(me, avatar_id, timeout=STEP_TIMEOUT)
        res["avatar_data_ok"] = got["pubsub"]["items"]["item"]["avatar_data"]["value"] == data
        try:
            await c["xep_0060"].get_items(me, AVATAR_DATA, timeout=STEP_TIMEOUT)
            res["stranger_avatar"] = "result"
        except IqError as e:
            res["stranger_avatar"] = error_of(e)

        # OMEMO, both generations, the way slixmpp-omemo publishes: open access model,
        # the bundle node with max_items=max.
        device = "31415"
        open_opts = {"pubsub#access_model": "open"}
        await a["xep_0060"].publish(me, AXOLOTL_DEVICES, id="current",
                                    payload=el("<list xmlns='%s'><device id='%s'/></list>" % (AXOLOTL, device)),
                                    options=form("publish-options", open_opts), timeout=STEP_TIMEOUT)
        await a["xep_0060"].publish(me, AXOLOTL + ".bundles:" + device, id="current",
                                    payload=el("<bundle xmlns='%s'><signedPreKeyPublic signedPreKeyId='1'>%s</signedPreKeyPublic>"
                                               "<identityKey>%s</identityKey><prekeys><preKeyPublic preKeyId='1'>%s</preKeyPublic></prekeys></bundle>"
                                               % (AXOLOTL, base64.b64encode(b"spk").decode(), base64.b64encode(b"ik").decode(),
                                                  base64.b64encode(b"pk").decode())),
                                    options=form("publish-options", open_opts), timeout=STEP_TIMEOUT)
        await a["xep_0060"].publish(me, OMEMO2_DEVICES, id="current",
                                    payload=el("<devices xmlns='%s'><device id='%s' label='phone'/></devices>" % (OMEMO2, device)),
                                    options=form("publish-options", open_opts), timeout=STEP_TIMEOUT)
        await a["xep_0060"].publish(me, OMEMO2_BUNDLES, id=device,
                                    payload=el("<bundle xmlns='%s'><spk id='1'>AAAA</spk><spks>BBBB</spks><ik>CCCC</ik>"
                                               "<prekeys><pk id='1'>DDDD</pk></prekeys></bundle>" % OMEMO2),
                                    options=form("publish-options", {"pubsub#access_model": "open", "pubsub#max_items": "max"}),
                                    timeout=STEP_TIMEOUT)
        ev = await next_matching(b.events, lambda e: e["node"] == AXOLOTL_DEVICES, "the legacy OMEMO device list notification")
        res["devicelist_event"] = ev["xml"]
        ev = await next_matching(b.events, lambda e: e["node"] == OMEMO2_DEVICES, "the OMEMO 2 device list notification")
        res["devices2_event"] = ev["xml"]
        got = await c["xep_0060"].get_items(me, AXOLOTL_DEVICES, max_items=1, timeout=STEP_TIMEOUT)
        res["stranger_devicelist"] = ET.tostring(got["pubsub"]["items"].xml, encoding="unicode")
        got = await c["xep_0060"].get_items(me, AXOLOTL + ".bundles:" + device, max_items=1, timeout=STEP_TIMEOUT)
        res["stranger_bundle"] = ET.tostring(got["pubsub"]["items"].xml, encoding="unicode")
        got = await c["xep_0060"].get_item(me, OMEMO2_BUNDLES, device, timeout=STEP_TIMEOUT)
        res["stranger_bundle2"] = ET.tostring(got["pubsub"]["items"].xml, encoding="unicode")

        items = await b["xep_0030"].get_items(jid=me, timeout=STEP_TIMEOUT)
        res["contact_disco_nodes"] = sorted(i[1] for i in items["disco_items"]["items"])

        # A publish whose options contradict the node's configuration (XEP-0060 §7.1.5).
        try:
            await a["xep_0060"].publish(me, AXOLOTL_DEVICES, id="current",
                                        payload=el("<list xmlns='%s'/>" % AXOLOTL),
                                        options=form("publish-options", {"pubsub#access_model": "whitelist"}),
                                        timeout=STEP_TIMEOUT)
            res["precondition"] = "result"
        except IqError as e:
            res["precondition"] = error_of(e)

        # A new resource of the peer gets the last items once its caps are known.
        b2 = new_client(args, cert, args.peer_jid + "/pb2", args.peer_password, ("xep_0084",))
        clients.append(b2)
        if not await b2.login():
            res["error"] = "second peer login failed"
            return res
        await announce(b2, [AVATAR_META, AXOLOTL_DEVICES])
        got = set()
        while len(got) < 2:
            ev = await next_matching(b2.events, lambda e: e["kind"] == "publish", "last items on presence")
            got.add(ev["node"])
        res["last_items"] = sorted(got)

        # Retract with notify, then delete the node.
        await a["xep_0060"].retract(me, AVATAR_META, avatar_id, notify=True, timeout=STEP_TIMEOUT)
        ev = await next_matching(b.events, lambda e: e["node"] == AVATAR_META and e["kind"] == "retract",
                                 "the retraction notification")
        res["retract_event"] = ev["id"]
        await a["xep_0060"].delete_node(me, AXOLOTL_DEVICES, timeout=STEP_TIMEOUT)
        ev = await next_matching(b.events, lambda e: e["kind"] == "delete", "the deletion notification")
        res["delete_event"] = ev["node"]
        try:
            await c["xep_0060"].get_items(me, AXOLOTL_DEVICES, timeout=STEP_TIMEOUT)
            res["after_delete"] = "result"
        except IqError as e:
            res["after_delete"] = error_of(e)
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(*(x.close() for x in clients))


async def scenario_bookmarks(args, cert):
    plugins = ("xep_0048", "xep_0049", "xep_0223")
    a1 = new_client(args, cert, args.jid + "/b1", args.password, plugins)
    a2 = new_client(args, cert, args.jid + "/b2", args.password, plugins)
    p = new_client(args, cert, args.peer_jid + "/bp", args.peer_password)
    clients = [a1, a2, p]
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(a1.login(), a2.login(), p.login())):
            res["error"] = "login failed"
            return res
        await announce(a1, [])
        await announce(a2, [BOOKMARKS2])
        await ping(a2)
        me = a1.boundjid.bare
        info = await a1["xep_0030"].get_info(jid=me, timeout=STEP_TIMEOUT)
        res["account_features"] = sorted(info["disco_info"]["features"])

        bm = a1["xep_0048"].stanza.Bookmarks()
        bm.add_conference("council@conference.localhost", "Puck", name="Council", autojoin=True)
        bm.add_conference("orchard@conference.localhost", "Romeo", name="Orchard")
        bm.add_url("https://example.com/", name="Site")
        await a1["xep_0048"].set_bookmarks(bm, method="xep_0049", timeout=STEP_TIMEOUT)
        ev = await next_matching(a2.events, lambda e: e["node"] == BOOKMARKS2 and e["kind"] == "publish",
                                 "a bookmarks2 notification after the legacy store")
        res["legacy_event"] = ev["xml"]
        got = await a1["xep_0060"].get_items(me, BOOKMARKS2, timeout=STEP_TIMEOUT)
        res["items"] = sorted(it["id"] for it in got["pubsub"]["items"])

        # XEP-0402 publish (with its publish-options) and retract show up in the legacy store.
        await a2["xep_0060"].publish(me, BOOKMARKS2, id="play@conference.localhost",
                                     payload=el("<conference xmlns='%s' name='The Play' autojoin='true'><nick>JC</nick></conference>" % BOOKMARKS2),
                                     options=form("publish-options", {
                                         "pubsub#persist_items": "true", "pubsub#max_items": "max",
                                         "pubsub#send_last_published_item": "never", "pubsub#access_model": "whitelist"}),
                                     timeout=STEP_TIMEOUT)
        await a2["xep_0060"].retract(me, BOOKMARKS2, "orchard@conference.localhost", notify=True, timeout=STEP_TIMEOUT)
        got = await a1["xep_0048"].get_bookmarks(method="xep_0049", timeout=STEP_TIMEOUT)
        legacy = got["private"]["bookmarks"]
        res["legacy_conferences"] = sorted(
            "%s|%s|%s|%s" % (cf["jid"], cf["name"], cf["nick"], bool(cf["autojoin"])) for cf in legacy["conferences"])
        res["legacy_urls"] = [u["url"] for u in legacy["urls"]]

        # XEP-0223: the storage profile (whitelist, persistent), readable by the owner only.
        store = a1["xep_0048"].stanza.Bookmarks()
        store.add_conference("private@conference.localhost", "Me", name="Private")
        await a1["xep_0223"].store(store, node="storage:bookmarks", id="current", timeout=STEP_TIMEOUT)
        got = await a1["xep_0223"].retrieve("storage:bookmarks", timeout=STEP_TIMEOUT)
        res["private_pep"] = [str(cf["jid"]) for cf in got["pubsub"]["items"]["item"]["bookmarks"]["conferences"]]
        cfg = await a1["xep_0060"].get_node_config(me, "storage:bookmarks", timeout=STEP_TIMEOUT)
        fields = cfg["pubsub_owner"]["configure"]["form"].get_fields()
        res["private_pep_access"] = fields["pubsub#access_model"]["value"]
        res["private_pep_persist"] = bool(fields["pubsub#persist_items"]["value"])
        try:
            await p["xep_0060"].get_items(me, "storage:bookmarks", timeout=STEP_TIMEOUT)
            res["peer_private"] = "result"
        except IqError as e:
            res["peer_private"] = error_of(e)
        try:
            iq = p.make_iq_get(queryxmlns="jabber:iq:private", ito=me)
            iq["private"].append(a1["xep_0048"].stanza.Bookmarks())
            await iq.send(timeout=STEP_TIMEOUT)
            res["peer_legacy"] = "result"
        except IqError as e:
            res["peer_legacy"] = error_of(e)
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(*(x.close() for x in clients))


async def scenario_carbons(args, cert):
    a1 = new_client(args, cert, args.jid + "/c1", args.password, ("xep_0280",))
    a2 = new_client(args, cert, args.jid + "/c2", args.password, ("xep_0280",))
    b = new_client(args, cert, args.peer_jid + "/cb", args.peer_password)
    clients = [a1, a2, b]
    res = {"ok": False}
    copies = asyncio.Queue()
    a1.carbons_got = asyncio.Queue()

    def record(kind, who):
        def handler(msg):
            inner = msg["carbon_" + kind]
            (copies if who == "c2" else a1.carbons_got).put_nowait(
                {"kind": kind, "from": str(inner["from"]), "to": str(inner["to"]), "body": inner["body"],
                 "wrapper_from": str(msg["from"])})
        return handler

    a2.add_event_handler("carbon_received", record("received", "c2"))
    a2.add_event_handler("carbon_sent", record("sent", "c2"))
    a1.add_event_handler("carbon_received", record("received", "c1"))
    try:
        if not all(await asyncio.gather(a1.login(), a2.login(), b.login())):
            res["error"] = "login failed"
            return res
        a1.send_presence(ppriority=5)
        a2.send_presence(ppriority=0)
        b.send_presence()
        for c in (a1, a2):
            await c["xep_0280"].enable(timeout=STEP_TIMEOUT)
        info = await a1["xep_0030"].get_info(jid=a1.boundjid.domain, timeout=STEP_TIMEOUT)
        res["carbons_feature"] = "urn:xmpp:carbons:2" in info["disco_info"]["features"]
        me = a1.boundjid.bare

        b.send_message(mto=me, mbody="to the bare JID", mtype="chat")
        msg = await asyncio.wait_for(a1.received.get(), STEP_TIMEOUT)
        res["original"] = {"to": str(msg["to"]), "body": msg["body"]}
        res["received"] = await asyncio.wait_for(copies.get(), STEP_TIMEOUT)

        a1.send_message(mto=b.boundjid.bare, mbody="reply", mtype="chat")
        res["sent"] = await asyncio.wait_for(copies.get(), STEP_TIMEOUT)

        b.send_message(mto=str(a2.boundjid), mbody="to c2 only", mtype="chat")
        res["received_by_c1"] = await asyncio.wait_for(a1.carbons_got.get(), STEP_TIMEOUT)

        # A private message is not copied: the next copy c2 sees is the marker's.
        m = a1.make_message(mto=b.boundjid.bare, mbody="private", mtype="chat")
        m.enable("carbon_private")
        m.send()
        a1.send_message(mto=b.boundjid.bare, mbody="marker", mtype="chat")
        res["after_private"] = (await asyncio.wait_for(copies.get(), STEP_TIMEOUT))["body"]
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(*(x.close() for x in clients))


SCENARIOS = {
    "pep": scenario_pep,
    "bookmarks": scenario_bookmarks,
    "carbons": scenario_carbons,
}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
