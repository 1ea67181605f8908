#!/usr/bin/python3
"""Drive slixmpp's XEP-0198 plugin against two nodes of an Impetus cluster.

Scenarios (one JSON object on the last line of standard output):
  resume_elsewhere  alice enables stream management with resumption on the node
                    at --host/--port, loses her connection, bob (on the node at
                    --port2) writes meanwhile, and alice's client resumes on the
                    node at --port2 with the id the first node gave it
"""

import asyncio

from client import STEP_TIMEOUT, Client, event_future, run_scenario, scenario_parser


async def scenario_resume_elsewhere(args, cert):
    alice = Client(args.jid, args.password, "PLAIN", args.host, args.port, cert)
    alice.register_plugin("xep_0198")
    alice.register_plugin("xep_0199")
    alice["xep_0198"].window = 1  # ask for an ack after every stanza
    bob = Client(args.peer_jid, args.peer_password, "PLAIN", args.host, args.port2, cert)
    bob.register_plugin("xep_0199")
    enabled = event_future(alice, "sm_enabled")
    res = {"ok": False}
    try:
        ok_a, ok_b = await asyncio.gather(alice.login(), bob.login())
        if not (ok_a and ok_b):
            res["error"] = "login failed: %s %s" % (alice.result, bob.result)
            return res
        ev = await asyncio.wait_for(enabled, STEP_TIMEOUT)
        res["id"] = ev["id"]
        alice.send_presence()
        await alice["xep_0199"].send_ping(alice.boundjid.domain, timeout=STEP_TIMEOUT)
        bob.send_message(mto=alice.boundjid.full, mbody="before", mtype="chat")
        msg = await asyncio.wait_for(alice.received.get(), STEP_TIMEOUT)
        res["before"] = msg["body"]
        # Lose the connection without closing the stream, as a phone does.
        alice.abort()
        bob.send_message(mto=alice.boundjid.full, mbody="while away", mtype="chat")
        await bob["xep_0199"].send_ping(bob.boundjid.domain, timeout=STEP_TIMEOUT)
        # The client comes back through another node (a load balancer's choice).
        resumed = event_future(alice, "session_resumed")
        failed = event_future(alice, "session_start")
        alice.default_port = args.port2
        alice.connect((args.host, args.port2))
        done, _ = await asyncio.wait([resumed, failed], timeout=STEP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if resumed not in done:
            res["error"] = "not resumed on the other node"
            return res
        res["resumed_h"] = resumed.result()["h"]
        msg = await asyncio.wait_for(alice.received.get(), STEP_TIMEOUT)
        res["after"] = msg["body"]
        res["handled"] = alice["xep_0198"].handled
        # The resumed session sends from its new node: bob hears from alice.
        alice.send_message(mto=bob.boundjid.full, mbody="back", mtype="chat")
        msg = await asyncio.wait_for(bob.received.get(), STEP_TIMEOUT)
        res["bob_got"] = msg["body"]
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(alice.close(), bob.close())


SCENARIOS = {"resume_elsewhere": scenario_resume_elsewhere}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    p.add_argument("--port2", type=int, required=True, help="client port of the other node")
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
