#!/usr/bin/python3
"""Log in to one XMPP server with Debian's slixmpp and exchange a message with a user of
another server, for the federation tests.

  responder  log in, send presence, print READY, wait for --body from --peer, answer --reply
  initiator  log in, send presence, send --body to --peer, wait for --reply from --peer

With --subscribe both sides first build a mutual presence subscription (RFC 6121 §3): each
answers the other's subscribe with subscribed and, the first time, subscribes back. The
initiator sends the first subscribe; it sends --body once the responder's available presence
arrived, and logs out once the reply arrived. The responder answers --body and finishes once
the initiator's unavailable presence follows an available one, so one run checks
subscription, presence and messages in both directions and unavailable presence from the
initiator's server to the responder's.

The last line of standard output is one JSON object with the outcome; slixmpp's log goes to
standard error so that a failing Go test can show it.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys

import slixmpp


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password, sasl_mech=args.mech or None)
        self.args = args
        self.result = {"ok": False}
        self.done = asyncio.get_running_loop().create_future()
        # The servers use throw-away self-signed certificates.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.use_ipv6 = False
        self.default_port = args.port
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.seen = set()  # the presence events seen from the peer
        self.asked = False  # whether we sent our subscribe already
        self.online = False  # whether the peer's last presence was available
        if args.subscribe:
            # Subscription requests are answered below, by the test's rules.
            self.auto_authorize = None
            self.auto_subscribe = False
            self.add_event_handler("presence_subscribe", self.on_subscribe)
            self.add_event_handler("presence_subscribed", lambda p: self.on_presence("subscribed", p))
            self.add_event_handler("presence_available", lambda p: self.on_presence("available", p))
            self.add_event_handler("presence_unavailable", lambda p: self.on_presence("unavailable", p))
        self.add_event_handler("failed_all_auth", lambda _e: self.finish("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self.finish("connection failed: %s" % e))
        self.add_event_handler("disconnected", lambda r: self.finish("disconnected: %s" % r))

    def finish(self, error=None):
        if self.done.done():
            return
        if error:
            self.result["error"] = error
        else:
            self.result["ok"] = True
        self.done.set_result(None)

    async def on_start(self, _event):
        if self.args.subscribe:
            await self.get_roster()
        self.send_presence()
        print("READY", flush=True)
        if self.args.role == "initiator":
            if self.args.subscribe:
                self.ask()
            else:
                self.send_message(mto=self.args.peer, mbody=self.args.body, mtype="chat")

    def ask(self):
        if not self.asked:
            self.asked = True
            self.send_presence(pto=self.args.peer, ptype="subscribe")

    def on_subscribe(self, pres):
        if pres["from"].bare != self.args.peer:
            return
        self.result.setdefault("presence", []).append("subscribe")
        self.send_presence(pto=self.args.peer, ptype="subscribed")
        self.ask()

    def on_presence(self, kind, pres):
        if pres["from"].bare != self.args.peer:
            return
        self.result.setdefault("presence", []).append(kind)
        self.seen.add(kind)
        if kind == "available" and self.args.role == "initiator" and "sent" not in self.seen:
            self.seen.add("sent")
            self.send_message(mto=self.args.peer, mbody=self.args.body, mtype="chat")
        if kind == "available":
            self.online = True
        elif kind == "unavailable":
            # An unavailable presence may also answer a probe sent before the subscription
            # was approved; the logout is the one that follows an available presence.
            if self.online and self.args.role == "responder" and "replied" in self.seen:
                if "subscribed" not in self.seen:
                    self.finish("our subscribe was never approved: %s" % self.result.get("presence"))
                    return
                self.finish()
            self.online = False

    def on_message(self, msg):
        if msg["type"] == "error":
            self.finish("error reply: %s %s" % (msg["error"]["condition"], msg["error"]["text"]))
            return
        if msg["from"].bare != self.args.peer:
            return
        body = msg["body"]
        self.result.setdefault("received", []).append(body)
        if self.args.role == "responder" and body == self.args.body:
            self.send_message(mto=msg["from"], mbody=self.args.reply, mtype="chat")
            if self.args.subscribe:
                # Done once the initiator's unavailable presence arrives.
                self.seen.add("replied")
                return
            # Give the reply time to leave before the stream closes.
            asyncio.get_running_loop().call_later(0.5, self.finish)
        elif self.args.role == "initiator" and body == self.args.reply:
            if self.args.subscribe and not {"subscribe", "subscribed"} <= set(self.result.get("presence", [])):
                self.finish("the subscription was not mutual: %s" % self.result.get("presence"))
                return
            self.finish()


async def run(args):
    c = Client(args)
    c.connect((args.host, args.port))
    try:
        await asyncio.wait_for(c.done, args.timeout)
    except asyncio.TimeoutError:
        c.result.setdefault("error", "timeout")
    try:
        await asyncio.wait_for(c.disconnect(wait=1), 5)
    except Exception:  # noqa: BLE001 - best effort
        c.abort()
    return c.result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--role", choices=["initiator", "responder"], required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--reply", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--mech", default="", help="force one SASL mechanism")
    p.add_argument("--subscribe", action="store_true", help="subscribe both ways first, then check presence")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
