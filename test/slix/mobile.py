#!/usr/bin/python3
"""Drive slixmpp's mobile-oriented plugins against an Impetus server.

Scenarios (one JSON object on the last line of standard output):
  sm         alice enables XEP-0198 with resumption, loses her connection, bob
             writes meanwhile, alice resumes and gets the message
  csi        alice goes inactive (XEP-0352); bob's presence is held back and
             only the latest is flushed, before his message
  directtls  log in over XEP-0368 direct TLS with ALPN xmpp-client

Every client authenticates with PLAIN: slixmpp 1.8 only knows tls-unique channel
binding, which TLS 1.3 lacks, and its fallbacks through the SCRAM-*-PLUS list
would trip the server's authentication throttle for the second client.
"""

import asyncio


from client import STEP_TIMEOUT, Client, event_future, run_scenario, scenario_parser


async def scenario_sm(args, cert):
    alice = Client(args.jid, args.password, "PLAIN", args.host, args.port, cert)
    alice.register_plugin("xep_0198")
    alice.register_plugin("xep_0199")
    alice["xep_0198"].window = 1  # ask for an ack after every stanza
    bob = Client(args.peer_jid, args.peer_password, "PLAIN", args.host, args.port, cert)
    bob.register_plugin("xep_0199")
    enabled = event_future(alice, "sm_enabled")
    res = {"ok": False}
    try:
        ok_a, ok_b = await asyncio.gather(alice.login(), bob.login())
        if not (ok_a and ok_b):
            res["error"] = "login failed: %s %s" % (alice.result, bob.result)
            return res
        ev = await asyncio.wait_for(enabled, STEP_TIMEOUT)
        res["resumable"] = bool(ev["id"]) and ev["resume"] in (True, "true", "1")
        res["max"] = ev["max"]
        # Two stanzas the server handles for alice: her presence and a ping.
        alice.send_presence()
        await alice["xep_0199"].send_ping(alice.boundjid.domain, timeout=STEP_TIMEOUT)
        bob.send_message(mto=alice.boundjid.full, mbody="before", mtype="chat")
        msg = await asyncio.wait_for(alice.received.get(), STEP_TIMEOUT)
        res["before"] = msg["body"]
        # Lose the connection without closing the stream, as a phone does.
        alice.abort()
        bob.send_message(mto=alice.boundjid.full, mbody="while away", mtype="chat")
        await bob["xep_0199"].send_ping(bob.boundjid.domain, timeout=STEP_TIMEOUT)
        resumed = event_future(alice, "session_resumed")
        alice.connect((args.host, args.port))
        ev = await asyncio.wait_for(resumed, STEP_TIMEOUT)
        res["resumed_h"] = ev["h"]
        msg = await asyncio.wait_for(alice.received.get(), STEP_TIMEOUT)
        res["after"] = msg["body"]
        res["handled"] = alice["xep_0198"].handled
        # The resumed session still sends: bob hears from alice.
        alice.send_message(mto=bob.boundjid.full, mbody="back", mtype="chat")
        msg = await asyncio.wait_for(bob.received.get(), STEP_TIMEOUT)
        res["bob_got"] = msg["body"]
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def scenario_csi(args, cert):
    alice = Client(args.jid, args.password, "PLAIN", args.host, args.port, cert)
    alice.register_plugin("xep_0352")
    alice.register_plugin("xep_0199")
    bob = Client(args.peer_jid, args.peer_password, "PLAIN", args.host, args.port, cert)
    bob.register_plugin("xep_0199")
    events = []
    alice.add_event_handler("presence", lambda p: events.append("presence:" + p["status"]) if p["from"].bare == bob.boundjid.bare else None)
    alice.add_event_handler("message", lambda m: events.append("message:" + m["body"]))
    res = {"ok": False}
    try:
        ok_a, ok_b = await asyncio.gather(alice.login(), bob.login())
        if not (ok_a and ok_b):
            res["error"] = "login failed"
            return res
        res["csi_feature"] = "csi" in alice.features
        alice["xep_0352"].send_inactive()
        await alice["xep_0199"].send_ping(alice.boundjid.domain, timeout=STEP_TIMEOUT)
        for status in ("one", "two"):
            bob.send_presence(pto=alice.boundjid.full, pstatus=status)
        bob.send_message(mto=alice.boundjid.full, mbody="wake", mtype="chat")
        await asyncio.wait_for(alice.received.get(), STEP_TIMEOUT)
        bob.send_presence(pto=alice.boundjid.full, pstatus="three")
        await bob["xep_0199"].send_ping(bob.boundjid.domain, timeout=STEP_TIMEOUT)
        # Held back until alice is active again; the ping answer shows it is not delivered yet.
        await alice["xep_0199"].send_ping(alice.boundjid.domain, timeout=STEP_TIMEOUT)
        res["before_active"] = list(events)
        alice["xep_0352"].send_active()
        await alice["xep_0199"].send_ping(alice.boundjid.domain, timeout=STEP_TIMEOUT)
        # A copy: closing in finally delivers bob's unavailable presence to alice's handler.
        res["events"] = list(events)
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def scenario_directtls(args, cert):
    c = Client(args.jid, args.password, "PLAIN", args.host, args.port, cert)
    c.ssl_context.set_alpn_protocols(["xmpp-client"])
    started = c.started
    c.connect((args.host, args.port), use_ssl=True)
    try:
        await asyncio.wait_for(started, STEP_TIMEOUT)
    except asyncio.TimeoutError:
        c.result.setdefault("error", "timeout waiting for session start")
    if c.socket is not None and hasattr(c.socket, "selected_alpn_protocol"):
        c.result["alpn"] = c.socket.selected_alpn_protocol()
        # slixmpp raises no ssl_cert event on a direct TLS connection: pin here.
        c.result["cert_pinned"] = c.socket.getpeercert(binary_form=True) == cert
    await c.close()
    return c.result


SCENARIOS = {"sm": scenario_sm, "csi": scenario_csi, "directtls": scenario_directtls}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
