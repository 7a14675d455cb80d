#!/usr/bin/env python3
"""A stand-in email provider and CRM for trying Wayline: the example `email` and `crm` channels
post each message here as JSON (examples/channels/). Prints what arrives and accepts it.

    python3 examples/webhook-receiver.py        # listens on 127.0.0.1:8025
"""
import json
import re
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        message = json.loads(body or b"{}")
        print(f"--- to {message.get('recipient')}: {message.get('subject')}")
        print(message.get("text") or message.get("html"))
        print(f"    List-Unsubscribe: {message.get('headers', {}).get('List-Unsubscribe')}")
        pixel = re.search(r'src="([^"]*/t/open/[^"]*)"', message.get("html") or "")
        if pixel:
            print(f"    open pixel: {pixel.group(1)}")
        reply = json.dumps({"id": "demo-" + self.headers.get("idempotency-key", "")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", 8025), Receiver).serve_forever()
