#!/usr/bin/python3
"""Drive Debian's slixmpp through the server's own services for the Go end-to-end tests.

Each run performs one scenario and prints one JSON object on the last line of
standard output; slixmpp's debug log goes to standard error. The login and
connection handling is client.py's.

Scenarios:
  services   --jid and --peer-jid: XEP-0202 entity time and XEP-0012 uptime
             of the server, XEP-0054 vCard set and get (own and the other's),
             XEP-0153 photo hash stamped into presence, XEP-0191 blocking
             (blocklist, refused and bounced messages, unblock) and XEP-0012
             last activity of a contact that logged out
  component  an XEP-0114 ComponentXMPP serving --component with
             --component-secret; --jid finds it in the server's disco items,
             messages a JID under it and gets the component's answer
  register   XEP-0077: create --jid in band, log in, change the password, log
             in with the new one, cancel the registration; logging in again
             then fails
"""

import asyncio
import base64
import hashlib
import logging

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from client import STEP_TIMEOUT, Client, iq_error, next_matching, run_scenario, scenario_parser

PHOTO = b"\x89PNG\r\n\x1a\n impetus test avatar"


def new_client(args, cert, jid, password, plugins=()):
    c = Client(jid, password, "PLAIN", args.host, args.port, cert)
    for p in ("xep_0030", "xep_0199") + tuple(plugins):
        c.register_plugin(p)
    c.presences = asyncio.Queue()
    c.errors = asyncio.Queue()
    c.add_event_handler("presence", lambda p: c.presences.put_nowait(p))
    c.add_event_handler("message_error", lambda m: c.errors.put_nowait(m))
    return c


async def scenario_services(args, cert):
    res = {"ok": False}
    plugins = ("xep_0012", "xep_0054", "xep_0153", "xep_0191", "xep_0202")
    ava = new_client(args, cert, args.jid, args.password, plugins)
    bea = new_client(args, cert, args.peer_jid, args.peer_password, plugins)
    # The XEP-0153 plugin would rewrite presence itself; the server's stamping is under test.
    ava.plugin.disable("xep_0153")
    bea.plugin.disable("xep_0153")
    try:
        if not await ava.login() or not await bea.login():
            res["error"] = "login: %s / %s" % (ava.result.get("error"), bea.result.get("error"))
            return res
        server = ava.boundjid.domain
        iq = await ava["xep_0202"].get_entity_time(server, timeout=STEP_TIMEOUT)
        # slixmpp 1.8 appends its own "Z" when it parses <utc/>, so the text is read as sent.
        res["time_utc"] = iq.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
        iq = await ava["xep_0012"].get_last_activity(server, timeout=STEP_TIMEOUT)
        res["uptime"] = iq["last_activity"]["seconds"]

        # vCard: set our own with a photo, read it back and as the other user.
        vc = ava["xep_0054"].make_vcard()
        vc["FN"] = "Ava Example"
        vc["PHOTO"]["TYPE"] = "image/png"
        vc["PHOTO"]["BINVAL"] = PHOTO
        await ava["xep_0054"].publish_vcard(vc, timeout=STEP_TIMEOUT)
        iq = await bea["xep_0054"].get_vcard(ava.boundjid.bare, timeout=STEP_TIMEOUT)
        res["vcard_fn"] = iq["vcard_temp"]["FN"]
        res["vcard_photo_ok"] = iq["vcard_temp"]["PHOTO"]["BINVAL"] == PHOTO

        # bea subscribes to ava (slixmpp approves automatically) and both go online.
        ava.send_presence()
        bea.send_presence()
        bea.send_presence(pto=ava.boundjid.bare, ptype="subscribe")
        await next_matching(bea.presences, lambda p: p["type"] == "subscribed", "subscribed")
        p = await next_matching(bea.presences, lambda p: p["from"] == ava.boundjid and p["type"] == "available", "ava's presence")
        x = p.xml.find("{vcard-temp:x:update}x")
        photo = x.find("{vcard-temp:x:update}photo") if x is not None else None
        res["presence_photo"] = photo.text if photo is not None else None
        res["photo_sha1"] = hashlib.sha1(PHOTO).hexdigest()

        # Blocking: bea's messages bounce, ava's are refused, the list says so.
        await ava["xep_0191"].get_blocked(timeout=STEP_TIMEOUT)
        while not bea.presences.empty():
            bea.presences.get_nowait()
        await ava["xep_0191"].block(bea.boundjid.bare, timeout=STEP_TIMEOUT)
        p = await next_matching(bea.presences, lambda p: p["from"] == ava.boundjid and p["type"] == "unavailable", "unavailable on block")
        res["presence_on_block"] = p["type"]
        iq = await ava["xep_0191"].get_blocked(timeout=STEP_TIMEOUT)
        res["blocklist"] = sorted(str(j) for j in iq["blocklist"]["items"])
        bea.send_message(mto=ava.boundjid.bare, mbody="hello?", mtype="chat")
        m = await next_matching(bea.errors, lambda m: True, "bounce")
        res["bounce"] = m["error"]["condition"]
        ava.send_message(mto=bea.boundjid.bare, mbody="hi", mtype="chat")
        m = await next_matching(ava.errors, lambda m: True, "refusal")
        res["refusal"] = m["error"]["condition"]
        res["refusal_blocked"] = m.xml.find("{jabber:client}error/{urn:xmpp:blocking:errors}blocked") is not None
        await ava["xep_0191"].unblock(bea.boundjid.bare, timeout=STEP_TIMEOUT)
        p = await next_matching(bea.presences, lambda p: p["from"] == ava.boundjid and p["type"] == "available", "presence on unblock")
        res["presence_on_unblock"] = p["type"]

        # Last activity of a contact that logged out.
        ava.send_presence(ptype="unavailable", pstatus="Heading home")
        await ava.close()
        await next_matching(bea.presences, lambda p: p["from"] == ava.boundjid and p["type"] == "unavailable", "ava offline")
        await asyncio.sleep(0)
        for _ in range(50):
            try:
                iq = await bea["xep_0012"].get_last_activity(ava.boundjid.bare, timeout=STEP_TIMEOUT)
                res["last_seconds"] = iq["last_activity"]["seconds"]
                res["last_status"] = iq["last_activity"]["status"]
                break
            except IqError as e:
                # The logout is recorded once the server has closed the stream.
                res["last_error"] = e.iq["error"]["condition"]
                await asyncio.sleep(0.1)
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(ava.close(), bea.close())


class Component(slixmpp.ComponentXMPP):
    def __init__(self, jid, secret, host, port):
        super().__init__(jid, secret, host, port)
        self.ready = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", lambda _e: self.ready.done() or self.ready.set_result(True))
        self.add_event_handler("stream_error", lambda s: self.ready.done() or self.ready.set_result("stream-error:" + s["condition"]))
        self.add_event_handler("message", self.on_message)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply("echo: " + msg["body"]).send()


async def scenario_component(args, cert):
    res = {"ok": False}
    comp = Component(args.component, args.component_secret, args.host, args.port)
    comp.use_ipv6 = False
    comp.connect()
    try:
        state = await asyncio.wait_for(comp.ready, STEP_TIMEOUT)
    except asyncio.TimeoutError:
        state = "timeout"
    if state is not True:
        res["error"] = "component handshake: %s" % state
        comp.abort()
        return res
    c = new_client(args, cert, args.jid, args.password)
    try:
        if not await c.login():
            res["error"] = "login: %s" % c.result.get("error")
            return res
        iq = await c["xep_0030"].get_items(jid=c.boundjid.domain, timeout=STEP_TIMEOUT)
        res["items"] = sorted(str(i[0]) for i in iq["disco_items"]["items"])
        c.send_message(mto="bot@" + args.component, mbody="ping", mtype="chat")
        m = await next_matching(c.received, lambda m: m["type"] == "chat", "echo")
        res["echo"] = m["body"]
        res["echo_from"] = str(m["from"])
        res["ok"] = True
        return res
    finally:
        await c.close()
        comp.disconnect()


async def scenario_register(args, cert):
    res = {"ok": False}
    c = new_client(args, cert, args.jid, args.password, ("xep_0077", "xep_0004", "xep_0066"))
    c["xep_0077"].force_registration = True
    # slixmpp 1.8 queues every iq until the session starts, registration's included; this
    # switch lets the pre-authentication request out, as its own examples need too.
    c._always_send_everything = True

    async def on_register(form):
        resp = c.Iq()
        resp["type"] = "set"
        resp["register"]["username"] = c.boundjid.user
        resp["register"]["password"] = c.password
        try:
            await resp.send(timeout=STEP_TIMEOUT)
            res["registered"] = True
        except IqError as e:
            res["registered"] = iq_error(e)

    c.add_event_handler("register", on_register)
    if not await c.login():
        res["error"] = "login after registration: %s (%s)" % (c.result.get("error"), res.get("registered"))
        await c.close()
        return res
    iq = await c["xep_0077"].get_registration(timeout=STEP_TIMEOUT)
    res["is_registered"] = iq["register"]["registered"]
    await c["xep_0077"].change_password(args.peer_password, timeout=STEP_TIMEOUT)
    await c.close()

    c2 = new_client(args, cert, args.jid, args.peer_password, ("xep_0077",))
    res["login_new_password"] = await c2.login()
    if res["login_new_password"]:
        try:
            await c2["xep_0077"].cancel_registration(timeout=STEP_TIMEOUT)
            res["cancelled"] = True
        except IqError as e:
            res["cancelled"] = iq_error(e)
        except IqTimeout:
            res["cancelled"] = "timeout"
    await c2.close()
    c3 = new_client(args, cert, args.jid, args.peer_password)
    res["login_after_cancel"] = await c3.login()
    await c3.close()
    res["ok"] = True
    return res


SCENARIOS = {
    "services": scenario_services,
    "component": scenario_component,
    "register": scenario_register,
}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    p.add_argument("--component", default="")
    p.add_argument("--component-secret", default="")
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
