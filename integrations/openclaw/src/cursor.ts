// Where the channel stands in the node's event log, kept across gateway and node restarts so
// each message is dispatched once: `<home>/openclaw-plugin.cursor`, mode 0600.
//
// It lives in the agentmesh home, next to the log it points into: a home created afresh starts
// from a fresh cursor, and the agent id in the file catches a home whose identity was replaced.

import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

interface CursorFile {
  agent_id: string;
  /** The last event handled (0: none yet). */
  seq: number;
  /** When the channel first ran for this identity, ms: older events are the owner's business. */
  since: number;
}

export class Cursor {
  private constructor(
    private readonly path: string,
    private file: CursorFile,
  ) {}

  /**
   * The cursor of `agentId` in `home`. The first run creates it at once, at event 0 and the
   * current time, so messages that arrive while the gateway is down before its first event are
   * still read from the log when it comes back.
   */
  static async load(home: string, agentId: string): Promise<Cursor> {
    const path = join(home, "openclaw-plugin.cursor");
    try {
      const file = JSON.parse(await readFile(path, "utf8")) as Partial<CursorFile>;
      if (
        file.agent_id === agentId &&
        Number.isSafeInteger(file.seq) &&
        (file.seq as number) >= 0 &&
        Number.isSafeInteger(file.since)
      ) {
        return new Cursor(path, file as CursorFile);
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" && !(error instanceof SyntaxError)) throw error;
    }
    const cursor = new Cursor(path, { agent_id: agentId, seq: 0, since: Date.now() });
    await cursor.write();
    return cursor;
  }

  /** Resume the event stream after this sequence number. */
  get after(): number {
    return this.file.seq;
  }

  /** Whether an event at `at` (ms) happened since the channel first ran. */
  covers(at: number): boolean {
    return at >= this.file.since;
  }

  /** Records that every event up to `seq` is handled. */
  async advance(seq: number): Promise<void> {
    if (seq <= this.file.seq) return;
    this.file = { ...this.file, seq };
    await this.write();
  }

  /**
   * Accepts the log from its start again (the node's database was replaced and numbers its
   * events afresh); written with the next event handled.
   */
  restart(): void {
    this.file = { ...this.file, seq: 0 };
  }

  /** Atomically: a private temporary file renamed over the old one. */
  private async write(): Promise<void> {
    const temp = `${this.path}.${process.pid}.tmp`;
    await writeFile(temp, `${JSON.stringify(this.file)}\n`, { mode: 0o600 });
    await rename(temp, this.path);
  }
}
