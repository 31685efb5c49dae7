// The channel's running half: follow the node's event stream for as long as the gateway runs the
// account, hand each incoming message from a contact to the agent once, take a contact's calls
// (each line it says one turn in the call's own session) and the tasks it delegates (each a turn
// in the task's own session, the reply its result), and tell the owner (never a peer) about
// contact requests, calls left ringing for them, escalations and key problems.
//
// Strangers never talk to a model: only what a trusted contact wrote reaches a session (framed as
// its words). Of a peer the node does not trust, the owner's session learns only that it asked
// and who it is by key; its name, purpose and any other text it chose stay with the node, for the
// owner to read from the CLI.

import type { ChannelGatewayContext } from "openclaw/plugin-sdk/channel-contract";
import { resolveChannelInboundRouteEnvelope } from "openclaw/plugin-sdk/channel-inbound";
import { channelReadyPatch, channelStoppedPatch } from "openclaw/plugin-sdk/gateway-runtime";
import { buildAgentMainSessionKey } from "openclaw/plugin-sdk/routing";

import { CHANNEL_ID, type ResolvedAccount } from "./config.js";
import { Cursor } from "./cursor.js";
import { type ChannelRuntime, type InboundOutcome, dispatchCallLine, dispatchIncoming, dispatchTaskStep } from "./inbound.js";
import { TurnLedger } from "./ledger.js";
import {
  type Call,
  type CallLine,
  type ContactRequest,
  type Escalation,
  FINAL_TASK_STATES,
  type NodeEvent,
  NodeClient,
  NodeError,
  type Peer,
  type Task,
  type TaskEntry,
} from "./node.js";
import { TrustedPeers } from "./peers.js";
import { tryGetAgentmeshRuntime } from "./runtime.js";

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30_000;
/** Message ids remembered to drop a repeat within one gateway run (the cursor covers restarts). */
const REMEMBERED_IDS = 4096;
/** A contact's words quoted to the owner are cut to this length. */
const MAX_QUOTE_CHARS = 300;
/** A native agent id: 16 lowercase hex, derived from the agent's key (no words in it). */
const NATIVE_AGENT_ID = /^[0-9a-f]{16}$/;
/** A key fingerprint as the node writes it. */
const FINGERPRINT = /^sha256:[0-9a-f]{64}$/;
/** A contact request id as the node checks it. */
const REQUEST_ID = /^req_[0-9a-f]{32}$/;

/** The ledgers of turns taken: call lines, task steps. */
interface Ledgers {
  lines: TurnLedger;
  steps: TurnLedger;
}

type Log = NonNullable<ChannelGatewayContext<ResolvedAccount>["log"]>;

function describe(error: unknown): string {
  return error instanceof NodeError ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : String(error);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** A bounded set of recently handled ids, oldest forgotten first. */
class RecentIds {
  private readonly ids = new Set<string>();
  constructor(private readonly limit: number) {}
  has(id: string): boolean {
    return this.ids.has(id);
  }
  add(id: string): void {
    this.ids.add(id);
    if (this.ids.size > this.limit) this.ids.delete(this.ids.values().next().value as string);
  }
}

function quote(text: string): string {
  return JSON.stringify(text.length > MAX_QUOTE_CHARS ? `${text.slice(0, MAX_QUOTE_CHARS)}…` : text);
}

/** Whether an error means "try again once connected": stopping, or the node out of reach. */
function retryable(error: unknown, signal: AbortSignal): boolean {
  return signal.aborted || (error instanceof NodeError && error.code === "node_unreachable");
}

/**
 * A trusted contact as named to the owner: its alias (the owner's word) or its name (the
 * contact's words, quoted) and its agent id. Only for peers the node trusts: a stranger's name
 * never reaches a session (see `ownerSafePeerId`).
 */
function describePeer(peer: Peer): string {
  return `${quote(peer.alias ?? peer.name)} (${peer.agent_id})`;
}

/**
 * A peer that is not (or no longer) a contact, as named to the owner's session: a native agent
 * id is derived from its key and safe to show; an Agent Mesh V1 agent picks its own id (up to
 * 128 characters of its choosing), so that id is its words and stays out.
 */
function ownerSafePeerId(peerId: string): string {
  return NATIVE_AGENT_ID.test(peerId) ? `agent ${peerId}` : "an Agent Mesh V1 agent (its id is its own choice, not shown here)";
}

/**
 * What the agent is given for a task: the delegator's text and, when it sent some, its input
 * data as JSON (both the peer's words, never the owner's).
 */
function taskText(task: Task): string {
  if (task.data === undefined || task.data === null) return task.text;
  return `${task.text}\n\nInput data (JSON): ${JSON.stringify(task.data)}`;
}

class AccountRunner {
  private readonly peers = new TrustedPeers();
  private readonly handled = new RecentIds(REMEMBERED_IDS);
  private readonly log: Log | undefined;

  constructor(
    private readonly ctx: ChannelGatewayContext<ResolvedAccount>,
    private readonly channel: ChannelRuntime,
  ) {
    this.log = ctx.log;
  }

  async run(): Promise<void> {
    const { abortSignal: signal, account } = this.ctx;
    let backoff = MIN_BACKOFF_MS;
    let attempts = 0;
    while (!signal.aborted) {
      let why: string;
      try {
        // Read afresh on every connection: a restarted node has a new port and token.
        const node = await NodeClient.open(account.home);
        const cursor = await Cursor.load(account.home, node.info.agent_id);
        const lines = await TurnLedger.load(account.home, node.info.agent_id, "calls");
        const steps = await TurnLedger.load(account.home, node.info.agent_id, "tasks");
        this.peers.invalidate();
        const stream = await node.events(cursor.after, signal);
        backoff = MIN_BACKOFF_MS;
        attempts = 0;
        this.ctx.setStatus({ ...this.ctx.getStatus(), ...channelReadyPatch({ reconnectAttempts: 0 }) });
        this.log?.info?.(`following node ${node.info.agent_id} (${account.home}) after event ${cursor.after}`);
        why = "the node ended the event stream";
        for await (const frame of stream) {
          if (frame.id === undefined) {
            this.onNotice(cursor, frame.event, frame.data);
            continue;
          }
          const event = JSON.parse(frame.data) as NodeEvent;
          await this.handle(node, cursor, { lines, steps }, event);
          await cursor.advance(event.seq);
        }
      } catch (error) {
        why = describe(error);
      }
      if (signal.aborted) break;
      attempts += 1;
      this.ctx.setStatus({
        ...this.ctx.getStatus(),
        connected: false,
        lifecycle: "recovering",
        reconnectAttempts: attempts,
        lastError: why,
      });
      // The first failures are routine (a node restarting); say so quietly, louder when it lasts.
      const line = `${why}; reconnecting in ${backoff} ms`;
      if (attempts > 3) this.log?.warn?.(line);
      else this.log?.info?.(line);
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  /**
   * A notice about the stream itself (a frame without `id:`). A reader too slow for the node is
   * simply disconnected, and reconnecting resumes from the cursor.
   */
  private onNotice(cursor: Cursor, kind: string, data: string): void {
    if (kind === "reset") {
      // The node's database was replaced: its log starts over, and so do we (message ids
      // already handled in this run are still skipped).
      this.log?.warn?.(`the node's event log was reset (${data}); reading it from the start`);
      cursor.restart();
    } else if (kind === "gap") {
      this.log?.warn?.(`events were pruned from the node's log before we read them (${data})`);
    }
  }

  private async handle(node: NodeClient, cursor: Cursor, ledgers: Ledgers, event: NodeEvent): Promise<void> {
    switch (event.event) {
      case "message":
        await this.onMessage(node, cursor, event);
        break;
      case "call":
        await this.onCall(node, cursor, ledgers.lines, event);
        break;
      case "task":
        await this.onTask(node, cursor, ledgers.steps, event);
        break;
      // For the owner, never a peer's session.
      case "escalation":
        if (cursor.covers(event.at)) await this.onEscalation(node, event.escalation, event.reminder === true);
        break;
      case "trust":
        this.peers.invalidate();
        break;
      // Owner notices, for what happened since the channel first ran (not the log's history).
      case "contact_request":
        if (cursor.covers(event.at)) this.onContactRequest(event.request);
        break;
      case "key_mismatch":
        if (cursor.covers(event.at)) {
          this.notifyOwner(
            "a contact presented another key and is refused until you check it: run `agentmesh status`, then `agentmesh repin`.",
          );
        }
        break;
      default:
        break;
    }
  }

  private async onMessage(node: NodeClient, cursor: Cursor, event: Extract<NodeEvent, { event: "message" }>) {
    const { message } = event;
    if (message.direction !== "incoming" || this.handled.has(message.id)) return;
    // On the very first run the whole retained log is read: what came before is the owner's.
    if (!cursor.covers(event.at)) return;
    const { abortSignal: signal } = this.ctx;
    const peer = await this.peers.get(node, message.peer_id, signal);
    if (!peer) {
      this.log?.warn?.(`message ${message.id} from ${message.peer_id}, not a contact now: left for the owner`);
      this.handled.add(message.id);
      return;
    }
    // Read already (answered before a restart, or read by the owner): handled, never again.
    if (!(await node.unreadFrom(peer.agent_id, signal)).has(message.id)) {
      this.handled.add(message.id);
      return;
    }
    if (typeof message.text !== "string" || !message.text.trim() || !message.content_type.startsWith("text/")) {
      this.log?.info?.(`message ${message.id} (${message.content_type}) has no text: left for the owner`);
      this.handled.add(message.id);
      return;
    }
    this.ctx.setStatus({ ...this.ctx.getStatus(), lastInboundAt: Date.now(), lastMessageAt: Date.now() });
    let outcome: InboundOutcome;
    try {
      outcome = await dispatchIncoming({
        cfg: this.ctx.cfg,
        account: this.ctx.account,
        channel: this.channel,
        node,
        message: { ...message, text: message.text },
        peer,
        allowFrom: this.peers.ids(),
      });
    } catch (error) {
      // Stopping mid-turn, or the node gone before the reply reached it: the cursor stays put
      // and the message is dispatched again once connected (unless its reply got through).
      if (retryable(error, signal)) throw error;
      // Otherwise it stays unread, for the owner; the stream goes on.
      this.handled.add(message.id);
      this.log?.error?.(`dispatching message ${message.id} failed: ${describe(error)}`);
      return;
    }
    this.handled.add(message.id);
    if (outcome.kind === "declined") {
      this.log?.warn?.(`message ${message.id} from ${peer.agent_id} not dispatched (${outcome.reason}): left for the owner`);
      return;
    }
    if (outcome.replies > 0) {
      this.ctx.setStatus({ ...this.ctx.getStatus(), lastOutboundAt: Date.now() });
      return;
    }
    // The agent took it and chose not to answer: read all the same.
    try {
      await node.markRead(message.id, signal);
    } catch (error) {
      this.log?.warn?.(`marking ${message.id} read failed: ${describe(error)}`);
    }
  }

  /**
   * A call changed. Only calls a peer placed with us are the plugin's, and only the peer's steps
   * in them: a call the agent placed is driven by whoever placed it (the MCP tools `say`,
   * `wait_for_event`), and our own lines come back here as events too.
   */
  private async onCall(node: NodeClient, cursor: Cursor, lines: TurnLedger, event: Extract<NodeEvent, { event: "call" }>) {
    const { call, line } = event;
    // No line: the call was missed (nobody answered in time), nothing to do.
    if (call.direction !== "incoming" || !line || line.speaker !== "peer") return;
    // On the very first run the whole retained log is read: what came before is the owner's.
    if (!cursor.covers(event.at)) return;
    const { abortSignal: signal } = this.ctx;
    try {
      if (line.kind === "invite") await this.onRing(node, call);
      else if (line.kind === "say") await this.onCallLine(node, lines, call, line);
      else if (line.kind === "end") {
        // The call is over: its session gets no more turns (each line checks the call first).
        const reason = line.text ? `: ${quote(line.text)}` : "";
        this.log?.info?.(`call ${call.call_id} with ${call.peer_id} ended by the peer${reason}`);
      }
    } catch (error) {
      // The node gone mid-way: the cursor stays put, and the step is taken again once connected.
      if (retryable(error, signal)) throw error;
      this.log?.error?.(`handling call ${call.call_id} (${line.kind} ${line.line_id}) failed: ${describe(error)}`);
    }
  }

  /**
   * A contact rings: answered at once on the agent's behalf (`acceptCalls`, the default), else
   * left ringing for the owner, who is told in their own session. Decided on the call as it stands
   * now, so a replayed event of a call answered, withdrawn or missed since changes nothing.
   */
  private async onRing(node: NodeClient, call: Call): Promise<void> {
    const { abortSignal: signal, account } = this.ctx;
    const peer = await this.peers.get(node, call.peer_id, signal);
    if (!peer) {
      this.log?.warn?.(`call ${call.call_id} from ${call.peer_id}, not a contact now: left for the owner`);
      return;
    }
    const now = (await node.transcript(call.call_id, signal)).call;
    if (now.state !== "ringing") return;
    if (!account.acceptCalls) {
      this.notifyOwner(
        `${describePeer(peer)} is calling, topic (their words) ${quote(now.topic)}; call ${now.call_id} rings until ` +
          `${new Date(now.ring_until).toISOString()}. The channel does not answer calls (acceptCalls is false). ` +
          `Only the owner decides: \`agentmesh answer ${now.call_id} accept\` (the agent then talks in the call's ` +
          `session) or \`agentmesh answer ${now.call_id} reject --reason "…"\`.`,
      );
      return;
    }
    await node.answer(now.call_id, true, undefined, signal);
    this.log?.info?.(`answered call ${now.call_id} from ${peer.agent_id} (topic ${quote(now.topic)})`);
  }

  /**
   * A line the peer said in an active call: one turn in the call's session, the reply said in the
   * call. Once only, across restarts: the ledger records the turn's start and end, and a turn cut
   * off by a restart is run again only if the transcript holds no line of ours since it started.
   */
  private async onCallLine(node: NodeClient, lines: TurnLedger, call: Call, line: CallLine): Promise<void> {
    const { abortSignal: signal } = this.ctx;
    const known = lines.get(line.line_id);
    if (known?.done) return;
    if (typeof line.text !== "string" || !line.text.trim()) {
      await lines.done(line.line_id, call.call_id);
      return;
    }
    const peer = await this.peers.get(node, call.peer_id, signal);
    if (!peer) {
      this.log?.warn?.(`line ${line.line_id} of call ${call.call_id} from ${call.peer_id}, not a contact now: no turn`);
      await lines.done(line.line_id, call.call_id);
      return;
    }
    // As the call stands now: one that ended (or that the owner took elsewhere) gets no more turns.
    const transcript = await node.transcript(call.call_id, signal);
    if (transcript.call.state !== "active") {
      this.log?.info?.(`line ${line.line_id}: call ${call.call_id} is ${transcript.call.state}, no turn`);
      await lines.done(line.line_id, call.call_id);
      return;
    }
    if (known && transcript.lines.some((l) => l.speaker === "us" && l.kind === "say" && l.at >= known.started_at)) {
      this.log?.info?.(`line ${line.line_id} of call ${call.call_id} was answered before a restart: no second turn`);
      await lines.done(line.line_id, call.call_id);
      return;
    }
    await lines.start(line.line_id, call.call_id);
    this.ctx.setStatus({ ...this.ctx.getStatus(), lastInboundAt: Date.now(), lastMessageAt: Date.now() });
    let outcome: InboundOutcome;
    try {
      outcome = await dispatchCallLine({
        cfg: this.ctx.cfg,
        account: this.ctx.account,
        channel: this.channel,
        node,
        call: transcript.call,
        line: { ...line, text: line.text },
        peer,
        allowFrom: this.peers.ids(),
        onDropped: (why) => this.log?.info?.(`the reply to line ${line.line_id} was not said: ${why}`),
      });
    } catch (error) {
      // Stopping mid-turn, or the node gone: the ledger says the turn started, and the line is
      // taken again once connected unless its reply got through.
      if (retryable(error, signal)) throw error;
      await lines.done(line.line_id, call.call_id);
      this.log?.error?.(`dispatching line ${line.line_id} of call ${call.call_id} failed: ${describe(error)}`);
      return;
    }
    await lines.done(line.line_id, call.call_id);
    if (outcome.kind === "declined") {
      this.log?.warn?.(`line ${line.line_id} of call ${call.call_id} not dispatched (${outcome.reason})`);
    } else if (outcome.replies > 0) {
      this.ctx.setStatus({ ...this.ctx.getStatus(), lastOutboundAt: Date.now() });
    }
  }

  /**
   * A task changed. Only tasks a peer delegated to us are the plugin's, and only the peer's steps
   * in them: the delegation and each answer to a question become turns in the task's session, a
   * cancel ends the handling. A task the agent delegated is followed by whoever delegated it (the
   * MCP tools `get_task`, `wait_for_event`), and our own steps come back here as events too.
   */
  private async onTask(node: NodeClient, cursor: Cursor, steps: TurnLedger, event: Extract<NodeEvent, { event: "task" }>) {
    const { task, entry } = event;
    if (task.direction !== "incoming" || !entry || entry.speaker !== "peer") return;
    // On the very first run the whole retained log is read: what came before is the owner's.
    if (!cursor.covers(event.at)) return;
    const { abortSignal: signal } = this.ctx;
    try {
      if (entry.kind === "create" || entry.kind === "message") await this.onTaskStep(node, steps, task, entry);
      else if (entry.kind === "cancel") {
        // Canceled: its session gets no more turns (each step checks the task first), and a
        // turn still running cannot make it completed (the node refuses updates of a final task).
        this.log?.info?.(`task ${task.task_id} from ${task.peer_id} canceled by the peer (now ${task.state})`);
      }
    } catch (error) {
      // The node gone mid-way: the cursor stays put, and the step is taken again once connected.
      if (retryable(error, signal)) throw error;
      this.log?.error?.(`handling task ${task.task_id} (${entry.kind} ${entry.entry_id}) failed: ${describe(error)}`);
    }
  }

  /**
   * The peer delegated a task to us, or answered one: a turn in the task's session. The task is
   * marked `working` as the turn starts, and the agent's final reply becomes its result
   * (`completed`, with the reply as a text artifact) unless the agent moved the task itself during
   * the turn (asked back, escalated, ended it) or the peer canceled it meanwhile. Once only,
   * across restarts: the ledger records the turn's start and end, and a turn cut off by a restart
   * is run again only if the task's history holds no step of ours since it started.
   */
  private async onTaskStep(node: NodeClient, steps: TurnLedger, task: Task, entry: TaskEntry): Promise<void> {
    const { abortSignal: signal } = this.ctx;
    const what = `${entry.kind === "create" ? "task" : "answer on task"} ${task.task_id} (${entry.entry_id})`;
    const known = steps.get(entry.entry_id);
    if (known?.done) return;
    const peer = await this.peers.get(node, task.peer_id, signal);
    if (!peer) {
      this.log?.warn?.(`${what} from ${task.peer_id}, not a contact now: no turn`);
      await steps.done(entry.entry_id, task.task_id);
      return;
    }
    // As the task stands now: one that is over (canceled, ended by the owner) gets no more turns.
    const detail = await node.task(task.task_id, signal);
    const now = detail.task;
    if (FINAL_TASK_STATES.has(now.state)) {
      this.log?.info?.(`${what}: the task is ${now.state}, no turn`);
      await steps.done(entry.entry_id, task.task_id);
      return;
    }
    if (known) {
      // Cut off by a restart: anything of ours since (but the `working` the turn began with)
      // means the turn got through.
      const since = detail.history.some(
        (e) => e.speaker === "us" && e.at >= known.started_at && !(e.kind === "update" && e.state === "working"),
      );
      if (since) {
        this.log?.info?.(`${what} was handled before a restart: no second turn`);
        await steps.done(entry.entry_id, task.task_id);
        return;
      }
    } else if (entry.kind === "create" && now.state !== "submitted") {
      // Taken up already, by the owner or the agent (`update-task`): not the plugin's any more.
      this.log?.info?.(`${what} is ${now.state} already: no turn`);
      await steps.done(entry.entry_id, task.task_id);
      return;
    }
    const text = entry.kind === "create" ? taskText(now) : entry.text;
    if (typeof text !== "string" || !text.trim()) {
      await steps.done(entry.entry_id, task.task_id);
      return;
    }
    await steps.start(entry.entry_id, task.task_id);
    if (now.state !== "working" && !(await this.updateTask(node, now.task_id, { state: "working" }))) {
      await steps.done(entry.entry_id, task.task_id);
      return;
    }
    this.ctx.setStatus({ ...this.ctx.getStatus(), lastInboundAt: Date.now(), lastMessageAt: Date.now() });
    let outcome: InboundOutcome & { texts: string[] };
    try {
      outcome = await dispatchTaskStep({
        cfg: this.ctx.cfg,
        account: this.ctx.account,
        channel: this.channel,
        node,
        task: now,
        entry,
        text,
        peer,
        allowFrom: this.peers.ids(),
      });
    } catch (error) {
      // Stopping mid-turn, or the node gone: the ledger says the turn started, and the step is
      // taken again once connected unless something of ours got through meanwhile.
      if (retryable(error, signal)) throw error;
      await steps.done(entry.entry_id, task.task_id);
      this.log?.error?.(`dispatching ${what} failed: ${describe(error)}; the task stays as it is`);
      return;
    }
    if (outcome.kind === "declined") {
      await steps.done(entry.entry_id, task.task_id);
      this.log?.warn?.(`${what} not dispatched (${outcome.reason}); the task stays as it is`);
      return;
    }
    const reply = outcome.texts.join("\n\n").trim();
    // The agent may have reported the task itself during the turn: never overwrite that.
    const after = (await node.task(task.task_id, signal)).task;
    if (!reply) {
      this.log?.info?.(`${what}: the turn gave no reply; the task stays ${after.state}`);
    } else if (FINAL_TASK_STATES.has(after.state)) {
      this.log?.info?.(`${what}: the task is ${after.state} already; the reply is not its result`);
    } else if (after.state !== "working" || after.waiting_for_owner) {
      const why = after.waiting_for_owner ? `waits for the owner (${after.waiting_for_owner})` : `is ${after.state}`;
      this.log?.info?.(`${what}: the task ${why}; the reply is not its result`);
    } else {
      const artifact = { artifact_id: `reply-${entry.entry_id}`, name: "reply", parts: [{ kind: "text" as const, text: reply }] };
      if (await this.updateTask(node, task.task_id, { state: "completed", artifacts: [artifact] })) {
        this.ctx.setStatus({ ...this.ctx.getStatus(), lastOutboundAt: Date.now() });
        this.log?.info?.(`${what}: completed with the agent's reply`);
      }
    }
    await steps.done(entry.entry_id, task.task_id);
  }

  /**
   * Reports a task's state; returns whether the node took it. A task that went final meanwhile
   * (canceled by the peer, ended by the owner) refuses with `task_state`: logged, not an error.
   */
  private async updateTask(node: NodeClient, taskId: string, update: Parameters<NodeClient["updateTask"]>[1]): Promise<boolean> {
    try {
      await node.updateTask(taskId, update, this.ctx.abortSignal);
      return true;
    } catch (error) {
      if (error instanceof NodeError && error.code === "task_state") {
        this.log?.info?.(`task ${taskId} not moved to ${update.state}: ${error.message}`);
        return false;
      }
      throw error;
    }
  }

  /**
   * Our agent asked our owner something about a call or task (again, as a reminder, while it is
   * open), or the owner answered: told in the owner's own session, never in a peer's. An open
   * one is told only while still open, so a replayed event of one answered since says nothing.
   */
  private async onEscalation(node: NodeClient, escalation: Escalation, reminder: boolean): Promise<void> {
    const { abortSignal: signal } = this.ctx;
    try {
      await this.tellEscalation(node, escalation, reminder, signal);
    } catch (error) {
      // The node gone mid-way: the cursor stays put, and the owner is told once connected.
      if (retryable(error, signal)) throw error;
      this.log?.error?.(`telling the owner about escalation ${escalation.escalation_id} failed: ${describe(error)}`);
    }
  }

  private async tellEscalation(node: NodeClient, escalation: Escalation, reminder: boolean, signal: AbortSignal): Promise<void> {
    const peer = await this.peers.get(node, escalation.peer_id, signal).catch(() => undefined);
    // A peer that is no contact now is named by its key-derived id only.
    const who = peer ? describePeer(peer) : ownerSafePeerId(escalation.peer_id);
    const kind = escalation.conversation_id.startsWith("call_") ? "call" : "task";
    const about = `${kind} ${escalation.conversation_id} with ${who}`;
    const id = escalation.escalation_id;
    if (escalation.state === "resolved") {
      this.notifyOwner(
        `escalation ${id} about ${about} was answered: ${JSON.stringify(escalation.answer ?? "")}. ` +
          `The answer went back to the agent and the peer.`,
      );
      return;
    }
    if (!(await node.openEscalations(signal)).some((e) => e.escalation_id === id)) return;
    const options = escalation.options?.length ? ` Options: ${escalation.options.map((o) => JSON.stringify(o)).join(", ")}.` : "";
    const again = reminder ? `reminder (asked ${new Date(escalation.created_at).toISOString()}, still open): ` : "";
    this.notifyOwner(
      `${again}your agent asks you about ${about} (escalation ${id}): ${JSON.stringify(escalation.reason)}.${options} ` +
        `The ${kind} waits for your answer; only the owner answers: \`agentmesh resolve-escalation ${id} --answer "…"\`.`,
    );
  }

  /**
   * A stranger asks for contact: the owner is told that a request waits, who it is by key (agent
   * id, fingerprint) and where to decide. Nothing the requester chose reaches the owner's session
   * (a model reads it): not its name, not its purpose, not an id it picked itself (Agent Mesh
   * V1). The owner reads those with the CLI.
   */
  private onContactRequest(request: ContactRequest): void {
    if (request.direction !== "incoming" || request.status !== "pending") return;
    if (!REQUEST_ID.test(request.request_id)) {
      this.notifyOwner("a contact request waits (its id is malformed, not shown here): see `agentmesh requests --incoming --open`.");
      return;
    }
    const id = request.request_id;
    const fingerprint = request.fingerprint && FINGERPRINT.test(request.fingerprint) ? request.fingerprint : "unknown";
    this.notifyOwner(
      `${ownerSafePeerId(request.peer_id)} (key fingerprint ${fingerprint}) asks to become a contact (request ${id}). ` +
        `What it wrote (its name, its purpose) is not shown here: a stranger's words are for the owner's eyes, ` +
        `with \`agentmesh requests --incoming --open\`. Only the owner decides: ` +
        `\`agentmesh approve-request ${id}\` or \`agentmesh reject-request ${id}\`.`,
    );
  }

  /**
   * Tells the owner: a line in the gateway log and a system event in the owner's main session,
   * which the next owner turn or heartbeat shows. Never a peer's session.
   */
  private notifyOwner(text: string): void {
    this.log?.info?.(text);
    const runtime = tryGetAgentmeshRuntime();
    if (!runtime) return;
    const { route } = resolveChannelInboundRouteEnvelope({
      cfg: this.ctx.cfg,
      channel: CHANNEL_ID,
      accountId: this.ctx.account.accountId,
    });
    runtime.system.enqueueSystemEvent(`agentmesh: ${text}`, {
      sessionKey: buildAgentMainSessionKey({ agentId: route.agentId }),
      agentId: route.agentId,
    });
  }
}

/** `gateway.startAccount`: returns only once the gateway stops the account. */
export async function startAccount(ctx: ChannelGatewayContext<ResolvedAccount>): Promise<void> {
  const channel = (ctx.channelRuntime as ChannelRuntime | undefined) ?? tryGetAgentmeshRuntime()?.channel;
  if (!channel) throw new Error("agentmesh: the gateway provided no channel runtime");
  ctx.setStatus({
    ...ctx.getStatus(),
    accountId: ctx.accountId,
    running: true,
    lifecycle: "starting",
    configured: true,
    enabled: ctx.account.enabled,
  });
  try {
    await new AccountRunner(ctx, channel).run();
  } finally {
    ctx.setStatus({ ...ctx.getStatus(), ...channelStoppedPatch() });
  }
}
