#!/usr/bin/python3
"""Drive slixmpp's XEP-0045 plugin against two nodes of an Impetus cluster.

Scenarios (one JSON object on the last line of standard output):
  across_nodes  alice, connected to the node at --host/--port, creates and
                configures --room; bob, connected to the node at --port2,
                enters it; each sees the other, a groupchat message and a
                subject change cross the nodes both ways
"""

import asyncio

from client import STEP_TIMEOUT, Client, next_matching, run_scenario, scenario_parser


def new_client(jid, password, host, port, cert):
    c = Client(jid + "/slix", password, "PLAIN", host, port, cert)
    for p in ("xep_0030", "xep_0045", "xep_0199"):
        c.register_plugin(p)
    c.groupchat = asyncio.Queue()
    c.presences = asyncio.Queue()
    c.subjects = asyncio.Queue()
    c.add_event_handler("groupchat_message", c.groupchat.put_nowait)
    c.add_event_handler("groupchat_presence", c.presences.put_nowait)
    c.add_event_handler("groupchat_subject", c.subjects.put_nowait)
    return c


async def scenario_across_nodes(args, cert):
    room = args.room
    alice = new_client(args.jid, args.password, args.host, args.port, cert)
    bob = new_client(args.peer_jid, args.peer_password, args.host, args.port2, cert)
    clients = (alice, bob)
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(*(c.login() for c in clients))):
            res["error"] = "login failed"
            return res
        for c in clients:
            c.send_presence()
        pres, _, _, _ = await alice["xep_0045"].join_muc_wait(room, "Alice", timeout=STEP_TIMEOUT)
        res["create_codes"] = sorted(int(c) for c in pres["muc"]["status_codes"])
        submit = alice["xep_0004"].make_form(ftype="submit")
        submit.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
        submit.add_field(var="muc#roomconfig_roomname", value="Cluster Room")
        submit.add_field(var="muc#roomconfig_persistentroom", ftype="boolean", value=True)
        await alice["xep_0045"].set_room_config(room, submit, timeout=STEP_TIMEOUT)

        pres, _, occupants, _ = await bob["xep_0045"].join_muc_wait(room, "Bob", timeout=STEP_TIMEOUT)
        res["bob_codes"] = sorted(int(c) for c in pres["muc"]["status_codes"])
        res["bob_sees"] = sorted(p["from"].resource for p in occupants)
        p = await next_matching(alice.presences, lambda p: p["from"].resource == "Bob", "bob's presence at alice")
        res["alice_sees"] = p["from"].resource

        bob.send_message(mto=room, mbody="from the second node", mtype="groupchat")
        m = await next_matching(alice.groupchat, lambda m: m["body"] == "from the second node", "bob's message at alice")
        res["alice_got"] = m["body"]
        alice.send_message(mto=room, mbody="from the first node", mtype="groupchat")
        m = await next_matching(bob.groupchat, lambda m: m["body"] == "from the first node", "alice's message at bob")
        res["bob_got"] = m["body"]
        alice.send_message(mto=room, msubject="across", mtype="groupchat")
        s = await next_matching(bob.subjects, lambda s: s["subject"] == "across", "subject at bob")
        res["bob_subject"] = s["subject"]
        info = await bob["xep_0030"].get_info(jid=room, timeout=STEP_TIMEOUT)
        res["room_name"] = [n for (_c, _t, _l, n) in info["disco_info"]["identities"]][0]
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(*(c.close() for c in clients))


SCENARIOS = {"across_nodes": scenario_across_nodes}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    p.add_argument("--port2", type=int, required=True)
    p.add_argument("--room", required=True)
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
