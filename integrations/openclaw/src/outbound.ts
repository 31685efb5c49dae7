// Sending as the agent (`openclaw message send --channel agentmesh`, the message tool, hooks):
// every send goes through the node, which signs, encrypts and delivers it from its outbox.

import type { OpenClawConfig } from "openclaw/plugin-sdk/channel-core";

import { resolveAccount } from "./config.js";
import { NodeClient } from "./node.js";
import { normalizeTarget } from "./target.js";

export interface SendTextParams {
  cfg: OpenClawConfig;
  to: string;
  text: string;
  accountId?: string | null;
  replyToId?: string | null;
  signal?: AbortSignal;
}

export async function sendText(params: SendTextParams): Promise<{ to: string; messageId: string }> {
  const peer = normalizeTarget(params.to);
  if (!peer) throw new Error(`agentmesh: ${JSON.stringify(params.to)} does not name a peer`);
  const node = await NodeClient.open(resolveAccount(params.cfg, params.accountId).home);
  const reply = await node.send(
    { to: peer, text: params.text, ...(params.replyToId ? { reply_to: params.replyToId } : {}) },
    params.signal,
  );
  return { to: reply.to, messageId: reply.message_id };
}
