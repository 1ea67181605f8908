#!/usr/bin/python3
"""XEP-0363 HTTP file upload with Debian's slixmpp against an Impetus server.

Logs in over STARTTLS, finds the upload service and its max-file-size with the
xep_0363 plugin, requests a slot, uploads with an HTTP PUT carrying the slot's
headers, fetches the file back, then asks for a slot that is too large. Prints
one JSON object on the last line of standard output; slixmpp's log goes to
standard error.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys
import urllib.request

import slixmpp
from slixmpp.exceptions import IqError

STEP_TIMEOUT = 10
NS = "urn:xmpp:http:upload:0"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, port):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.use_ipv6 = False
        self.default_port = port
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0363")
        self.result = {"ok": False}
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_all_auth", lambda _e: self.finish("auth failed"))
        self.add_event_handler("connection_failed", lambda e: self.finish("connection failed: %s" % e))

    def finish(self, error=None):
        if error:
            self.result["error"] = error
        self.disconnect()

    async def on_start(self, _event):
        try:
            await self.run()
            self.result["ok"] = True
        except Exception as e:  # reported to the Go test, which fails on it
            logging.exception("upload scenario failed")
            self.result["error"] = repr(e)
        self.finish()

    async def run(self):
        up = self["xep_0363"]
        # find_upload_service in Debian's slixmpp passes coroutines to asyncio.wait, which
        # Python 3.11 refuses; this is its check on the domain itself (XEP-0363 §2) spelled out.
        info = await self["xep_0030"].get_info(jid=self.boundjid.domain, timeout=STEP_TIMEOUT)
        ids = info["disco_info"]["identities"]
        if not any(i[0] == "store" and i[1] == "file" for i in ids) or NS not in info["disco_info"]["features"]:
            raise RuntimeError("no upload service found")
        self.result["service"] = str(info["from"])
        for form in info["disco_info"].iterables:
            values = form["values"]
            if values.get("FORM_TYPE") == [NS]:
                self.result["max_file_size"] = int(values["max-file-size"])
        data = b"hello from slixmpp \x00\xff" * 10
        iq = await up.request_slot(info["from"], "hello world.txt", len(data), "text/plain", timeout=STEP_TIMEOUT)
        slot = iq["http_upload_slot"]
        put_url, get_url = slot["put"]["url"], slot["get"]["url"]
        headers = {"Content-Type": "text/plain", "Content-Length": str(len(data))}
        for h in slot["put"]["headers"]:
            headers[h["name"]] = h["value"]
        req = urllib.request.Request(put_url, data=data, method="PUT", headers=headers)
        loop = asyncio.get_running_loop()
        resp = await loop.run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=STEP_TIMEOUT))
        if resp.status != 201:
            raise RuntimeError("PUT answered %d" % resp.status)
        self.result["get_url"] = get_url
        got = await loop.run_in_executor(None, lambda: urllib.request.urlopen(get_url, timeout=STEP_TIMEOUT).read())
        self.result["fetched"] = got == data
        try:
            await up.request_slot(info["from"], "big.bin", 2 << 20, "application/octet-stream", timeout=STEP_TIMEOUT)
        except IqError as e:
            err = e.iq.xml.find("{jabber:client}error")
            el = err.find("{%s}file-too-large/{%s}max-file-size" % (NS, NS)) if err is not None else None
            if e.iq["error"]["condition"] == "not-acceptable" and el is not None:
                self.result["too_large"] = el.text


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    c = Client(a.jid, a.password, a.port)
    c.connect((a.host, a.port))
    loop = asyncio.get_event_loop()
    loop.run_until_complete(asyncio.wait_for(c.disconnected, 60))
    print(json.dumps(c.result))


if __name__ == "__main__":
    main()
