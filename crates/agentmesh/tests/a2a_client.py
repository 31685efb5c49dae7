"""The real a2a-sdk 1.3 client against an agentmesh node's A2A endpoint.

Run by the integration test `a2a::the_a2a_sdk_client_delegates_streams_lists_and_cancels`
(tests/it/a2a.rs), which starts the node and plays its agent: it completes "hello" with
"echo: hello", works on "stream me" in steps, asks back on "ask me" and completes with the
answer, and leaves "slow" working. Prints `ok <check>` for each check; exits non-zero on the
first failure. Talks to 127.0.0.1 only.

Usage: python a2a_client.py '{"base": "http://127.0.0.1:PORT", "token_file": "…"}'
"""

import asyncio
import json
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, A2AClientError, ClientConfig, create_client
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
)


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)


def request(text, task_id=None, context_id=None, now=False):
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
    if task_id:
        message.task_id = task_id
    if context_id:
        message.context_id = context_id
    req = SendMessageRequest(message=message)
    if now:
        req.configuration.CopyFrom(SendMessageConfiguration(return_immediately=True))
    return req


def state(task):
    return TaskState.Name(task.status.state)


def artifact_texts(task):
    return [p.text for a in task.artifacts for p in a.parts if p.text]


async def one(client, req):
    """The single reply of a non-streaming send: a Task."""
    got = [ev async for ev in client.send_message(req)]
    check(len(got) == 1 and got[0].WhichOneof("payload") == "task", f"one task back: {got}")
    return got[0].task


async def main(config):
    base = config["base"]
    token = open(config["token_file"]).read().strip()
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    card = await A2ACardResolver(http, base).get_agent_card()
    iface = card.supported_interfaces[0]
    check(iface.protocol_binding == "JSONRPC" and iface.protocol_version == "1.0", f"interface {iface}")
    check(iface.url == f"{base}/a2a/v1", f"rpc url {iface.url}")
    check(card.capabilities.streaming, "streaming advertised")
    print("ok card", flush=True)

    rpc = await create_client(card, client_config=ClientConfig(httpx_client=http, streaming=False))
    srpc = await create_client(card, client_config=ClientConfig(httpx_client=http))

    # Blocking send: answered once the agent completed the task.
    task = await one(rpc, request("hello"))
    check(state(task) == "TASK_STATE_COMPLETED", f"hello completed: {task}")
    check(artifact_texts(task) == ["echo: hello"], f"hello artifact: {task}")
    check(task.history[0].parts[0].text == "hello", "the request is in the history")
    print("ok send", flush=True)

    # Streaming: the task first, then its changes, until completed.
    kinds, states, texts = [], [], []
    async for ev in srpc.send_message(request("stream me")):
        kind = ev.WhichOneof("payload")
        kinds.append(kind)
        if kind == "task":
            streamed = ev.task
            states.append(state(ev.task))
        elif kind == "status_update":
            states.append(TaskState.Name(ev.status_update.status.state))
        elif kind == "artifact_update":
            texts.extend(p.text for p in ev.artifact_update.artifact.parts)
    check(kinds[0] == "task", f"a stream starts with the task: {kinds}")
    check("TASK_STATE_WORKING" in states and states[-1] == "TASK_STATE_COMPLETED", f"stream states {states}")
    check(texts == ["part one", "part two"], f"streamed artifacts {texts}")
    print("ok stream", flush=True)

    got = await rpc.get_task(GetTaskRequest(id=streamed.id, history_length=10))
    check(state(got) == "TASK_STATE_COMPLETED" and artifact_texts(got) == ["part one", "part two"], f"get {got}")
    print("ok get", flush=True)

    # Multi-turn: the agent asks, the client answers in the same task and context.
    asked = await one(rpc, request("ask me"))
    check(state(asked) == "TASK_STATE_INPUT_REQUIRED", f"asks back: {asked}")
    check(asked.status.message.parts[0].text == "which color?", f"the question: {asked.status}")
    answered = await one(rpc, request("blue", task_id=asked.id, context_id=asked.context_id))
    check(answered.id == asked.id and state(answered) == "TASK_STATE_COMPLETED", f"answered: {answered}")
    check(artifact_texts(answered) == ["color: blue"], f"answer used: {answered}")
    print("ok multi-turn", flush=True)

    listed = await rpc.list_tasks(ListTasksRequest(page_size=2))
    check(listed.total_size == 3 and len(listed.tasks) == 2 and listed.next_page_token, f"page 1: {listed}")
    rest = await rpc.list_tasks(ListTasksRequest(page_size=2, page_token=listed.next_page_token))
    check(len(rest.tasks) == 1 and rest.next_page_token == "", f"page 2: {rest}")
    ids = {t.id for t in listed.tasks} | {t.id for t in rest.tasks}
    check(ids == {task.id, streamed.id, asked.id}, f"every task once: {ids}")
    done = await rpc.list_tasks(ListTasksRequest(status=TaskState.TASK_STATE_COMPLETED, include_artifacts=True))
    check(len(done.tasks) == 3 and all(t.artifacts for t in done.tasks), f"filtered: {done}")
    print("ok list", flush=True)

    # Cancel a task the agent is working on, while subscribed to it.
    slow = await one(rpc, request("slow", now=True))
    check(state(slow) in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"), f"returned at once: {slow}")

    subscribed = asyncio.Event()

    async def follow():
        seen = []
        async for ev in srpc.subscribe(SubscribeToTaskRequest(id=slow.id)):
            kind = ev.WhichOneof("payload")
            seen.append(state(ev.task) if kind == "task" else TaskState.Name(ev.status_update.status.state)
                        if kind == "status_update" else kind)
            subscribed.set()
        return seen

    following = asyncio.create_task(follow())
    # Cancel once the subscription has its first event (the task), not after a guessed delay.
    await asyncio.wait_for(subscribed.wait(), 20)
    canceled = await rpc.cancel_task(CancelTaskRequest(id=slow.id))
    check(state(canceled) == "TASK_STATE_CANCELED", f"canceled: {canceled}")
    seen = await asyncio.wait_for(following, 20)
    check(seen and seen[-1] == "TASK_STATE_CANCELED", f"the subscription saw the cancel and ended: {seen}")
    print("ok cancel", flush=True)

    try:
        await rpc.get_task(GetTaskRequest(id="task_00000000000000000000000000000000"))
        check(False, "an unknown task is an error")
    except TaskNotFoundError:
        pass
    try:
        await rpc.cancel_task(CancelTaskRequest(id=task.id))
        check(False, "a completed task cannot be canceled")
    except TaskNotCancelableError:
        pass
    print("ok errors", flush=True)

    for header in ({}, {"Authorization": "Bearer not-a-token"}):
        anon = httpx.AsyncClient(headers=header, timeout=30)
        bad = await create_client(card, client_config=ClientConfig(httpx_client=anon, streaming=False))
        try:
            await bad.get_task(GetTaskRequest(id=task.id))
            check(False, f"refused without a valid token ({header})")
        except A2AClientError as e:
            check("401" in str(e), f"401: {e}")
        await anon.aclose()
    print("ok auth", flush=True)
    await http.aclose()


asyncio.run(main(json.loads(sys.argv[1])))
