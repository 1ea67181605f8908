#!/usr/bin/python3
"""Drive Debian's slixmpp's XEP-0313 plugin against an Impetus server for the Go end-to-end tests.

Each run performs one scenario and prints one JSON object on the last line of
standard output; slixmpp's log goes to standard error. The login and
connection handling is client.py's.

Scenarios:
  archive  --peer-jid sends --count numbered chat messages to --jid, which is
           online; --third-jid sends five. --jid then reads its archive with
           slixmpp's RSM iteration forwards and backwards, filters by peer
           and by time range, and fetches the query form and the metadata.
"""

import asyncio
import logging

from slixmpp import JID
from slixmpp.exceptions import IqError

from client import STEP_TIMEOUT, Client, ping as sync, run_scenario, scenario_parser


def new_client(args, cert, jid, password):
    c = Client(jid, password, "PLAIN", args.host, args.port, cert)
    for p in ("xep_0199", "xep_0030", "xep_0059", "xep_0297", "xep_0313", "xep_0359"):
        c.register_plugin(p)
    return c


def body_of(result_msg):
    return result_msg["mam_result"]["forwarded"]["stanza"]["body"]


def stamp_of(result_msg):
    return result_msg["mam_result"]["forwarded"]["delay"]["stamp"]


async def pages(c, **kw):
    """Page through c's own archive with slixmpp's RSM iterator; return [(bodies, ids, complete, first, last)]."""
    out = []
    it = c["xep_0313"].retrieve(jid=JID(c.boundjid.bare), iterator=True, timeout=STEP_TIMEOUT, **kw)
    async for page in it:
        results = page["mam"]["results"]
        fin = page.xml.find("{urn:xmpp:mam:2}fin")
        out.append({
            "bodies": [body_of(m) for m in results],
            "ids": [m["mam_result"]["id"] for m in results],
            "stamps": [stamp_of(m).isoformat() for m in results],
            "complete": fin is not None and fin.get("complete") in ("true", "1"),
            "first": page["mam_fin"]["rsm"]["first"],
            "last": page["mam_fin"]["rsm"]["last"],
        })
        if len(out) > 50:
            raise RuntimeError("paging does not end")
    return out


async def scenario_archive(args, cert):
    alice = new_client(args, cert, args.jid + "/mam", args.password)
    bob = new_client(args, cert, args.peer_jid + "/send", args.peer_password)
    carol = new_client(args, cert, args.third_jid + "/send", args.third_password)
    res = {"ok": False}
    try:
        if not all(await asyncio.gather(alice.login(), bob.login(), carol.login())):
            res["error"] = "login failed: %s / %s / %s" % (
                alice.result.get("error"), bob.result.get("error"), carol.result.get("error"))
            return res
        alice.send_presence()
        await sync(alice)

        # Disco on the account, the query form and the empty metadata.
        info = await alice["xep_0030"].get_info(jid=alice.boundjid.bare, timeout=STEP_TIMEOUT)
        res["features"] = sorted(info["disco_info"]["features"])
        form = await alice["xep_0313"].get_fields(jid=JID(alice.boundjid.bare), timeout=STEP_TIMEOUT)
        res["form_fields"] = sorted(form.get_fields().keys())
        ft = form.get_fields()["FORM_TYPE"]["value"]
        res["form_type"] = ft[0] if isinstance(ft, list) else ft

        for i in range(args.count):
            bob.send_message(mto=args.jid, mbody="bob %d" % i, mtype="chat")
            if i % 25 == 12:
                carol.send_message(mto=args.jid, mbody="carol %d" % i, mtype="chat")
        await asyncio.gather(sync(bob), sync(carol))

        # Live delivery carries the recipient archive's stanza-id.
        # Everything is archived once the senders' pings return; delivery to
        # alice's socket may still be under way, so wait for every message.
        expected = args.count + len([i for i in range(args.count) if i % 25 == 12])
        live = []

        async def collect():
            while len(live) < expected:
                m = await alice.received.get()
                if m["body"]:
                    live.append({"body": m["body"], "sid_by": str(m["stanza_id"]["by"]), "sid": m["stanza_id"]["id"]})
        try:
            await asyncio.wait_for(collect(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        res["live"] = live

        res["forward"] = await pages(alice, rsm={"max": 50})
        res["backward"] = await pages(alice, rsm={"max": 50}, reverse=True)
        res["with_carol"] = await pages(alice, with_jid=JID(args.third_jid), rsm={"max": 50})
        all_stamps = [s for p in res["forward"] for s in p["stamps"]]
        lo, hi = all_stamps[20], all_stamps[59]
        res["range_start"], res["range_end"] = lo, hi
        from slixmpp.plugins import xep_0082
        res["range"] = await pages(alice, start=xep_0082.parse(lo), end=xep_0082.parse(hi), rsm={"max": 50})

        md = await alice["xep_0313"].get_archive_metadata(jid=JID(alice.boundjid.bare), timeout=STEP_TIMEOUT)
        mdx = md.xml.find("{urn:xmpp:mam:2}metadata")
        start = mdx.find("{urn:xmpp:mam:2}start") if mdx is not None else None
        end = mdx.find("{urn:xmpp:mam:2}end") if mdx is not None else None
        res["metadata"] = {
            "start_id": start.get("id") if start is not None else "",
            "end_id": end.get("id") if end is not None else "",
        }

        # An unknown RSM cursor is item-not-found.
        try:
            await alice["xep_0313"].retrieve(jid=JID(alice.boundjid.bare), rsm={"after": "no-such-id"}, timeout=STEP_TIMEOUT)
            res["unknown_after"] = "result"
        except IqError as e:
            res["unknown_after"] = e.iq["error"]["condition"]

        # The sender's own archive holds what it sent.
        bob_pages = await pages(bob, rsm={"max": 100}, with_jid=JID(args.jid))
        res["bob_count"] = sum(len(p["bodies"]) for p in bob_pages)
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(alice.close(), bob.close(), carol.close())


SCENARIOS = {
    "archive": scenario_archive,
}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    p.add_argument("--count", type=int, default=120)
    run_scenario(p.parse_args(), SCENARIOS, log_level=logging.INFO)


if __name__ == "__main__":
    main()
