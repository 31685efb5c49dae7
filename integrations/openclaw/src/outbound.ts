// Sending as the agent (`openclaw message send --channel agentmesh`, the message tool, hooks):
// every send goes through the node, which signs, encrypts and delivers it from its outbox.
//
// The target is resolved to a contact here, among contacts only, and sent to by agent id: what
// a failed send tells the sender (often the agent, as a tool result) then names contacts only,
// never a stranger whose name happens to fit the target.

import type { OpenClawConfig } from "openclaw/plugin-sdk/channel-core";

import { resolveAccount } from "./config.js";
import { NodeClient, NodeError, type Peer } from "./node.js";
import { matchContact } from "./peers.js";
import { normalizeTarget } from "./target.js";

export interface SendTextParams {
  cfg: OpenClawConfig;
  to: string;
  text: string;
  accountId?: string | null;
  replyToId?: string | null;
  signal?: AbortSignal;
}

/**
 * Node refusals of a send to a contact whose message may carry a peer's words (its display name,
 * the code its node refused contact with): the code is kept, the message is ours.
 */
const PEER_WORDED_CODES = new Set(["not_trusted", "blocked", "ambiguous_peer", "not_found"]);

/** A contact named for the sender: its alias or name (a contact's words may be shown) and id. */
function contactLabel(peer: Peer): string {
  return `${JSON.stringify(peer.alias ?? peer.name)} (${peer.agent_id})`;
}

export async function sendText(params: SendTextParams): Promise<{ to: string; messageId: string }> {
  const target = normalizeTarget(params.to);
  if (!target) throw new Error(`agentmesh: ${JSON.stringify(params.to)} does not name a peer`);
  const node = await NodeClient.open(resolveAccount(params.cfg, params.accountId).home);
  const match = matchContact(await node.peers(params.signal), target);
  if (match.kind === "none") {
    throw new NodeError(
      "not_trusted",
      `agentmesh: ${JSON.stringify(target)} names no contact (agent id, alias, name or a unique prefix of one); ` +
        "only contacts can be messaged, and only the owner approves contacts",
    );
  }
  if (match.kind === "ambiguous") {
    throw new NodeError(
      "ambiguous_peer",
      `agentmesh: ${JSON.stringify(target)} fits ${match.candidates.map(contactLabel).join(", ")}: give more of the agent id`,
    );
  }
  const peer = match.peer;
  try {
    const reply = await node.send(
      { to: peer.agent_id, text: params.text, ...(params.replyToId ? { reply_to: params.replyToId } : {}) },
      params.signal,
    );
    return { to: reply.to, messageId: reply.message_id };
  } catch (error) {
    // Its trust changed since the listing a moment ago: named by the id it was sent to.
    if (error instanceof NodeError && PEER_WORDED_CODES.has(error.code)) {
      throw new NodeError(error.code, `agentmesh: ${peer.agent_id} is not a contact now (${error.code})`, error.status);
    }
    throw error;
  }
}
