// Client of the local agentmesh node's control API: where the node runs, its token, and the few
// routes the channel needs (peers, send, mark read, calls, tasks, escalations, the event stream).

import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { readEventStream, type SseFrame } from "./sse.js";

/** `<home>/node.json`, written by `agentmesh up` while the node runs. */
export interface NodeInfo {
  pid: number;
  agent_id: string;
  peer_url: string;
  control_url: string;
}

export type TrustState =
  | "discovered"
  | "requested_out"
  | "requested_in"
  | "trusted"
  | "rejected"
  | "blocked"
  | "removed";

export interface Peer {
  agent_id: string;
  name: string;
  alias?: string;
  trust: TrustState;
  fingerprint: string;
}

export interface Message {
  direction: "incoming" | "outgoing";
  id: string;
  peer_id: string;
  text?: string | null;
  content_type: string;
  status: string;
  reply_to?: string;
  thread?: string;
  created_at: number;
}

/**
 * A contact request as a `contact_request` event carries it: who asked and where it stands,
 * never what the requester wrote. Its display name, its purpose and a rejection reason are a
 * stranger's words: events leave them out (a stranger never talks to a model), and only the
 * owner reads them (`agentmesh requests`, `GET /control/requests`). The plugin never uses
 * them, even from an older node that still sends them.
 */
export interface ContactRequest {
  /** `req_` + 32 hex. */
  request_id: string;
  direction: "incoming" | "outgoing";
  /** A native agent id (16 hex, derived from its key), or the id an Agent Mesh V1 agent chose. */
  peer_id: string;
  /** `sha256:` + 64 hex of the requester's key. */
  fingerprint?: string;
  protocol?: string;
  status: string;
  /** The requester's words: absent from events; never shown to a model. */
  peer_name?: never;
  /** The requester's words: absent from events; never shown to a model. */
  purpose?: never;
  /** The answering side's words: absent from events; never shown to a model. */
  reason?: never;
}

export type CallState = "ringing" | "active" | "rejected" | "ended" | "missed";

/** A call with a peer: a conversation under its own id (`call_` + 32 hex, the same on both sides). */
export interface Call {
  call_id: string;
  peer_id: string;
  /** `incoming`: the peer rang us. */
  direction: "incoming" | "outgoing";
  /** What it is about, in the caller's words. */
  topic: string;
  state: CallState;
  reason?: string;
  ended_by?: "us" | "peer";
  created_at: number;
  /** Unanswered past this (ms, our clock), the call is missed. */
  ring_until: number;
  answered_at?: number;
  ended_at?: number;
  lines: number;
}

/** One line of a call's transcript: the id of the envelope that carried it, the same on both sides. */
export interface CallLine {
  line_id: string;
  call_id: string;
  speaker: "us" | "peer";
  kind: "invite" | "accept" | "reject" | "say" | "end";
  /** What was said; the topic of an invite; the reason of a reject or end. */
  text?: string;
  /** When its speaker said it, ms (the speaker's clock: ours for our lines). */
  at: number;
  status?: string;
  delivered_at?: number;
}

/** `GET /control/calls/{id}`: the call and every line, in order. */
export interface Transcript {
  call: Call;
  lines: CallLine[];
}

export type TaskState =
  | "submitted"
  | "working"
  | "input_required"
  | "auth_required"
  | "completed"
  | "failed"
  | "canceled"
  | "rejected";

/** States a task never leaves. */
export const FINAL_TASK_STATES: ReadonlySet<TaskState> = new Set(["completed", "failed", "canceled", "rejected"]);

/** Content of an artifact (A2A `Part`). */
export type Part = { kind: "text"; text: string } | { kind: "data"; data: unknown };

/** A result of a task. */
export interface Artifact {
  /** Unique within the task: an artifact with the id of an earlier one replaces it. */
  artifact_id: string;
  name?: string;
  parts: Part[];
}

/** A task delegated by a peer to us (`incoming`) or by us to a peer (`outgoing`): `task_` + 32 hex, the same on both sides. */
export interface Task {
  task_id: string;
  peer_id: string;
  direction: "incoming" | "outgoing";
  /** What was asked, in the delegator's words. */
  text: string;
  /** Structured input, when there was some. */
  data?: unknown;
  state: TaskState;
  /** What the worker said with the state (a question, an error). */
  status_text?: string;
  artifacts: Artifact[];
  cancel_requested_at?: number;
  /** Our open escalation on this task (`esc_…`), while our side waits for our owner. */
  waiting_for_owner?: string;
  created_at: number;
  updated_at: number;
}

/** One step of a task's history: the id of the envelope that carried it, the same on both sides. */
export interface TaskEntry {
  entry_id: string;
  task_id: string;
  speaker: "us" | "peer";
  kind: "create" | "update" | "message" | "cancel" | "escalate" | "resolved";
  /** The state an update reported. */
  state?: TaskState;
  text?: string;
  artifacts?: Artifact[];
  /** When its speaker made it, ms (the speaker's clock: ours for our entries). */
  at: number;
  status?: string;
  delivered_at?: number;
}

/** `GET /control/tasks/{id}`: the task and its whole history, in order. */
export interface TaskDetail {
  task: Task;
  history: TaskEntry[];
}

/** Our agent's question to our owner about a call or task with a peer. */
export interface Escalation {
  escalation_id: string;
  /** The call (`call_…`) or task (`task_…`) it is about. */
  conversation_id: string;
  peer_id: string;
  /** What the owner is asked. */
  reason: string;
  options?: string[];
  state: "open" | "resolved";
  answer?: string;
  created_at: number;
  resolved_at?: number;
  reminders: number;
}

/** One event of `GET /v1/events`: `seq`, `at`, `event` and the kind's own fields. */
export type NodeEvent = { seq: number; at: number } & (
  | { event: "message"; message: Message }
  /** A call changed; `line` is the step that changed it (absent when it was missed). */
  | { event: "call"; call: Call; line?: CallLine }
  /** A task changed; `entry` is the step that changed it. */
  | { event: "task"; task: Task; entry?: TaskEntry }
  /** Our agent asked our owner (`reminder`: again, still open), or the owner answered. */
  | { event: "escalation"; escalation: Escalation; reminder?: boolean }
  | { event: "contact_request"; request: ContactRequest }
  | { event: "trust"; peer_id: string; trust: TrustState }
  | { event: "key_mismatch" | "key_rotated" | "contact_response" | "status" | "clock_skew" | "peer_online" | "peer_offline" }
);

export interface SendArgs {
  to: string;
  text: string;
  reply_to?: string;
  thread?: string;
}

export interface SendReply {
  message_id: string;
  to: string;
  status: string;
  encrypted: boolean;
  protocol: string;
}

/** A refusal of the node (`{"error":{"code","message"}}`), or a transport failure (`code` set by us). */
export class NodeError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "NodeError";
  }
}

/** Every control call but the event stream gets this long. */
const CALL_TIMEOUT_MS = 15_000;

/** The node may only be reached on loopback: the bearer token must never leave the host. */
function checkLoopback(url: string): URL {
  const parsed = new URL(url);
  const host = parsed.hostname.replace(/^\[|\]$/g, "");
  if (parsed.protocol !== "http:" || !["127.0.0.1", "::1", "localhost"].includes(host)) {
    throw new NodeError("bad_node_json", `control_url ${parsed.origin} is not a loopback http:// URL`);
  }
  return parsed;
}

export class NodeClient {
  private constructor(
    readonly info: NodeInfo,
    private readonly base: URL,
    private readonly token: string,
  ) {}

  /**
   * Reads `node.json` and `control.token` from the home afresh: the node may have restarted on
   * another port with a new token since the last connection.
   */
  static async open(home: string): Promise<NodeClient> {
    let info: NodeInfo;
    let token: string;
    try {
      info = JSON.parse(await readFile(join(home, "node.json"), "utf8")) as NodeInfo;
      token = (await readFile(join(home, "control.token"), "utf8")).trim();
    } catch (error) {
      throw new NodeError(
        "node_not_running",
        `no agentmesh node runs for ${home} (start one with \`agentmesh up\`): ${(error as Error).message}`,
      );
    }
    if (typeof info.control_url !== "string" || typeof info.agent_id !== "string" || !token) {
      throw new NodeError("bad_node_json", `${join(home, "node.json")} or control.token is incomplete`);
    }
    return new NodeClient(info, checkLoopback(info.control_url), token);
  }

  private async request<T>(method: "GET" | "POST", path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const timeout = AbortSignal.timeout(CALL_TIMEOUT_MS);
    let response: Response;
    try {
      response = await fetch(new URL(path, this.base), {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (error) {
      throw new NodeError("node_unreachable", `${method} ${path}: ${(error as Error).message}`);
    }
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new NodeError("bad_response", `${method} ${path}: HTTP ${response.status}, not JSON`, response.status);
    }
    if (!response.ok) {
      const error = (json as { error?: { code?: string; message?: string } }).error;
      throw new NodeError(error?.code ?? "bad_response", error?.message ?? `HTTP ${response.status}`, response.status);
    }
    return json as T;
  }

  async peers(signal?: AbortSignal): Promise<Peer[]> {
    return (await this.request<{ peers: Peer[] }>("GET", "/control/peers", undefined, signal)).peers;
  }

  async send(args: SendArgs, signal?: AbortSignal): Promise<SendReply> {
    return this.request<SendReply>("POST", "/control/messages", args, signal);
  }

  /** Ids of the incoming messages from `peerId` that are still unread. */
  async unreadFrom(peerId: string, signal?: AbortSignal): Promise<Set<string>> {
    const query = new URLSearchParams({ direction: "incoming", unread: "true", peer: peerId, limit: "10000" });
    const list = await this.request<{ messages: Message[] }>("GET", `/control/messages?${query}`, undefined, signal);
    return new Set(list.messages.map((m) => m.id));
  }

  async markRead(messageId: string, signal?: AbortSignal): Promise<void> {
    await this.request("POST", `/control/messages/${encodeURIComponent(messageId)}/read`, undefined, signal);
  }

  /** The call and its transcript as they stand now. */
  async transcript(callId: string, signal?: AbortSignal): Promise<Transcript> {
    return this.request<Transcript>("GET", `/control/calls/${encodeURIComponent(callId)}`, undefined, signal);
  }

  /** Takes (or declines) a ringing incoming call; the caller is told. */
  async answer(callId: string, accept: boolean, reason?: string, signal?: AbortSignal): Promise<Call> {
    const body = { accept, ...(reason ? { reason } : {}) };
    const reply = await this.request<{ call: Call }>("POST", `/control/calls/${encodeURIComponent(callId)}/answer`, body, signal);
    return reply.call;
  }

  /** Says a line in an active call (queued in the node's outbox like a message). */
  async say(callId: string, text: string, signal?: AbortSignal): Promise<{ call: Call; line: CallLine }> {
    return this.request("POST", `/control/calls/${encodeURIComponent(callId)}/say`, { text }, signal);
  }

  /** A task and its history as they stand now. */
  async task(taskId: string, signal?: AbortSignal): Promise<TaskDetail> {
    return this.request<TaskDetail>("GET", `/control/tasks/${encodeURIComponent(taskId)}`, undefined, signal);
  }

  /** Reports where a task delegated to us stands (the delegator is told); `task_state` once it is final. */
  async updateTask(
    taskId: string,
    update: { state: Exclude<TaskState, "submitted">; text?: string; artifacts?: Artifact[] },
    signal?: AbortSignal,
  ): Promise<Task> {
    const path = `/control/tasks/${encodeURIComponent(taskId)}/update`;
    return (await this.request<{ task: Task }>("POST", path, update, signal)).task;
  }

  /** The escalations still waiting for the owner, newest first. */
  async openEscalations(signal?: AbortSignal): Promise<Escalation[]> {
    const query = new URLSearchParams({ open: "true", limit: "1000" });
    return (await this.request<{ escalations: Escalation[] }>("GET", `/control/escalations?${query}`, undefined, signal)).escalations;
  }

  /**
   * Opens `GET /v1/events` after `after` (the last sequence number handled) and, once the node
   * has answered, returns its frames: they run until the node ends the stream or `signal` fires.
   */
  async events(after: number, signal: AbortSignal): Promise<AsyncGenerator<SseFrame>> {
    const url = new URL("/v1/events", this.base);
    url.searchParams.set("after", String(after));
    let response: Response;
    try {
      response = await fetch(url, {
        headers: { authorization: `Bearer ${this.token}`, accept: "text/event-stream" },
        signal,
      });
    } catch (error) {
      throw new NodeError("node_unreachable", `GET /v1/events: ${(error as Error).message}`);
    }
    if (!response.ok || !response.body) {
      const text = await response.text().catch(() => "");
      throw new NodeError("bad_response", `GET /v1/events: HTTP ${response.status} ${text.slice(0, 200)}`, response.status);
    }
    return readEventStream(response.body);
  }
}
