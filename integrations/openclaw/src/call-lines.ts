// Which lines of calls the agent has taken a turn for, kept across gateway and node restarts so a
// line said by a peer becomes at most one answered turn: `<home>/openclaw-plugin.calls`, mode 0600.
//
// A line is recorded as started (with the time) before its turn, and done after it. A line found
// started but not done was cut off by a restart: the call's transcript tells whether our answer
// went out (a line of ours said since the start), and only if none did is the turn run again.

import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Lines remembered; the oldest are forgotten first (the event cursor has long passed them). */
const REMEMBERED_LINES = 4096;

interface LineRecord {
  call_id: string;
  /** When its turn started, ms (this host's clock, as the node's). */
  started_at: number;
  /** The turn finished, or the line needs none. */
  done: boolean;
}

interface LedgerFile {
  agent_id: string;
  /** [line id, record], oldest first. */
  lines: [string, LineRecord][];
}

export class CallLines {
  private constructor(
    private readonly path: string,
    private readonly agentId: string,
    private readonly lines: Map<string, LineRecord>,
  ) {}

  /** The ledger of `agentId` in `home`; a missing, unreadable or foreign one starts empty. */
  static async load(home: string, agentId: string): Promise<CallLines> {
    const path = join(home, "openclaw-plugin.calls");
    const lines = new Map<string, LineRecord>();
    try {
      const file = JSON.parse(await readFile(path, "utf8")) as Partial<LedgerFile>;
      if (file.agent_id === agentId && Array.isArray(file.lines)) {
        for (const entry of file.lines) {
          if (!Array.isArray(entry) || typeof entry[0] !== "string") continue;
          const record = entry[1] as Partial<LineRecord> | undefined;
          if (typeof record?.call_id !== "string" || !Number.isSafeInteger(record.started_at)) continue;
          lines.set(entry[0], { call_id: record.call_id, started_at: record.started_at as number, done: record.done === true });
        }
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" && !(error instanceof SyntaxError)) throw error;
    }
    return new CallLines(path, agentId, lines);
  }

  /** What is known of a line: nothing, started (a turn was cut off) or done. */
  get(lineId: string): Readonly<LineRecord> | undefined {
    return this.lines.get(lineId);
  }

  /** Records, before its turn, that a line's turn starts now; returns the start time. */
  async start(lineId: string, callId: string): Promise<number> {
    const startedAt = Date.now();
    this.lines.delete(lineId);
    this.lines.set(lineId, { call_id: callId, started_at: startedAt, done: false });
    await this.write();
    return startedAt;
  }

  /** Records that a line needs no (further) turn. */
  async done(lineId: string, callId: string): Promise<void> {
    const record = this.lines.get(lineId);
    if (record?.done) return;
    this.lines.delete(lineId);
    this.lines.set(lineId, { call_id: callId, started_at: record?.started_at ?? Date.now(), done: true });
    await this.write();
  }

  /** Atomically: a private temporary file renamed over the old one. */
  private async write(): Promise<void> {
    while (this.lines.size > REMEMBERED_LINES) this.lines.delete(this.lines.keys().next().value as string);
    const file: LedgerFile = { agent_id: this.agentId, lines: [...this.lines] };
    const temp = `${this.path}.${process.pid}.tmp`;
    await writeFile(temp, `${JSON.stringify(file)}\n`, { mode: 0o600 });
    await rename(temp, this.path);
  }
}
