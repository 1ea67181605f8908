#!/usr/bin/python3
"""Drive Debian's slixmpp through XEP-0045 room registration, reserved nicknames and
presence broadcast by role.

The run prints one JSON object on the last line of standard output; slixmpp's debug log goes
to standard error. Clients and helpers are muc.py's; every account's password is "pw-" and
its localpart.

Scenario:
  register  --jid (owner), --peer-jid and --third-jid in --room: the owner creates a
            moderated room broadcasting the presence of moderators and participants only;
            the peer registers with the room through XEP-0077 (jabber:iq:register with the
            muc#register form), finds the nickname with the x-roomuser-item disco node and
            in the member list; the third user cannot enter under it, enters as a visitor
            whose presence the peer does not get, and the peer cancels the registration
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, PresenceError

from client import STEP_TIMEOUT
from muc import join, new_client

NS_ADMIN = "http://jabber.org/protocol/muc#admin"


async def reserved_nick(c, room):
    info = await c["xep_0030"].get_info(jid=room, node="x-roomuser-item", timeout=STEP_TIMEOUT)
    names = [n for (_c, _t, _l, n) in info["disco_info"]["identities"]]
    return names[0] if names else ""


async def scenario_register(args, cert):
    room = args.room
    alice = new_client(args, cert, args.jid)
    bob = new_client(args, cert, args.peer_jid)
    carol = new_client(args, cert, args.third_jid)
    clients = (alice, bob, carol)
    for c in clients:
        c.register_plugin("xep_0077")
        # The plugin would otherwise try to register the account with its own server.
        c["xep_0077"].force_registration = False
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(*(c.login() for c in clients))):
            res["error"] = "login failed"
            return res
        for c in clients:
            c.send_presence()

        await join(alice, room, "Alice")
        form = await alice["xep_0045"].get_room_config(room, timeout=STEP_TIMEOUT)
        res["config_fields"] = sorted(form.get_fields().keys())
        submit = alice["xep_0004"].make_form(ftype="submit")
        submit.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
        submit.add_field(var="muc#roomconfig_moderatedroom", ftype="boolean", value=True)
        submit.add_field(var="muc#roomconfig_presencebroadcast", ftype="list-multi", value=["moderator", "participant"])
        await alice["xep_0045"].set_room_config(room, submit, timeout=STEP_TIMEOUT)

        # Registration: the form, then the submission with the nickname.
        res["nick_before"] = await reserved_nick(bob, room)
        iq = await bob["xep_0077"].get_registration(jid=room, timeout=STEP_TIMEOUT)
        reg_form = iq["register"]["form"]
        form_type = reg_form.get_fields()["FORM_TYPE"]["value"]
        res["register_form_type"] = form_type[0] if isinstance(form_type, list) else form_type
        res["register_fields"] = sorted(reg_form.get_fields().keys())
        answer = bob["xep_0004"].make_form(ftype="submit")
        answer.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#register")
        answer.add_field(var="muc#register_roomnick", value="Bobby")
        answer["type"] = "submit"
        sub = bob.make_iq_set(ito=room)
        ET.SubElement(sub.xml, "{jabber:iq:register}query").append(answer.xml)
        await sub.send(timeout=STEP_TIMEOUT)
        res["nick_after"] = await reserved_nick(bob, room)
        iq = await bob["xep_0077"].get_registration(jid=room, timeout=STEP_TIMEOUT)
        res["registered"] = iq["register"]["registered"]
        res["registered_username"] = iq["register"]["username"]

        # The member list names the reserved nickname.
        q = alice.make_iq_get(queryxmlns=NS_ADMIN, ito=room)
        ET.SubElement(q.xml.find("{%s}query" % NS_ADMIN), "{%s}item" % NS_ADMIN, {"affiliation": "member"})
        r = await q.send(timeout=STEP_TIMEOUT)
        res["members"] = [(i.get("jid"), i.get("nick")) for i in r.xml.iter("{%s}item" % NS_ADMIN)]

        # Someone else cannot enter under the reserved nickname.
        try:
            await join(carol, room, "Bobby")
            res["carol_as_bobby"] = "joined"
        except PresenceError as e:
            res["carol_as_bobby"] = e.presence["error"]["condition"]
        # Carol, unaffiliated in a moderated room, is a visitor, whose presence is not
        # broadcast: Bob, entering after her, is not told of her.
        pres, _, _, _ = await join(carol, room, "Carol")
        res["carol_role"] = pres["muc"]["role"]
        pres, _, occupants, _ = await join(bob, room, "Bobby")
        res["bob_affiliation"] = pres["muc"]["affiliation"]
        res["bob_sees"] = sorted(p["from"].resource for p in occupants)

        # Cancelling the registration frees the nickname.
        bob["xep_0045"].leave_muc(room, "Bobby")
        await bob["xep_0077"].cancel_registration(jid=room, timeout=STEP_TIMEOUT)
        res["nick_cancelled"] = await reserved_nick(bob, room)
        try:
            await bob["xep_0077"].get_registration(jid=room, timeout=STEP_TIMEOUT)
            res["after_cancel"] = "form"
        except IqError as e:
            res["after_cancel"] = e.iq["error"]["condition"]
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("scenario", choices=["register"])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--peer-jid", default="")
    p.add_argument("--third-jid", default="")
    p.add_argument("--room", required=True)
    args = p.parse_args()

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.cert) as f:
        cert = ssl.PEM_cert_to_DER_cert(f.read())
    try:
        result = asyncio.run(scenario_register(args, cert))
    except Exception as e:  # noqa: BLE001 - reported to the Go test as data
        logging.exception("scenario failed")
        result = {"ok": False, "error": "exception: %r" % e}
    result["slixmpp"] = slixmpp.__version__
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
