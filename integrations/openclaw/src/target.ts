// Targets of the channel: `agentmesh:<peer>` or a bare peer, where a peer is anything the node
// resolves (agent id, alias, display name, or a prefix of one of these that fits one peer only).

const PREFIX = /^agentmesh:/i;
/** The node refuses longer aliases and names; an agent id is 16 hex. */
const MAX_TARGET_CHARS = 128;

export function peerTarget(agentId: string): string {
  return `agentmesh:${agentId}`;
}

/** The peer named by a target, or undefined when it cannot name one. */
export function normalizeTarget(raw: string): string | undefined {
  const peer = raw.trim().replace(PREFIX, "").trim();
  if (!peer || peer.length > MAX_TARGET_CHARS || /[\u0000-\u001f\u007f]/.test(peer)) return undefined;
  return peer;
}
