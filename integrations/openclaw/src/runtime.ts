// The plugin runtime handed over at registration: system events for the owner, and logging.

import type { PluginRuntime } from "openclaw/plugin-sdk/channel-core";
import { createPluginRuntimeStore } from "openclaw/plugin-sdk/runtime-store";

export const { setRuntime: setAgentmeshRuntime, tryGetRuntime: tryGetAgentmeshRuntime } =
  createPluginRuntimeStore<PluginRuntime>({
    pluginId: "agentmesh",
    errorMessage: "agentmesh channel runtime not initialized",
  });
