"""Drives `agentmesh mcp` with the official Python MCP client (`mcp` 2.3.0 on PyPI).

Usage: mcp_client.py CONFIG_JSON, where the JSON holds
  exe        the agentmesh binary
  home       the home of the agent whose node the MCP server serves (alice)
  bob_home   the home of a contact of alice's (bob), used to send alice messages
  bob        bob's agent id
  untrusted  a peer alice asked for contact that has not answered (an alias)
  http_url   the URL of `agentmesh --home HOME mcp --http …` (already running)
  token_file its bearer token file

Over stdio and streamable HTTP, in "legacy" (initialize, resources/subscribe) and "auto"
(2026-07-28 discover, subscriptions/listen) mode: lists the tools, calls every read-only tool and
send_message (waiting for the delivery receipt), checks the tool error of a send to an
untrusted peer, and waits for the inbox resource's update when bob sends a message. Prints one
line per check; exits non-zero on the first failure.
"""

import asyncio
import json
import subprocess
import sys
import warnings

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

INBOX = "agentmesh://inbox"
TRUST_TOOLS = {"approve_request", "block", "repin"}
READ_ONLY = {
    "whoami": {},
    "status": {},
    "peers": {"all": True},
    "discover": {"query": "b"},
    "list_requests": {"direction": "outgoing", "open": True},
    "list_messages": {"direction": "incoming", "unread": True, "limit": 5},
    "wait_for_event": {"after": 0, "kinds": ["trust"], "timeout_ms": 1000},
    "p2p_status": {},
    "p2p_list_peers": {"capability": "chat"},
    "p2p_discover": {},
}


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def structured(result, tool):
    check(result.structured_content is not None, f"{tool}: no structuredContent")
    text = result.content[0].text
    check(json.loads(text) == result.structured_content, f"{tool}: text copy differs")
    return result.structured_content


def bob_sends(cfg, text):
    subprocess.run(
        [cfg["exe"], "--home", cfg["bob_home"], "--json", "send-message", "--to", cfg["alice"], "--text", text],
        check=True,
        stdout=subprocess.DEVNULL,
    )


async def exercise(cfg, client, label, mode, updates):
    tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    check(not names & TRUST_TOOLS, f"{label}: trust tools offered by default: {names & TRUST_TOOLS}")
    for t in tools:
        a = t.annotations
        check(a is not None, f"{label}: {t.name} has no annotations")
        hints = (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)
        check(all(h is not None for h in hints), f"{label}: {t.name} lacks a hint")
        if t.name in READ_ONLY:
            check(a.read_only_hint is True, f"{label}: {t.name} should be read-only")
    check(set(READ_ONLY) <= names, f"{label}: missing tools {set(READ_ONLY) - names}")

    for tool, args in READ_ONLY.items():
        result = await client.call_tool(tool, args)
        check(not result.is_error, f"{label}: {tool} failed: {result.structured_content}")
        structured(result, tool)
    me = structured(await client.call_tool("whoami", {}), "whoami")
    check(me["agent_id"] == cfg["alice"], f"{label}: whoami is {me['agent_id']}")

    sent = await client.call_tool(
        "send_message", {"to": cfg["bob"], "text": f"from python {label}", "wait_for_delivery": True, "timeout_ms": 20000}
    )
    body = structured(sent, "send_message")
    check(not sent.is_error, f"{label}: send_message failed: {body}")
    check(body["status"] == "delivered" and body["delivery"]["status"] == "delivered", f"{label}: {body}")

    refused = await client.call_tool("send_message", {"to": cfg["untrusted"], "text": "x"})
    check(refused.is_error, f"{label}: a send to an untrusted peer should fail")
    code = structured(refused, "send_message")["error"]["code"]
    check(code == "not_trusted", f"{label}: untrusted send gave code {code}")

    if mode == "legacy":
        await client.subscribe_resource(INBOX)
        bob_sends(cfg, f"update for {label}")
        uri = await asyncio.wait_for(updates.get(), 20)
        check(uri == INBOX, f"{label}: update of {uri}")
    else:
        check(client.protocol_version == "2026-07-28", f"{label}: negotiated {client.protocol_version}")
        async with client.listen(resource_subscriptions=[INBOX]) as sub:
            bob_sends(cfg, f"update for {label}")

            async def first():
                async for event in sub:
                    return event

            event = await asyncio.wait_for(first(), 20)
            check(getattr(event, "uri", None) == INBOX, f"{label}: event {event!r}")
    print(f"ok {label}", flush=True)


async def run(cfg, transport, mode):
    label = f"{transport}/{mode}"
    updates = asyncio.Queue()

    async def on_message(message):
        root = getattr(message, "root", message)
        params = getattr(root, "params", None)
        if getattr(root, "method", None) == "notifications/resources/updated" and params is not None:
            await updates.put(params.uri)

    if transport == "stdio":
        server = StdioServerParameters(command=cfg["exe"], args=["--home", cfg["home"], "mcp"])
    else:
        with open(cfg["token_file"]) as f:
            token = f.read().strip()
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        server = streamable_http_client(cfg["http_url"], http_client=http)
    async with Client(server, mode=mode, message_handler=on_message) as client:
        await exercise(cfg, client, label, mode, updates)


async def main():
    # The legacy mode uses resources/subscribe on purpose.
    warnings.filterwarnings("ignore", message="resources/subscribe")
    cfg = json.loads(sys.argv[1])
    for transport in ("stdio", "http"):
        for mode in ("legacy", "auto"):
            await run(cfg, transport, mode)


if __name__ == "__main__":
    asyncio.run(main())
