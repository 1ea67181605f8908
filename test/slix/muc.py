#!/usr/bin/python3
"""Drive Debian's slixmpp's XEP-0045 plugin through multi-user chat scenarios.

Each run performs one scenario and prints one JSON object on the last line of
standard output; slixmpp's debug log goes to standard error. The login and
connection handling is client.py's. Every account's password is "pw-" and its
localpart.

Scenarios:
  muc     --jid (owner), --peer-jid and --third-jid in --room: creation with
          the owner's configuration form (persistent, named), joins, a
          groupchat message, a subject, a private message, kick, ban, a
          mediated and a XEP-0249 direct invitation, a XEP-0313 query of the
          room archive, a XEP-0425 moderation, XEP-0421 occupant ids, a
          self-ping and room disco
  rejoin  --jid enters --room again after a restart: the room's name, its
          outcast list and its history must have survived
"""

import asyncio

import slixmpp
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from client import STEP_TIMEOUT, Client, next_matching, run_scenario, scenario_parser


def new_client(args, cert, jid):
    c = Client(jid + "/slix", "pw-" + jid.split("@")[0], "PLAIN", args.host, args.port, cert)
    for p in ("xep_0030", "xep_0045", "xep_0199", "xep_0249", "xep_0313", "xep_0359", "xep_0421", "xep_0425"):
        c.register_plugin(p)
    c.groupchat = asyncio.Queue()
    c.private = asyncio.Queue()
    c.presences = asyncio.Queue()
    c.invites = asyncio.Queue()
    c.moderated = asyncio.Queue()
    c.subjects = asyncio.Queue()
    c.add_event_handler("groupchat_subject", c.subjects.put_nowait)
    c.add_event_handler("groupchat_message", c.groupchat.put_nowait)
    c.add_event_handler("groupchat_presence", c.presences.put_nowait)
    c.add_event_handler("groupchat_direct_invite", lambda m: c.invites.put_nowait(("direct", m)))
    c.add_event_handler("moderated_message", c.moderated.put_nowait)

    # slixmpp raises groupchat_invite only for rooms it does not think it is in, which after
    # a kick it still does; the invitation is picked up by its own handler instead.
    c.register_handler(Callback(
        "mediated invitation",
        MatchXPath("{jabber:client}message/{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}invite"),
        lambda m: c.invites.put_nowait(("mediated", m))))

    def on_message(m):
        if m["type"] in ("chat", "normal") and m["body"]:
            c.private.put_nowait(m)
    c.add_event_handler("message", on_message)
    return c


def codes(pres):
    return sorted(int(c) for c in pres["muc"]["status_codes"])


async def join(c, room, nick, **kw):
    pres, subject, occupants, history = await c["xep_0045"].join_muc_wait(room, nick, timeout=STEP_TIMEOUT, **kw)
    return pres, subject, occupants, history


async def scenario_muc(args, cert):
    room = args.room
    alice = new_client(args, cert, args.jid)
    bob = new_client(args, cert, args.peer_jid)
    carol = new_client(args, cert, args.third_jid)
    clients = (alice, bob, carol)
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(*(c.login() for c in clients))):
            res["error"] = "login failed"
            return res
        for c in clients:
            c.send_presence()

        # Creation: the owner gets 201 and configures the locked room with the form.
        pres, _, _, _ = await join(alice, room, "Alice")
        res["create_codes"] = codes(pres)
        res["owner_affiliation"] = pres["muc"]["affiliation"]
        form = await alice["xep_0045"].get_room_config(room, timeout=STEP_TIMEOUT)
        res["form_fields"] = sorted(form.get_fields().keys())
        submit = alice["xep_0004"].make_form(ftype="submit")
        submit.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
        submit.add_field(var="muc#roomconfig_roomname", value="Slix Room")
        submit.add_field(var="muc#roomconfig_persistentroom", ftype="boolean", value=True)
        await alice["xep_0045"].set_room_config(room, submit, timeout=STEP_TIMEOUT)

        pres, subject, occupants, _ = await join(bob, room, "Bob")
        res["bob_codes"] = codes(pres)
        res["bob_sees"] = sorted(p["from"].resource for p in occupants)
        await join(carol, room, "Carol", maxstanzas=10)

        # A groupchat message reaches everyone with the room's stanza-id.
        alice.send_message(mto=room, mbody="hello room", mtype="groupchat")
        got = [await next_matching(c.groupchat, lambda m: m["body"] == "hello room", "groupchat at " + str(c.boundjid))
               for c in (bob, carol)]
        res["groupchat_from"] = str(got[0]["from"])
        sids = {m["stanza_id"]["id"] for m in got}
        res["stanza_ids"] = len(sids) == 1 and "" not in sids
        sid = sids.pop()
        res["stanza_id_by"] = str(got[0]["stanza_id"]["by"])
        res["occupant_ids"] = sorted({m["occupant-id"]["id"] for m in got})

        # Subject by the owner.
        alice["xep_0045"].set_subject(room, "Slix topic")
        m = await next_matching(bob.subjects, lambda m: m["subject"] == "Slix topic", "subject")
        res["subject_from"] = str(m["from"])

        # Private message through the room.
        bob.send_message(mto=room + "/Carol", mbody="psst", mtype="chat")
        m = await next_matching(carol.private, lambda m: m["body"] == "psst", "private message")
        res["pm_from"] = str(m["from"])

        # Self-ping (XEP-0410) and room disco.
        try:
            await bob["xep_0199"].send_ping(room + "/Bob", timeout=STEP_TIMEOUT)
            res["self_ping"] = "ok"
        except IqError as e:
            res["self_ping"] = "error:" + e.iq["error"]["condition"]
        info = await bob["xep_0030"].get_info(jid=room, timeout=STEP_TIMEOUT)
        res["room_features"] = sorted(info["disco_info"]["features"])
        res["room_name"] = [n for (_c, _t, _l, n) in info["disco_info"]["identities"]][0]
        items = await bob["xep_0030"].get_items(jid=room.split("@")[1], timeout=STEP_TIMEOUT)
        res["service_items"] = [str(i[0]) for i in items["disco_items"]["items"]]

        # Kick Carol.
        await alice["xep_0045"].set_role(room, "Carol", "none", reason="out", timeout=STEP_TIMEOUT)
        p = await next_matching(carol.presences, lambda p: p["type"] == "unavailable" and p["from"].resource == "Carol", "kick presence")
        res["kick_codes"] = codes(p)

        # Ban Bob; he cannot come back.
        await alice["xep_0045"].set_affiliation(room, "outcast", jid=bob.boundjid.bare, reason="spam", timeout=STEP_TIMEOUT)
        p = await next_matching(bob.presences, lambda p: p["type"] == "unavailable" and p["from"].resource == "Bob", "ban presence")
        res["ban_codes"] = codes(p)
        res["outcasts"] = [str(j) for j in await alice["xep_0045"].get_affiliation_list(room, "outcast", timeout=STEP_TIMEOUT)]
        try:
            await join(bob, room, "Bob")
            res["banned_rejoin"] = "joined"
        except PresenceError as e:
            res["banned_rejoin"] = e.presence["error"]["condition"]

        # Invitations to Carol: mediated through the room, and direct (XEP-0249).
        alice["xep_0045"].invite(room, carol.boundjid.bare, reason="come back")
        kind, m = await next_matching(carol.invites, lambda i: i[0] == "mediated", "mediated invitation")
        res["mediated_invite_from"] = m.xml.find("{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}invite").get("from")
        alice["xep_0249"].send_invitation(carol.boundjid.bare, room, reason="direct")
        kind, m = await next_matching(carol.invites, lambda i: i[0] == "direct", "direct invitation")
        res["direct_invite_room"] = str(m["groupchat_invite"]["jid"])
        pres, _, _, history = await join(carol, room, "Carol", maxstanzas=10)
        res["carol_history"] = [h["body"] for h in history]

        # The room archive (XEP-0313).
        results = alice["xep_0313"].retrieve(jid=room, iterator=True, rsm={"max": 10})
        bodies = []
        async for page in results:
            for r in page["mam"]["results"]:
                bodies.append(r["mam_result"]["forwarded"]["stanza"]["body"])
        res["archive_bodies"] = [b for b in bodies if b]

        # Moderation (XEP-0425): Alice retracts her message; Carol is told.
        await alice["xep_0425"].moderate(slixmpp.JID(room), sid, reason="oops", timeout=STEP_TIMEOUT)
        m = await next_matching(carol.moderated, lambda m: True, "moderation notice")
        res["moderated_id"] = m["apply_to"]["id"]

        # The owner leaves; the room is persistent and stays.
        alice["xep_0045"].leave_muc(room, "Alice")
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def scenario_rejoin(args, cert):
    room = args.room
    alice = new_client(args, cert, args.jid)
    res = {"ok": False}
    try:
        if not await alice.login():
            res["error"] = "login failed"
            return res
        alice.send_presence()
        pres, subject, _, history = await join(alice, room, "Alice", maxstanzas=10)
        res["rejoin_codes"] = codes(pres)
        res["rejoin_subject"] = subject["subject"]
        res["rejoin_history"] = [h["body"] for h in history]
        info = await alice["xep_0030"].get_info(jid=room, timeout=STEP_TIMEOUT)
        res["room_name"] = [n for (_c, _t, _l, n) in info["disco_info"]["identities"]][0]
        res["room_features"] = sorted(info["disco_info"]["features"])
        res["outcasts"] = [str(j) for j in await alice["xep_0045"].get_affiliation_list(room, "outcast", timeout=STEP_TIMEOUT)]
        res["ok"] = True
        return res
    finally:
        await alice.close()


SCENARIOS = {
    "muc": scenario_muc,
    "rejoin": scenario_rejoin,
}


def main():
    # Passwords derive from the JIDs (see new_client), so there is no --password.
    p = scenario_parser(__doc__, SCENARIOS, password=False)
    p.add_argument("--room", required=True)
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
