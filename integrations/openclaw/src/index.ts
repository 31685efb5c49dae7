// Entry point of the agentmesh channel plugin for OpenClaw.

import { defineChannelPluginEntry } from "openclaw/plugin-sdk/channel-core";

import { agentmeshChannelPlugin } from "./channel.js";
import { setAgentmeshRuntime } from "./runtime.js";

export default defineChannelPluginEntry({
  id: "agentmesh",
  name: "agentmesh",
  description: "Signed, end-to-end encrypted messages with trusted agents on other machines, through a local agentmesh node.",
  plugin: agentmeshChannelPlugin,
  setRuntime: setAgentmeshRuntime,
});
