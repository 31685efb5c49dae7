// The agentmesh channel: its config, targets, outbound sends and the gateway's running account.

import { buildChannelOutboundSessionRoute, createChatChannelPlugin } from "openclaw/plugin-sdk/channel-core";

import { CHANNEL_ID, DEFAULT_ACCOUNT_ID, type ResolvedAccount, channelSection, resolveAccount } from "./config.js";
import { startAccount } from "./gateway.js";
import { sendText } from "./outbound.js";
import { normalizeTarget } from "./target.js";

export const agentmeshChannelPlugin = createChatChannelPlugin<ResolvedAccount>({
  base: {
    id: CHANNEL_ID,
    meta: {
      id: CHANNEL_ID,
      label: "agentmesh",
      selectionLabel: "agentmesh (signed, encrypted agent-to-agent messages)",
      docsPath: "/channels/agentmesh",
      blurb: "Signed, end-to-end encrypted messages with trusted agents on other machines, through a local agentmesh node.",
    },
    capabilities: { chatTypes: ["direct"] },
    reload: { configPrefixes: [`channels.${CHANNEL_ID}`] },
    config: {
      listAccountIds: (cfg) => (channelSection(cfg) ? [DEFAULT_ACCOUNT_ID] : []),
      resolveAccount,
      defaultAccountId: () => DEFAULT_ACCOUNT_ID,
      isEnabled: (account) => account.enabled,
      isConfigured: () => true,
      // Never the peers: heartbeats and wake turns aimed at the owner fall back to this list,
      // and would otherwise go to another agent. Peers are admitted by the node's trust alone.
      resolveAllowFrom: () => [],
    },
    messaging: {
      normalizeTarget,
      inferTargetChatType: () => "direct",
      targetResolver: {
        looksLikeId: (raw) => normalizeTarget(raw) !== undefined,
        hint: "<peer agent id, alias or name>",
      },
      resolveOutboundSessionRoute: ({ cfg, agentId, accountId, target }) => {
        const peer = normalizeTarget(target);
        if (!peer) return null;
        return buildChannelOutboundSessionRoute({
          cfg,
          agentId,
          channel: CHANNEL_ID,
          accountId,
          recipientSessionExact: true,
          peer: { kind: "direct", id: peer },
          chatType: "direct",
          from: `${CHANNEL_ID}:${accountId ?? DEFAULT_ACCOUNT_ID}`,
          to: peer,
        });
      },
    },
    gateway: { startAccount },
  },
  outbound: {
    base: { deliveryMode: "direct" },
    attachedResults: {
      channel: CHANNEL_ID,
      sendText: ({ cfg, to, text, accountId, replyToId, signal }) =>
        sendText({ cfg, to, text, accountId, replyToId, signal }),
    },
  },
});
