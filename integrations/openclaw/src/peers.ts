// Which peers may reach the agent: the node's trusted contacts. The node is the authority (it
// already refuses messages from anyone else); this cache only spares a lookup per message.

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
