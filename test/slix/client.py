#!/usr/bin/python3
"""Drive Debian's slixmpp against an Impetus server for the Go end-to-end tests.

Each run performs one scenario and prints exactly one JSON object on the last
line of standard output; slixmpp's debug log, which shows every XML exchange,
goes to standard error so that a failing Go test can show it.

The other scripts in this directory import Client and the shared runner
(scenario_parser, run_scenario) from here.

Scenarios:
  login     connect, STARTTLS, authenticate with one forced SASL mechanism, bind
  queries   log in, then XEP-0199 ping, XEP-0030 disco#info and XEP-0092 version
  message   log in alice and bob, bob sends presence, alice messages bob
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

# Each network step gets this many seconds; the Go side also bounds the
# whole process, so a hang here surfaces as a readable JSON error instead.
STEP_TIMEOUT = 10


class Client(slixmpp.ClientXMPP):
    """A client that records how its login went instead of raising."""

    def __init__(self, jid, password, mech, host, port, cert_der, no_cb=False, tls12=False):
        super().__init__(jid, password, sasl_mech=mech or None)
        self.host, self.port, self.cert_der = host, port, cert_der
        self.result = {"ok": False, "mech": mech}
        self.started = asyncio.get_running_loop().create_future()
        self.received = asyncio.Queue()

        # The server's certificate is self-signed and generated at start; it
        # is pinned by comparing it with the file (see on_cert) rather than
        # verified against a CA.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        if tls12:
            self.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
        # slixmpp resolves the JID's domain ("localhost") when given an IPv4
        # literal, and "localhost" resolves to ::1 first; turning IPv6 off
        # keeps an IPv4 test on IPv4.
        if ":" not in host:
            self.use_ipv6 = False
        # slixmpp takes the port of its address "resolution" from
        # default_port, even for an IP literal, and so would ignore the port
        # passed to connect().
        self.default_port = port
        # DIGEST-MD5 puts the connected host name into digest-uri; an IPv6
        # literal would make it "xmpp/localhost/::1", which no client that
        # connects by name sends.
        self.credentials["service-name"] = self.boundjid.domain
        if no_cb:
            self._hide_channel_binding()

        self.add_event_handler("ssl_cert", self.on_cert)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("failed_all_auth", self.on_give_up)
        self.add_event_handler("no_auth", self.on_give_up)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("message", self.on_message)

    def _hide_channel_binding(self):
        """Make SCRAM send gs2 flag "n", as a client without channel binding.

        slixmpp reads tls-unique data whenever TLS is up and then sends "y" on
        non-PLUS SCRAM; withholding the data is the only switch it has.
        """
        fm = self["feature_mechanisms"]
        inner = fm.sasl_callback

        def credentials(required, optional):
            values = inner(required, optional)
            values.pop("channel_binding", None)
            return values

        fm.sasl_callback = credentials

    def on_cert(self, pem):
        self.result["cert_pinned"] = ssl.PEM_cert_to_DER_cert(pem) == self.cert_der

    def on_start(self, _event):
        sock = self.socket
        self.result["ok"] = True
        self.result["jid"] = str(self.boundjid)
        self.result["peer"] = self.transport.get_extra_info("peername")[0]
        if isinstance(sock, (ssl.SSLObject, ssl.SSLSocket)):
            self.result["tls"] = sock.version()
        self._record_gs2_flag()
        self.finish()

    def on_failed_auth(self, stanza):
        self.result["error"] = stanza["condition"]
        self.result["text"] = stanza["text"]
        self._record_gs2_flag()

    def _record_gs2_flag(self):
        """Report the gs2 flag slixmpp's SCRAM sent.

        slixmpp sends "y" on a non-PLUS SCRAM mechanism whenever it can read
        tls-unique data, and "p=tls-unique" on a -PLUS one; the flag decides
        most SCRAM outcomes, so the Go test checks it.
        """
        mech = self["feature_mechanisms"].mech
        if mech is None or not mech.name.startswith("SCRAM"):
            return
        if mech.name.endswith("-PLUS"):
            self.result["gs2_flag"] = "p=tls-unique"
        elif mech.credentials["channel_binding"]:
            self.result["gs2_flag"] = "y"
        else:
            self.result["gs2_flag"] = "n"

    def on_give_up(self, _event=None):
        self.result.setdefault("error", "no-appropriate-mechanism")
        self.finish()

    def on_stream_error(self, stanza):
        self.result["stream_error"] = stanza["condition"]
        self.result.setdefault("error", "stream-error:" + stanza["condition"])

    def on_connection_failed(self, err):
        self.result.setdefault("error", "connection-failed: %s" % err)
        self.finish()

    def on_disconnected(self, reason):
        if not self.result["ok"]:
            self.result.setdefault("error", "disconnected: %s" % reason)
        self.finish()

    def on_message(self, msg):
        self.received.put_nowait(msg)

    def finish(self):
        if not self.started.done():
            self.started.set_result(self.result["ok"])

    async def login(self):
        """Connect and wait until the session starts or login fails."""
        self.connect((self.host, self.port))
        try:
            await asyncio.wait_for(self.started, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            self.result.setdefault("error", "timeout waiting for session start")
        return self.result["ok"]

    async def close(self):
        """Close the stream and wait, bounded, until the server closes too."""
        try:
            await asyncio.wait_for(self.disconnect(wait=2), STEP_TIMEOUT)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort
            self.abort()


def event_future(client, name):
    """A future resolved with the first event `name` the client raises from now on."""
    fut = asyncio.get_running_loop().create_future()

    def handler(ev):
        if not fut.done():
            fut.set_result(ev)

    client.add_event_handler(name, handler)
    return fut


def iq_error(e):
    """Report an IqError as the Go tests expect it: "error:<condition>"."""
    return "error:%s" % e.iq["error"]["condition"]


async def next_matching(queue, pred, what):
    """Return the first queued item matching pred, bounded by STEP_TIMEOUT."""
    async def scan():
        while True:
            item = await queue.get()
            if pred(item):
                return item
    try:
        return await asyncio.wait_for(scan(), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeError("timeout waiting for " + what)


async def ping(c):
    """A ping round trip: the server has processed everything c sent before it."""
    await c["xep_0199"].send_ping(c.boundjid.domain, timeout=STEP_TIMEOUT)


def scenario_parser(doc, scenarios, password=True):
    """Return a parser for the options every scenario script shares.

    A script adds its own options before calling run_scenario. The peer and
    third-party accounts are optional since not every scenario uses them.
    """
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("scenario", choices=sorted(scenarios))
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True, help="PEM file of the server certificate to pin")
    p.add_argument("--jid", required=True)
    if password:
        p.add_argument("--password", required=True)
    p.add_argument("--peer-jid", default="")
    p.add_argument("--peer-password", default="")
    p.add_argument("--third-jid", default="")
    p.add_argument("--third-password", default="")
    return p


def run_scenario(args, scenarios, log_level=logging.DEBUG):
    """Run the chosen scenario and print its result as the last line of stdout.

    An exception is reported to the Go test as data rather than a traceback
    alone, so that the test can show what went wrong next to the XML log.
    """
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.cert) as f:
        cert = ssl.PEM_cert_to_DER_cert(f.read())
    try:
        result = asyncio.run(scenarios[args.scenario](args, cert))
    except Exception as e:  # noqa: BLE001 - reported to the Go test as data
        logging.exception("scenario failed")
        result = {"ok": False, "error": "exception: %r" % e}
    result["slixmpp"] = slixmpp.__version__
    # default=str keeps a stray non-JSON value (a JID, a datetime) from
    # turning the whole result into a traceback.
    print(json.dumps(result, default=str), flush=True)


async def scenario_login(args, cert):
    c = Client(args.jid, args.password, args.mech, args.host, args.port, cert,
               no_cb=args.no_channel_binding, tls12=args.tls12)
    await c.login()
    await c.close()
    return c.result


async def scenario_queries(args, cert):
    c = Client(args.jid, args.password, args.mech, args.host, args.port, cert)
    for plugin in ("xep_0030", "xep_0092", "xep_0199"):
        c.register_plugin(plugin)
    if not await c.login():
        await c.close()
        return c.result
    server = c.boundjid.domain
    res = c.result

    try:
        await c["xep_0199"].send_ping(server, timeout=STEP_TIMEOUT)
        res["ping"] = "ok"
    except IqError as e:
        res["ping"] = iq_error(e)
    except IqTimeout:
        res["ping"] = "timeout"

    try:
        iq = await c["xep_0030"].get_info(jid=server, timeout=STEP_TIMEOUT)
        info = iq["disco_info"]
        res["identities"] = [
            {"category": cat, "type": typ, "name": name or ""}
            for (cat, typ, _lang, name) in info["identities"]
        ]
        res["features"] = sorted(info["features"])
        res["disco_from"] = str(iq["from"])
    except IqError as e:
        res["disco"] = iq_error(e)
    except IqTimeout:
        res["disco"] = "timeout"

    try:
        iq = await c["xep_0092"].get_version(server, timeout=STEP_TIMEOUT)
        v = iq["software_version"]
        res["version"] = {"name": v["name"], "version": v["version"], "os": v["os"]}
    except IqError as e:
        res["version"] = {"error": iq_error(e)}
    except IqTimeout:
        res["version"] = {"error": "timeout"}

    await c.close()
    return res


async def scenario_message(args, cert):
    alice = Client(args.jid, args.password, args.mech, args.host, args.port, cert)
    bob = Client(args.peer_jid, args.peer_password, args.mech, args.host, args.port, cert)
    for c in (alice, bob):
        c.register_plugin("xep_0199")
    res = {"ok": False}
    try:
        ok_a, ok_b = await asyncio.gather(alice.login(), bob.login())
        res["alice"], res["bob"] = alice.result, bob.result
        if not (ok_a and ok_b):
            res["error"] = "login failed"
            return res

        # Bare-JID delivery (RFC 6121 §8.5.2) needs an available resource.
        # The ping round trip after the presence guarantees that the server
        # has processed the presence before alice's message is routed.
        bob.send_presence()
        await bob["xep_0199"].send_ping(bob.boundjid.domain, timeout=STEP_TIMEOUT)

        targets = {"full": bob.boundjid.full, "bare": bob.boundjid.bare}
        res["deliveries"] = {}
        for kind, to in targets.items():
            body = "hello bob via %s JID" % kind
            alice.send_message(mto=to, mbody=body, mtype="chat")
            got = {"to": to, "sent_body": body}
            try:
                msg = await asyncio.wait_for(bob.received.get(), STEP_TIMEOUT)
                got.update(
                    {
                        "from": str(msg["from"]),
                        "body": msg["body"],
                        "type": msg["type"],
                        "received_to": str(msg["to"]),
                    }
                )
            except asyncio.TimeoutError:
                got["error"] = "timeout: bob received nothing"
            res["deliveries"][kind] = got

        # A message that bounced would come back to alice as type='error'.
        bounced = []
        while not alice.received.empty():
            m = alice.received.get_nowait()
            bounced.append({"type": m["type"], "error": m["error"]["condition"]})
        res["alice_received"] = bounced
        res["alice_jid"] = alice.boundjid.full
        res["ok"] = True
        return res
    finally:
        await asyncio.gather(alice.close(), bob.close())


SCENARIOS = {
    "login": scenario_login,
    "queries": scenario_queries,
    "message": scenario_message,
}


def main():
    p = scenario_parser(__doc__, SCENARIOS)
    p.add_argument("--mech", default="")
    p.add_argument("--no-channel-binding", action="store_true",
                   help="withhold tls-unique data so SCRAM sends gs2 flag n")
    p.add_argument("--tls12", action="store_true", help="allow at most TLS 1.2")
    run_scenario(p.parse_args(), SCENARIOS)


if __name__ == "__main__":
    main()
