#!/usr/bin/python3
"""Drive Debian's slixmpp through XEP-0077 in-band registration with data forms.

The run prints one JSON object on the last line of standard output; slixmpp's debug log goes
to standard error. Clients are services.py's.

Scenario:
  form  --jid registers in band by submitting the server's jabber:iq:register data form
        (instead of the fixed fields), logs in, changes its password with a
        jabber:iq:register:changepassword form and logs in with --peer-password
"""

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from client import STEP_TIMEOUT, run_scenario, scenario_parser
from services import new_client

DATA = "{jabber:x:data}"


def submit(c, form_type, fields):
    """An iq set carrying a submitted jabber:iq:register data form."""
    iq = c.Iq()
    iq["type"] = "set"
    query = ET.SubElement(iq.xml, "{jabber:iq:register}query")
    x = ET.SubElement(query, DATA + "x", {"type": "submit"})
    for var, value in [("FORM_TYPE", form_type)] + list(fields.items()):
        f = ET.SubElement(x, DATA + "field", {"var": var})
        ET.SubElement(f, DATA + "value").text = value
    return iq


async def scenario_form(args, cert):
    res = {"ok": False}
    c = new_client(args, cert, args.jid, args.password, ("xep_0077", "xep_0004"))
    c["xep_0077"].force_registration = True
    # slixmpp 1.8 queues every iq until the session starts; registration must go out before.
    c._always_send_everything = True

    async def on_register(iq):
        form = iq["register"]["form"]
        fields = form.get_fields()
        res["form_fields"] = sorted(fields.keys())
        form_type = fields["FORM_TYPE"]["value"]
        res["form_type"] = form_type[0] if isinstance(form_type, list) else form_type
        try:
            await submit(c, "jabber:iq:register", {"username": c.boundjid.user, "password": c.password}).send(timeout=STEP_TIMEOUT)
            res["registered"] = True
        except IqError as e:
            res["registered"] = "error:%s" % e.iq["error"]["condition"]

    c.add_event_handler("register", on_register)
    if not await c.login():
        res["error"] = "login after registration: %s (%s)" % (c.result.get("error"), res.get("registered"))
        await c.close()
        return res
    iq = submit(c, "jabber:iq:register:changepassword", {"username": c.boundjid.user, "password": args.peer_password})
    iq["to"] = c.boundjid.domain
    try:
        await iq.send(timeout=STEP_TIMEOUT)
        res["changed"] = True
    except IqError as e:
        res["changed"] = "error:%s" % e.iq["error"]["condition"]
    await c.close()
    c2 = new_client(args, cert, args.jid, args.peer_password)
    res["login_new_password"] = await c2.login()
    await c2.close()
    res["ok"] = True
    return res


SCENARIOS = {"form": scenario_form}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
