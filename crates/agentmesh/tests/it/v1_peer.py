#!/usr/bin/env python3
"""A small OpenClaw Agent Mesh V1 peer, written from the documented wire format only
(../shared/PROTOCOLS.md section 1), used by the integration tests to check that agentmesh
speaks V1 in both directions.

Run: python3 v1_peer.py --name NAME   (binds 127.0.0.1 on a free port)
Prints one JSON line {"port", "agent_id", "fingerprint"} when ready.

V1 routes: GET /agent-mesh/discovery, POST /agent-mesh/contact-request, POST /agent-mesh/message.
Test-only control routes (what the owner of a V1 agent would do by hand):
  POST /test/request-contact {"url"}     discover URL and send it a signed contact request
  POST /test/approve {"request_id"}      approve a pending request (trust the requester)
  POST /test/send {"url", "to", "text"}  send a signed direct message
  POST /test/post {"url", "path", "body"} post a raw JSON body (for replay tests)
  GET  /test/state                       pending requests, trusted peers, inbox
"""

import argparse
import base64
import datetime
import hashlib
import json
import secrets
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.exceptions import InvalidSignature

PROTOCOL = "openclaw-agent-mesh/v1"


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Agent:
    def __init__(self, name):
        self.key = Ed25519PrivateKey.generate()
        self.pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        self.fingerprint = "sha256:" + hashlib.sha256(self.pem.encode()).hexdigest()
        self.agent_id = "agent-" + secrets.token_hex(6)
        self.name = name
        self.endpoint = None
        self.lock = threading.Lock()
        self.pending = {}  # request_id -> contact request
        self.trusted = {}  # agent_id -> identity card
        self.inbox = []
        self.acks = []

    def card(self):
        return {"agent_id": self.agent_id, "display_name": self.name, "endpoint": self.endpoint,
                "public_key": self.pem, "fingerprint": self.fingerprint}

    def sign(self, obj):
        body = {k: v for k, v in obj.items() if k != "signature"}
        obj["signature"] = base64.b64encode(self.key.sign(canonical(body))).decode()
        return obj


def verify(obj, pem):
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, Ed25519PublicKey)
    body = {k: v for k, v in obj.items() if k != "signature"}
    key.verify(base64.b64decode(obj["signature"]), canonical(body))


def post(url, obj):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def make_handler(agent):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self):
            if self.path == "/agent-mesh/discovery":
                return self.reply(200, {"ok": True, "protocol": PROTOCOL, "agent": agent.card()})
            if self.path == "/test/state":
                with agent.lock:
                    return self.reply(200, {"pending": list(agent.pending.values()), "trusted": list(agent.trusted),
                                            "inbox": agent.inbox, "acks": agent.acks})
            return self.reply(404, {"ok": False, "error": "not_found"})

        def do_POST(self):
            try:
                msg = self.body()
            except ValueError:
                return self.reply(400, {"ok": False, "error": "invalid_json"})
            if self.path == "/agent-mesh/contact-request":
                sender = msg.get("from", {})
                if hashlib.sha256(sender.get("public_key", "").encode()).hexdigest() != sender.get("fingerprint", "")[7:]:
                    return self.reply(400, {"ok": False, "error": "fingerprint mismatch"})
                try:
                    verify(msg, sender["public_key"])
                except (InvalidSignature, KeyError, ValueError):
                    return self.reply(400, {"ok": False, "error": "invalid signature"})
                with agent.lock:
                    agent.pending[msg["request_id"]] = msg
                return self.reply(200, {"ok": True, "result": {"verified": True, "request_id": msg["request_id"]}})
            if self.path == "/agent-mesh/message":
                with agent.lock:
                    sender = agent.trusted.get(msg.get("from"))
                if sender is None:
                    return self.reply(400, {"ok": False, "error": "untrusted sender"})
                try:
                    verify(msg, sender["public_key"])
                except (InvalidSignature, KeyError, ValueError):
                    return self.reply(400, {"ok": False, "error": "invalid signature"})
                with agent.lock:
                    agent.inbox.append(msg)
                ack = {"type": "ack", "message_id": msg["message_id"], "status": "received", "timestamp": now_iso()}
                return self.reply(200, {"ok": True, "result": {"verified": True, "message_id": msg["message_id"], "ack": ack}})
            if self.path == "/test/request-contact":
                url = msg["url"].rstrip("/")
                with urllib.request.urlopen(url + "/agent-mesh/discovery", timeout=10) as r:
                    disc = json.loads(r.read())
                request = agent.sign({"type": "contact_request", "request_id": "req_" + secrets.token_hex(16),
                                      "from": agent.card(), "timestamp": now_iso(), "purpose": msg.get("purpose", "")})
                status, answer = post(url + "/agent-mesh/contact-request", request)
                return self.reply(200, {"status": status, "answer": answer, "peer": disc["agent"], "request": request})
            if self.path == "/test/approve":
                with agent.lock:
                    request = agent.pending.pop(msg["request_id"])
                    agent.trusted[request["from"]["agent_id"]] = request["from"]
                return self.reply(200, {"ok": True})
            if self.path == "/test/send":
                message = agent.sign({"type": "direct_message", "message_id": "msg_" + secrets.token_hex(16),
                                      "from": agent.agent_id, "to": msg["to"], "timestamp": now_iso(),
                                      "body": {"text": msg["text"]}})
                status, answer = post(msg["url"].rstrip("/") + "/agent-mesh/message", message)
                with agent.lock:
                    agent.acks.append(answer)
                return self.reply(200, {"status": status, "answer": answer, "message": message})
            if self.path == "/test/post":
                status, answer = post(msg["url"].rstrip("/") + msg["path"], msg["body"])
                return self.reply(200, {"status": status, "answer": answer})
            return self.reply(404, {"ok": False, "error": "not_found"})

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="v1-peer")
    args = parser.parse_args()
    agent = Agent(args.name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(agent))
    port = server.server_address[1]
    agent.endpoint = f"http://127.0.0.1:{port}"
    print(json.dumps({"port": port, "agent_id": agent.agent_id, "fingerprint": agent.fingerprint}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
