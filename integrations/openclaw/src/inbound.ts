// One incoming agentmesh message into OpenClaw: a direct session per peer, the peer's text never
// read as a command, and the agent's final reply sent back through the node as an answer to it.

import type { OpenClawConfig, PluginRuntime } from "openclaw/plugin-sdk/channel-core";
import { resolveChannelInboundRouteEnvelope } from "openclaw/plugin-sdk/channel-inbound";
import { isReplyPayloadTerminalContent } from "openclaw/plugin-sdk/reply-payload";

import { CHANNEL_ID, type ResolvedAccount } from "./config.js";
import type { Message, NodeClient, Peer } from "./node.js";
import { peerTarget } from "./target.js";

export type ChannelRuntime = PluginRuntime["channel"];

export interface InboundParams {
  cfg: OpenClawConfig;
  account: ResolvedAccount;
  channel: ChannelRuntime;
  node: NodeClient;
  message: Message & { text: string };
  /** The sender, trusted by the node. */
  peer: Peer;
  /** Every peer the node trusts: the only senders the ingress policy admits. */
  allowFrom: string[];
}

/** `replies`: answers sent to the peer (the message is marked read after the first). */
export type InboundOutcome =
  | { kind: "dispatched"; replies: number }
  | { kind: "declined"; reason: string };

/** How the peer is named to the agent: its alias (set by our owner) before its own display name. */
function peerLabel(peer: Peer): string {
  return peer.alias && peer.alias !== peer.name ? `${peer.alias} (${peer.name})` : peer.name;
}

export async function dispatchIncoming(params: InboundParams): Promise<InboundOutcome> {
  const { cfg, account, channel, node, message, peer } = params;
  const target = peerTarget(peer.agent_id);
  const label = peerLabel(peer);

  const { route, buildEnvelope } = resolveChannelInboundRouteEnvelope({
    cfg,
    channel: CHANNEL_ID,
    accountId: account.accountId,
    peer: { kind: "direct", id: peer.agent_id },
    dmScope: "per-account-channel-peer",
  });

  const ingress = await channel.inbound.ingress.resolveStable({
    channelId: CHANNEL_ID,
    accountId: account.accountId,
    cfg,
    identity: { key: "sender", entryIdPrefix: "agentmesh-peer" },
    subject: { stableId: peer.agent_id },
    conversation: { kind: "direct", id: peer.agent_id },
    contextBinding: {
      agentId: route.agentId,
      sessionKey: route.sessionKey,
      messageId: message.id,
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
    messageId: message.id,
    messageIdFull: message.id,
    timestamp: message.created_at,
    from: target,
    sender: { id: peer.agent_id, name: label },
    conversation: { kind: "direct", id: peer.agent_id, label },
    route: {
      agentId: route.agentId,
      dmScope: route.dmScope,
      accountId: route.accountId,
      routeSessionKey: route.sessionKey,
      dispatchSessionKey: route.sessionKey,
    },
    reply: { to: target, originatingTo: target },
    message: {
      body: buildEnvelope({ channel: "agentmesh", from: label, timestamp: message.created_at, body: message.text }),
      bodyForAgent: message.text,
      rawBody: message.text,
      commandBody: message.text,
    },
    channelIngress: ingress,
    // A peer is another agent, not our owner: its `/commands` are text, never run.
    extra: { CommandInterpretationSuppressed: true },
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
        await node.send({
          to: peer.agent_id,
          text: payload.text,
          reply_to: message.id,
          ...(message.thread ? { thread: message.thread } : {}),
        });
        // Read as soon as it is answered: a read message is never dispatched again, so a
        // restart right after this reply cannot make the agent answer twice.
        if (replies === 0) await node.markRead(message.id);
        replies += 1;
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
