// Which peers may reach the agent: the node's trusted contacts. The node is the authority (it
// already refuses messages from anyone else); this cache only spares a lookup per message.
// Also which contact a send names: only contacts are looked at, so a stranger's name never
// decides a send nor shows up in what the sender (the agent, through a tool) is told.

import type { NodeClient, Peer } from "./node.js";

/** How long a peers listing is used before asking the node again. */
const FRESH_MS = 5_000;

export class TrustedPeers {
  private trusted = new Map<string, Peer>();
  private fetchedAt = 0;

  /** Forgets the listing: called on `trust` events and on every new connection. */
  invalidate(): void {
    this.fetchedAt = 0;
  }

  private async refresh(node: NodeClient, signal?: AbortSignal): Promise<void> {
    const peers = await node.peers(signal);
    this.trusted = new Map(peers.filter((p) => p.trust === "trusted").map((p) => [p.agent_id, p]));
    this.fetchedAt = Date.now();
  }

  /**
   * The peer if it is trusted now. An id the cached listing does not trust is checked against a
   * fresh one, so a contact approved a moment ago is not refused from a stale cache.
   */
  async get(node: NodeClient, peerId: string, signal?: AbortSignal): Promise<Peer | undefined> {
    const stale = Date.now() - this.fetchedAt > FRESH_MS;
    if (stale || !this.trusted.has(peerId)) await this.refresh(node, signal);
    return this.trusted.get(peerId);
  }

  /** The agent ids trusted as of the last listing: the channel's own allowlist. */
  ids(): string[] {
    return [...this.trusted.keys()];
  }
}

/** Where a send's target leads: one contact, or why not (in words that quote no stranger). */
export type ContactMatch = { kind: "contact"; peer: Peer } | { kind: "none" } | { kind: "ambiguous"; candidates: Peer[] };

/**
 * The one trusted contact `target` names, the way the node resolves peers (an exact agent id,
 * alias or display name first, else a unique prefix of one, case-insensitive; an exact agent id
 * settles a tie) but among contacts only. The node's own answer for a name that fits several
 * peers lists each one's display name, strangers' included: that answer would reach the agent.
 */
export function matchContact(peers: Peer[], target: string): ContactMatch {
  const wanted = target.trim().toLowerCase();
  const contacts = peers.filter((p) => p.trust === "trusted");
  const keys = (p: Peer) => [p.agent_id, p.alias, p.name].filter((k): k is string => typeof k === "string").map((k) => k.toLowerCase());
  const exact = contacts.filter((p) => keys(p).includes(wanted));
  const found = exact.length > 0 ? exact : contacts.filter((p) => keys(p).some((k) => k.startsWith(wanted)));
  if (found.length === 1) return { kind: "contact", peer: found[0] as Peer };
  if (found.length === 0) return { kind: "none" };
  const byId = found.find((p) => p.agent_id.toLowerCase() === wanted);
  return byId ? { kind: "contact", peer: byId } : { kind: "ambiguous", candidates: found };
}
