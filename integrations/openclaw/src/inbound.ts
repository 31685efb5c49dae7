// What a peer says, into OpenClaw as a turn of the agent: a message in the direct session for that
// peer, a line of a call in a session of that call's own, a task delegated to us (and each answer
// the delegator gives it) in a session of that task's own. The peer's text is never read as a
// command, and the agent's final reply goes back the way it came: a message answering the
// message, a line said in the call, the task's result.

import type { OpenClawConfig, PluginRuntime } from "openclaw/plugin-sdk/channel-core";
import { createChannelInboundEnvelopeBuilder, resolveChannelInboundRouteEnvelope } from "openclaw/plugin-sdk/channel-inbound";
import { isReplyPayloadTerminalContent } from "openclaw/plugin-sdk/reply-payload";
import { resolveThreadSessionKeys } from "openclaw/plugin-sdk/routing";

import { CHANNEL_ID, type ResolvedAccount } from "./config.js";
import { type Call, type CallLine, type Message, type NodeClient, NodeError, type Peer, type Task, type TaskEntry } from "./node.js";
import { peerTarget } from "./target.js";

export type ChannelRuntime = PluginRuntime["channel"];

/** What every turn of a peer needs. */
interface PeerTurnBase {
  cfg: OpenClawConfig;
  account: ResolvedAccount;
  channel: ChannelRuntime;
  node: NodeClient;
  /** The speaker, trusted by the node. */
  peer: Peer;
  /** Every peer the node trusts: the only senders the ingress policy admits. */
  allowFrom: string[];
}

export interface InboundParams extends PeerTurnBase {
  message: Message & { text: string };
}

export interface CallLineParams extends PeerTurnBase {
  /** An active call the peer placed with us. */
  call: Call;
  /** The peer's line in it (`kind` say). */
  line: CallLine & { text: string };
  /** Told when the reply could not be said: the call was over by then. */
  onDropped: (why: string) => void;
}

export interface TaskStepParams extends PeerTurnBase {
  /** A task the peer delegated to us, as it stands now. */
  task: Task;
  /** The peer's step the turn is for: the delegation (`create`) or an answer (`message`). */
  entry: TaskEntry;
  /** What the agent is given: the task (with its input data) or the answer. */
  text: string;
}

/** `replies`: answers that went back to the peer. */
export type InboundOutcome =
  | { kind: "dispatched"; replies: number }
  | { kind: "declined"; reason: string };

/** The longest call topic or task text put in a session label. */
const MAX_TOPIC_LABEL_CHARS = 80;

/** How the peer is named to the agent: its alias (set by our owner) before its own display name. */
function peerLabel(peer: Peer): string {
  return peer.alias && peer.alias !== peer.name ? `${peer.alias} (${peer.name})` : peer.name;
}

/** The session of one call: a thread of the peer's direct session (`…:direct:<peer>:thread:<call id>`). */
export function callSessionKey(directSessionKey: string, callId: string): string {
  return resolveThreadSessionKeys({ baseSessionKey: directSessionKey, threadId: callId }).sessionKey;
}

/** The session of one task delegated to us: a thread of the peer's direct session (`…:thread:<task id>`). */
export function taskSessionKey(directSessionKey: string, taskId: string): string {
  return resolveThreadSessionKeys({ baseSessionKey: directSessionKey, threadId: taskId }).sessionKey;
}

/** A peer's words on one line, cut for a session label. */
function forLabel(text: string): string {
  const line = text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
  return line.length > MAX_TOPIC_LABEL_CHARS ? `${line.slice(0, MAX_TOPIC_LABEL_CHARS)}…` : line;
}

/** `agentmesh call with bob: quarterly numbers`: the call's session label, for the agent and the owner. */
function callLabel(peer: Peer, call: Call): string {
  const topic = forLabel(call.topic);
  return `agentmesh call with ${peerLabel(peer)}${topic ? `: ${topic}` : ""}`;
}

/**
 * `agentmesh task task_… from bob: summarise the report`: the task's session label, for the agent
 * (which needs the id for `update_task`, `escalate`) and the owner.
 */
function taskLabel(peer: Peer, task: Task): string {
  const text = forLabel(task.text);
  return `agentmesh task ${task.task_id} from ${peerLabel(peer)}${text ? `: ${text}` : ""}`;
}

/** The peer's direct session: every session of a call or task with it is a thread of this one. */
function directRoute(cfg: OpenClawConfig, account: ResolvedAccount, peer: Peer): ResolvedRoute {
  return resolveChannelInboundRouteEnvelope({
    cfg,
    channel: CHANNEL_ID,
    accountId: account.accountId,
    peer: { kind: "direct", id: peer.agent_id },
    dmScope: "per-account-channel-peer",
  }).route;
}

interface TurnParams extends PeerTurnBase {
  /** The session the turn runs in. */
  route: { agentId: string; accountId?: string; dmScope?: ResolvedRoute["dmScope"]; sessionKey: string };
  /** Formats the text for the agent with the session's previous timestamp. */
  buildEnvelope: (input: { channel: string; from: string; timestamp?: number; body: string }) => string;
  /** The id of what the peer said (message id, line id). */
  id: string;
  timestamp: number;
  text: string;
  /** The conversation: the peer, and for a call its id (the thread) and label. */
  thread?: { id: string; label: string };
  /** Sends the agent's final reply back; returns whether it went out. */
  reply: (text: string) => Promise<boolean>;
}

type ResolvedRoute = ReturnType<typeof resolveChannelInboundRouteEnvelope>["route"];

/** One turn of the agent for something a peer said, in `params.route`'s session. */
async function runPeerTurn(params: TurnParams): Promise<InboundOutcome> {
  const { cfg, account, channel, peer, route, thread } = params;
  const target = peerTarget(peer.agent_id);
  const label = peerLabel(peer);

  const ingress = await channel.inbound.ingress.resolveStable({
    channelId: CHANNEL_ID,
    accountId: account.accountId,
    cfg,
    identity: { key: "sender", entryIdPrefix: "agentmesh-peer" },
    subject: { stableId: peer.agent_id },
    conversation: { kind: "direct", id: peer.agent_id, ...(thread ? { threadId: thread.id, title: thread.label } : {}) },
    contextBinding: {
      agentId: route.agentId,
      sessionKey: route.sessionKey,
      messageId: params.id,
      inboundEventKind: "user_request",
    },
    dmPolicy: "allowlist",
    allowFrom: params.allowFrom,
  });
  if (ingress.ingress.admission !== "dispatch") {
    return { kind: "declined", reason: `ingress policy: ${ingress.ingress.admission}` };
  }

  const ctxPayload = channel.inbound.buildContext({
    channel: CHANNEL_ID,
    accountId: route.accountId ?? account.accountId,
    messageId: params.id,
    messageIdFull: params.id,
    timestamp: params.timestamp,
    from: target,
    sender: { id: peer.agent_id, name: label },
    conversation: thread
      ? { kind: "direct", id: peer.agent_id, label: thread.label, threadId: thread.id }
      : { kind: "direct", id: peer.agent_id, label },
    route: {
      agentId: route.agentId,
      dmScope: route.dmScope,
      accountId: route.accountId,
      routeSessionKey: route.sessionKey,
      dispatchSessionKey: route.sessionKey,
    },
    reply: { to: target, originatingTo: target },
    message: {
      body: params.buildEnvelope({ channel: "agentmesh", from: label, timestamp: params.timestamp, body: params.text }),
      bodyForAgent: params.text,
      rawBody: params.text,
      commandBody: params.text,
    },
    channelIngress: ingress,
    // A peer is another agent, not our owner: its `/commands` are text, never run.
    extra: { CommandInterpretationSuppressed: true, ...(thread ? { ThreadLabel: thread.label } : {}) },
  });

  let replies = 0;
  let deliveryError: unknown;
  const result = await channel.inbound.dispatch({
    cfg,
    channel: CHANNEL_ID,
    accountId: account.accountId,
    route: { agentId: route.agentId, dmScope: route.dmScope, sessionKey: route.sessionKey },
    ctxPayload,
    delivery: {
      deliver: async (payload, info) => {
        if (info.kind !== "final" || !isReplyPayloadTerminalContent(payload) || !payload.text?.trim()) return;
        // The gateway's own failure notices are for our logs, not for another agent (two agents
        // would otherwise answer each other's error notices forever).
        if (payload.isError) return;
        if (await params.reply(payload.text)) replies += 1;
      },
      onError: (error) => {
        deliveryError = error;
      },
    },
    replyOptions: { sourceReplyDeliveryMode: "automatic" },
    replyPipeline: {},
  });
  if (deliveryError !== undefined) throw deliveryError;
  if (result.admission.kind !== "dispatch") return { kind: "declined", reason: `turn: ${result.admission.kind}` };
  if (!result.dispatched) return { kind: "declined", reason: "turn accepted but not dispatched" };
  return { kind: "dispatched", replies };
}

/** A message: a turn in the peer's direct session, the reply a message answering it (`reply_to`). */
export async function dispatchIncoming(params: InboundParams): Promise<InboundOutcome> {
  const { cfg, account, node, message, peer } = params;
  const { route, buildEnvelope } = resolveChannelInboundRouteEnvelope({
    cfg,
    channel: CHANNEL_ID,
    accountId: account.accountId,
    peer: { kind: "direct", id: peer.agent_id },
    dmScope: "per-account-channel-peer",
  });
  let replies = 0;
  return runPeerTurn({
    ...params,
    route,
    buildEnvelope,
    id: message.id,
    timestamp: message.created_at,
    text: message.text,
    reply: async (text) => {
      await node.send({
        to: peer.agent_id,
        text,
        reply_to: message.id,
        ...(message.thread ? { thread: message.thread } : {}),
      });
      // Read as soon as it is answered: a read message is never dispatched again, so a
      // restart right after this reply cannot make the agent answer twice.
      if (replies === 0) await node.markRead(message.id);
      replies += 1;
      return true;
    },
  });
}

/**
 * A line a peer said in a call: a turn in the call's own session (a thread of the peer's direct
 * session, labelled with the peer and the topic), the reply said in the same call.
 */
export async function dispatchCallLine(params: CallLineParams): Promise<InboundOutcome> {
  const { cfg, account, node, call, line, peer } = params;
  const direct = directRoute(cfg, account, peer);
  const route = { ...direct, sessionKey: callSessionKey(direct.sessionKey, call.call_id) };
  return runPeerTurn({
    ...params,
    route,
    buildEnvelope: createChannelInboundEnvelopeBuilder({ cfg, route }),
    id: line.line_id,
    timestamp: line.at,
    text: line.text,
    thread: { id: call.call_id, label: callLabel(peer, call) },
    reply: async (text) => {
      try {
        await node.say(call.call_id, text);
        return true;
      } catch (error) {
        // Hung up (or missed) while the agent was thinking: there is nobody to say it to.
        if (error instanceof NodeError && error.code === "call_state") {
          params.onDropped(error.message);
          return false;
        }
        throw error;
      }
    },
  });
}

/**
 * A step of a task a peer delegated to us (the task itself, or the delegator's answer to a
 * question): a turn in the task's own session (a thread of the peer's direct session, labelled
 * with the peer, the task id and its text). The turn's final replies are returned, not sent: the
 * caller makes them the task's result once it has seen where the task stands after the turn.
 */
export async function dispatchTaskStep(params: TaskStepParams): Promise<InboundOutcome & { texts: string[] }> {
  const { cfg, account, task, entry, peer } = params;
  const direct = directRoute(cfg, account, peer);
  const route = { ...direct, sessionKey: taskSessionKey(direct.sessionKey, task.task_id) };
  const texts: string[] = [];
  const outcome = await runPeerTurn({
    ...params,
    route,
    buildEnvelope: createChannelInboundEnvelopeBuilder({ cfg, route }),
    id: entry.entry_id,
    timestamp: entry.at,
    text: params.text,
    thread: { id: task.task_id, label: taskLabel(peer, task) },
    reply: async (text) => {
      texts.push(text);
      return true;
    },
  });
  return { ...outcome, texts };
}
