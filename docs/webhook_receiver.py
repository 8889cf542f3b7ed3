"""A webhook receiver for benchlink: checks each delivery's signature, prints the kind of each
event once (a delivery may come more than once, always with its id), answers 204.

    BENCHLINK_WEBHOOK_SECRET=whsec_... python webhook_receiver.py PORT
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["BENCHLINK_WEBHOOK_SECRET"]  # shown once, when the webhook was created
TOLERANCE_S = 300  # a delivery signed longer ago (or ahead) than this may be a replay
seen: set[str] = set()


def verify(secret: str, headers: Message, body: bytes) -> bool:
    """HMAC-SHA256, keyed by the base64 after ``whsec_``, over ``id.timestamp.body``."""
    msg_id = headers.get("Benchlink-Webhook-Id", "")
    stamp = headers.get("Benchlink-Webhook-Timestamp", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # One signature per valid secret (two for a day after a rotation): one match is enough.
    return any(
        hmac.compare_digest(signature.removeprefix("v1,"), expected)
        for signature in headers.get("Benchlink-Webhook-Signature", "").split()
        if signature.startswith("v1,")
    )


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify(SECRET, self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        event = json.loads(body)
        if event["id"] not in seen:  # at least once: a repeat is skipped by its id
            seen.add(event["id"])
            print(event["kind"], flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
