#!/usr/bin/python3
"""Drive Debian's slixmpp through RFC 6121 scenarios for the Go end-to-end tests.

Each run performs one scenario and prints one JSON object on the last line of
standard output; slixmpp's debug log, with every XML exchange, goes to
standard error. The login and connection handling is client.py's.

Scenarios:
  roster     two resources of --jid: roster get with versioning, set, update
             and remove from one resource, pushes seen by both, an invalid set
  subscribe  --jid and --peer-jid with slixmpp's automatic subscription
             handling reach 'both', exchange presence and a message, then the
             first removes the second from its roster
  offline    --jid sends a chat message to --peer-jid while it is offline;
             the peer then logs in and receives it with its XEP-0203 delay
"""

import asyncio

from slixmpp.exceptions import IqError, IqTimeout

from client import STEP_TIMEOUT, Client, next_matching, ping, run_scenario, scenario_parser


def new_client(args, cert, jid, password):
    c = Client(jid, password, "PLAIN", args.host, args.port, cert)
    c.register_plugin("xep_0199")
    c.register_plugin("xep_0203")
    c.pushes = asyncio.Queue()
    c.presences = asyncio.Queue()

    def on_roster(iq):
        # The event also fires for the result of a roster get; only pushes
        # (iq type set) are recorded.
        if iq["type"] == "set":
            for item_jid, item in iq["roster"]["items"].items():
                c.pushes.put_nowait({
                    "jid": str(item_jid),
                    "name": item["name"],
                    "groups": sorted(item["groups"]),
                    "subscription": item["subscription"],
                    "ask": item["ask"] or "",
                    "ver": iq["roster"]["ver"] or "",
                })

    def on_presence(p):
        c.presences.put_nowait({"from": str(p["from"]), "type": p["type"]})

    c.add_event_handler("roster_update", on_roster)
    c.add_event_handler("presence", on_presence)
    return c


async def roster_query(c, ver=None):
    """Send a roster get and return (ver, {jid: item}) or (None, None) for an empty result."""
    iq = c.Iq()
    iq["type"] = "get"
    iq.enable("roster")
    if ver is not None:
        iq["roster"]["ver"] = ver
    res = await iq.send(timeout=STEP_TIMEOUT)
    if res.xml.find("{jabber:iq:roster}query") is None:
        return None, None
    items = {
        str(j): {"name": it["name"], "groups": sorted(it["groups"]), "subscription": it["subscription"],
                 "ask": it["ask"] or ""}
        for j, it in res["roster"]["items"].items()
    }
    return res["roster"]["ver"], items


async def scenario_roster(args, cert):
    one = new_client(args, cert, args.jid + "/one", args.password)
    two = new_client(args, cert, args.jid + "/two", args.password)
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(one.login(), two.login())):
            res["error"] = "login failed: %s / %s" % (one.result.get("error"), two.result.get("error"))
            return res
        res["rosterver_feature"] = "rosterver" in one.features
        ver0, items0 = await roster_query(one, "")
        res["ver0"], res["items0"] = ver0, items0
        again, _ = await roster_query(one, ver0 or "")
        res["same_ver_empty"] = again is None
        await roster_query(two)  # two becomes interested in pushes

        contact = args.peer_jid
        await one.update_roster(contact, name="Peer Name", groups=["Friends", "Work"], timeout=STEP_TIMEOUT)
        res["set_push"] = [
            await next_matching(c.pushes, lambda p: p["jid"] == contact, "push of the set to " + str(c.boundjid))
            for c in (one, two)
        ]
        await two.update_roster(contact, name="Renamed", groups=["Family"], timeout=STEP_TIMEOUT)
        res["update_push"] = [
            await next_matching(c.pushes, lambda p: p["jid"] == contact, "push of the update to " + str(c.boundjid))
            for c in (one, two)
        ]
        ver1, items1 = await roster_query(two, "")
        res["ver1"], res["items1"] = ver1, items1

        await one.del_roster_item(contact)
        res["remove_push"] = [
            await next_matching(c.pushes, lambda p: p["jid"] == contact, "push of the removal to " + str(c.boundjid))
            for c in (one, two)
        ]
        _, items2 = await roster_query(one)
        res["items2"] = items2

        # Two items in one set are refused with bad-request (RFC 6121 §2.3.3).
        iq = one.Iq()
        iq["type"] = "set"
        iq["roster"]["items"] = {"x@localhost": {"name": "x"}, "y@localhost": {"name": "y"}}
        try:
            await iq.send(timeout=STEP_TIMEOUT)
            res["bad_set"] = "result"
        except IqError as e:
            res["bad_set"] = e.iq["error"]["condition"]
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(one.close(), two.close())


async def scenario_subscribe(args, cert):
    a = new_client(args, cert, args.jid + "/sa", args.password)
    b = new_client(args, cert, args.peer_jid + "/sb", args.peer_password)
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(a.login(), b.login())):
            res["error"] = "login failed"
            return res
        for c in (a, b):
            await c.get_roster(timeout=STEP_TIMEOUT)
            c.send_presence()
            await ping(c)
        # slixmpp authorizes requests and subscribes back by default, so one
        # request leads both sides to 'both'.
        a.send_presence(pto=args.peer_jid, ptype="subscribe")
        await next_matching(a.pushes, lambda p: p["jid"] == args.peer_jid and p["subscription"] == "both",
                            "'both' on the first user's roster")
        await next_matching(b.pushes, lambda p: p["jid"] == args.jid and p["subscription"] == "both",
                            "'both' on the second user's roster")
        # Each side sees the other's available presence.
        res["a_sees_b"] = (await next_matching(a.presences, lambda p: p["from"] == str(b.boundjid)
                                               and p["type"] == "available", "b's presence"))["from"]
        res["b_sees_a"] = (await next_matching(b.presences, lambda p: p["from"] == str(a.boundjid)
                                               and p["type"] == "available", "a's presence"))["from"]
        _, ra = await roster_query(a)
        _, rb = await roster_query(b)
        res["a_item"], res["b_item"] = ra.get(args.peer_jid), rb.get(args.jid)

        a.send_message(mto=args.peer_jid, mbody="hello over a subscription", mtype="chat")
        msg = await asyncio.wait_for(b.received.get(), STEP_TIMEOUT)
        res["message"] = {"from": str(msg["from"]), "body": msg["body"]}

        # Removing the contact cancels both subscriptions (RFC 6121 §2.5.2).
        await a.del_roster_item(args.peer_jid)
        await next_matching(b.presences, lambda p: p["from"] == str(a.boundjid) and p["type"] == "unavailable",
                            "a's unavailable after the removal")
        await next_matching(b.pushes, lambda p: p["jid"] == args.jid and p["subscription"] == "none",
                            "'none' on the second user's roster after the removal")
        await ping(a)
        await ping(b)
        _, ra = await roster_query(a)
        _, rb = await roster_query(b)
        res["a_after_remove"], res["b_after_remove"] = ra.get(args.peer_jid), rb.get(args.jid)
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(a.close(), b.close())


async def scenario_offline(args, cert):
    a = new_client(args, cert, args.jid + "/sender", args.password)
    res = {"ok": False}
    try:
        if not await a.login():
            res["error"] = "login failed"
            return res
        a.send_message(mto=args.peer_jid, mbody="while you were away", mtype="chat")
        await ping(a)
        res["sender_errors"] = [m["error"]["condition"] for m in list(a.received._queue) if m["type"] == "error"]
        b = new_client(args, cert, args.peer_jid + "/back", args.peer_password)
        try:
            if not await b.login():
                res["error"] = "peer login failed"
                return res
            b.send_presence()
            msg = await asyncio.wait_for(b.received.get(), STEP_TIMEOUT)
            res["message"] = {
                "from": str(msg["from"]),
                "body": msg["body"],
                "type": msg["type"],
                "delay_stamp": msg["delay"]["stamp"].isoformat() if msg["delay"]["stamp"] else "",
                "delay_from": str(msg["delay"]["from"] or ""),
                "has_delay": msg.xml.find("{urn:xmpp:delay}delay") is not None,
            }
            res["sender_jid"] = str(a.boundjid)
            res["ok"] = True
            return res
        finally:
            await b.close()
    finally:
        await a.close()


SCENARIOS = {
    "roster": scenario_roster,
    "subscribe": scenario_subscribe,
    "offline": scenario_offline,
}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
