#!/usr/bin/python3
"""Drive Debian's slixmpp through XEP-0060 explicit subscriptions to PEP nodes, the
XEP-0163 replyto address and XEP-0048 bookmarks in PEP kept in step with XEP-0402
(urn:xmpp:bookmarks:1#compat-pep).

The run prints one JSON object on the last line of standard output; slixmpp's debug log
goes to standard error. Clients and helpers are pep.py's.

Scenario:
  subscribe  --jid publishes an open OMEMO device list and a presence-access tune;
             --third-jid, who shares no presence with it, subscribes to the device list
             (getting the last item, then a notification without replyto), lists and
             cancels its subscription, and is refused the tune; --peer-jid, a contact,
             gets the tune with the publisher's full JID as replyto; XEP-0048 bookmarks
             published to storage:bookmarks appear as XEP-0402 items and in XEP-0049
             private storage
"""

import asyncio

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from client import STEP_TIMEOUT, next_matching, ping, run_scenario, scenario_parser
from pep import AXOLOTL_DEVICES, BOOKMARKS2, announce, befriend, el, error_of, form, new_client

TUNE = "http://jabber.org/protocol/tune"
ADDRESS = "{http://jabber.org/protocol/address}"


def raw_events(c):
    """Queue the whole XML of every pubsub event message c receives."""
    q = asyncio.Queue()
    c.add_event_handler("pubsub_publish", lambda m: q.put_nowait(str(m)))
    return q


def replyto(xml):
    addrs = [a.get("jid") for a in ET.fromstring(xml).iter(ADDRESS + "address") if a.get("type") == "replyto"]
    return addrs[0] if addrs else ""


async def scenario_subscribe(args, cert):
    plugins = ("xep_0048", "xep_0049", "xep_0223")
    a = new_client(args, cert, args.jid + "/sa", args.password, plugins)
    b = new_client(args, cert, args.peer_jid + "/sb", args.peer_password)
    c = new_client(args, cert, args.third_jid + "/sc", args.third_password)
    clients = [a, b, c]
    b_raw, c_raw = raw_events(b), raw_events(c)
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(a.login(), b.login(), c.login())):
            res["error"] = "login failed"
            return res
        await announce(a, [])
        await announce(b, [TUNE])
        await announce(c, [])
        await befriend(a, b)
        me = a.boundjid.bare
        info = await a["xep_0030"].get_info(jid=me, timeout=STEP_TIMEOUT)
        res["account_features"] = sorted(info["disco_info"]["features"])

        await a["xep_0060"].publish(me, AXOLOTL_DEVICES, id="current",
                                    payload=el("<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>"),
                                    options=form("publish-options", {"pubsub#access_model": "open"}), timeout=STEP_TIMEOUT)
        # A stranger subscribes to the open node: the last item follows.
        sub = await c["xep_0060"].subscribe(me, AXOLOTL_DEVICES, timeout=STEP_TIMEOUT)
        res["subscription"] = sub["pubsub"]["subscription"]["subscription"]
        res["subscription_jid"] = str(sub["pubsub"]["subscription"]["jid"])
        xml = await next_matching(c_raw, lambda x: "device id=\"1\"" in x, "the last item after subscribing")
        res["last_item"] = True
        subs = await c["xep_0060"].get_subscriptions(me, timeout=STEP_TIMEOUT)
        res["subscriptions"] = sorted(s["node"] for s in subs["pubsub"]["subscriptions"])
        await a["xep_0060"].publish(me, AXOLOTL_DEVICES, id="current",
                                    payload=el("<list xmlns='eu.siacs.conversations.axolotl'><device id='2'/></list>"), timeout=STEP_TIMEOUT)
        xml = await next_matching(c_raw, lambda x: "device id=\"2\"" in x, "a notification to the explicit subscriber")
        res["stranger_replyto"] = replyto(xml)
        await c["xep_0060"].unsubscribe(me, AXOLOTL_DEVICES, timeout=STEP_TIMEOUT)
        subs = await c["xep_0060"].get_subscriptions(me, timeout=STEP_TIMEOUT)
        res["subscriptions_after"] = sorted(s["node"] for s in subs["pubsub"]["subscriptions"])

        # The presence access model refuses the stranger; the contact gets replyto.
        await a["xep_0060"].publish(me, TUNE, id="t1", payload=el("<tune xmlns='%s'><title>One</title></tune>" % TUNE), timeout=STEP_TIMEOUT)
        xml = await next_matching(b_raw, lambda x: "<title>One</title>" in x, "the tune at the contact")
        res["contact_replyto"] = replyto(xml)
        try:
            await c["xep_0060"].subscribe(me, TUNE, timeout=STEP_TIMEOUT)
            res["stranger_tune"] = "subscribed"
        except IqError as e:
            res["stranger_tune"] = error_of(e)

        # XEP-0048 bookmarks published to PEP reach XEP-0402 and XEP-0049 private storage.
        bm = a["xep_0048"].stanza.Bookmarks()
        bm.add_conference("heath@conference.localhost", "Lear", name="Heath", autojoin=True)
        await a["xep_0048"].set_bookmarks(bm, method="xep_0223", timeout=STEP_TIMEOUT)
        got = await a["xep_0060"].get_items(me, BOOKMARKS2, timeout=STEP_TIMEOUT)
        res["native_items"] = sorted(it["id"] for it in got["pubsub"]["items"])
        got = await a["xep_0048"].get_bookmarks(method="xep_0049", timeout=STEP_TIMEOUT)
        res["private_conferences"] = sorted(str(cf["jid"]) for cf in got["private"]["bookmarks"]["conferences"])
        # And a XEP-0402 publish reaches the PEP copy.
        await a["xep_0060"].publish(me, BOOKMARKS2, id="play@conference.localhost",
                                    payload=el("<conference xmlns='%s' name='The Play'/>" % BOOKMARKS2),
                                    options=form("publish-options", {
                                        "pubsub#persist_items": "true", "pubsub#max_items": "max",
                                        "pubsub#send_last_published_item": "never", "pubsub#access_model": "whitelist"}),
                                    timeout=STEP_TIMEOUT)
        await ping(a)
        got = await a["xep_0048"].get_bookmarks(method="xep_0223", timeout=STEP_TIMEOUT)
        res["pep_conferences"] = sorted(str(cf["jid"]) for cf in got["pubsub"]["items"]["item"]["bookmarks"]["conferences"])
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(*(x.close() for x in clients))


SCENARIOS = {"subscribe": scenario_subscribe}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
