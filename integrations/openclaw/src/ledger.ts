// Which steps of a peer's conversations the agent has taken a turn for, kept across gateway and
// node restarts so a step becomes at most one turn: the lines of calls
// (`<home>/openclaw-plugin.calls`) and the steps of tasks delegated to us
// (`<home>/openclaw-plugin.tasks`), each file mode 0600.
//
// A step is recorded as started (with the time) before its turn, and done after it. A step found
// started but not done was cut off by a restart: the conversation's own record (the call's
// transcript, the task's history) tells whether the turn's answer went out since the start, and
// only if none did is the turn run again.

import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Steps remembered per ledger; the oldest are forgotten first (the event cursor has long passed them). */
const REMEMBERED_STEPS = 4096;

/** The two ledgers: the file's suffix, and the name its records give the conversation's id. */
const KINDS = {
  calls: { file: "openclaw-plugin.calls", field: "call_id" },
  tasks: { file: "openclaw-plugin.tasks", field: "task_id" },
} as const;

export type LedgerKind = keyof typeof KINDS;

export interface StepRecord {
  /** The call or task the step belongs to. */
  conversation: string;
  /** When its turn started, ms (this host's clock, as the node's). */
  started_at: number;
  /** The turn finished, or the step needs none. */
  done: boolean;
}

interface LedgerFile {
  agent_id: string;
  /** [step id, record], oldest first; a record names its conversation `call_id` or `task_id`. */
  lines?: [string, Record<string, unknown>][];
  steps?: [string, Record<string, unknown>][];
}

export class TurnLedger {
  private constructor(
    private readonly path: string,
    private readonly kind: LedgerKind,
    private readonly agentId: string,
    private readonly steps: Map<string, StepRecord>,
  ) {}

  /** The `kind` ledger of `agentId` in `home`; a missing, unreadable or foreign one starts empty. */
  static async load(home: string, agentId: string, kind: LedgerKind): Promise<TurnLedger> {
    const { file: name, field } = KINDS[kind];
    const path = join(home, name);
    const steps = new Map<string, StepRecord>();
    try {
      const file = JSON.parse(await readFile(path, "utf8")) as Partial<LedgerFile>;
      const entries = kind === "calls" ? file.lines : file.steps;
      if (file.agent_id === agentId && Array.isArray(entries)) {
        for (const entry of entries) {
          if (!Array.isArray(entry) || typeof entry[0] !== "string") continue;
          const record = entry[1] as Record<string, unknown> | undefined;
          const conversation = record?.[field];
          if (typeof conversation !== "string" || !Number.isSafeInteger(record?.started_at)) continue;
          steps.set(entry[0], { conversation, started_at: record?.started_at as number, done: record?.done === true });
        }
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" && !(error instanceof SyntaxError)) throw error;
    }
    return new TurnLedger(path, kind, agentId, steps);
  }

  /** What is known of a step: nothing, started (a turn was cut off) or done. */
  get(stepId: string): Readonly<StepRecord> | undefined {
    return this.steps.get(stepId);
  }

  /** Records, before its turn, that a step's turn starts now; returns the start time. */
  async start(stepId: string, conversation: string): Promise<number> {
    const startedAt = Date.now();
    this.steps.delete(stepId);
    this.steps.set(stepId, { conversation, started_at: startedAt, done: false });
    await this.write();
    return startedAt;
  }

  /** Records that a step needs no (further) turn. */
  async done(stepId: string, conversation: string): Promise<void> {
    const record = this.steps.get(stepId);
    if (record?.done) return;
    this.steps.delete(stepId);
    this.steps.set(stepId, { conversation, started_at: record?.started_at ?? Date.now(), done: true });
    await this.write();
  }

  /** Atomically: a private temporary file renamed over the old one. */
  private async write(): Promise<void> {
    while (this.steps.size > REMEMBERED_STEPS) this.steps.delete(this.steps.keys().next().value as string);
    const { field } = KINDS[this.kind];
    const entries = [...this.steps].map(([id, r]): [string, Record<string, unknown>] => [
      id,
      { [field]: r.conversation, started_at: r.started_at, done: r.done },
    ]);
    // The calls ledger keeps the shape it has always had (`lines`).
    const file: LedgerFile = { agent_id: this.agentId, ...(this.kind === "calls" ? { lines: entries } : { steps: entries }) };
    const temp = `${this.path}.${process.pid}.tmp`;
    await writeFile(temp, `${JSON.stringify(file)}\n`, { mode: 0o600 });
    await rename(temp, this.path);
  }
}
