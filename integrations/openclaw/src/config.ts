// The channel's account: one per gateway (`default`), configured under `channels.agentmesh`.

import { homedir } from "node:os";
import { join, resolve } from "node:path";

import type { OpenClawConfig } from "openclaw/plugin-sdk/channel-core";

export const CHANNEL_ID = "agentmesh";
export const DEFAULT_ACCOUNT_ID = "default";

/** `channels.agentmesh` as written in `openclaw.json` (validated by the manifest's schema). */
export interface AgentmeshChannelConfig {
  enabled?: boolean;
  home?: string;
  /** Whether the plugin takes a trusted peer's call on the agent's behalf (default true). */
  acceptCalls?: boolean;
}

export interface ResolvedAccount {
  accountId: string;
  enabled: boolean;
  /** The agentmesh home: `node.json`, `control.token`, our cursor and call ledger live there. */
  home: string;
  /**
   * `true`: a trusted peer's ringing call is answered at once and its lines become turns.
   * `false`: it keeps ringing for the owner, who is told (and may answer it).
   */
  acceptCalls: boolean;
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

export function channelSection(cfg: OpenClawConfig): AgentmeshChannelConfig | undefined {
  return (cfg.channels as Record<string, AgentmeshChannelConfig | undefined> | undefined)?.[CHANNEL_ID];
}

/** The home, by precedence: `channels.agentmesh.home`, `AGENTMESH_HOME`, `~/.openclaw/agentmesh`. */
export function resolveAccount(cfg: OpenClawConfig, accountId?: string | null): ResolvedAccount {
  const section = channelSection(cfg);
  const home = section?.home?.trim() || process.env.AGENTMESH_HOME?.trim() || join(homedir(), ".openclaw", "agentmesh");
  return {
    accountId: accountId?.trim() || DEFAULT_ACCOUNT_ID,
    enabled: section?.enabled !== false,
    home: resolve(expandHome(home)),
    acceptCalls: section?.acceptCalls !== false,
  };
}
