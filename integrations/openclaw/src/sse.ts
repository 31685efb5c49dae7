// A reader of `text/event-stream` bodies (the WHATWG server-sent events format), enough for the
// node's event log: `id`, `event` and `data` fields, comments, and frames without an id (notices).

export interface SseFrame {
  /** The frame's `id:` (the event's sequence number), absent on notices about the stream (`gap`, `reset`). */
  id?: string;
  /** The frame's `event:`, `message` when it has none. */
  event: string;
  /** The `data:` lines joined by newlines. */
  data: string;
}

/** A frame larger than this is refused rather than buffered: the node sends one-line JSON events. */
const MAX_FRAME_CHARS = 4 * 1024 * 1024;

export async function* readEventStream(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const decoder = new TextDecoder();
  let buffer = "";
  let id: string | undefined;
  let event = "";
  let data: string[] = [];
  let frameChars = 0;
  const lineEnd = /\r\n|\r|\n/g;

  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let start = 0;
    for (;;) {
      lineEnd.lastIndex = start;
      const end = lineEnd.exec(buffer);
      if (!end) break;
      // A lone `\r` at the end of a chunk may be the first half of `\r\n`: wait for more.
      if (end[0] === "\r" && end.index + 1 === buffer.length) break;
      const line = buffer.slice(start, end.index);
      start = end.index + end[0].length;

      if (line === "") {
        if (data.length > 0 || id !== undefined || event !== "") {
          yield { id, event: event || "message", data: data.join("\n") };
        }
        id = undefined;
        event = "";
        data = [];
        frameChars = 0;
        continue;
      }
      frameChars += line.length;
      if (frameChars > MAX_FRAME_CHARS) throw new Error(`event stream frame over ${MAX_FRAME_CHARS} characters`);
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    buffer = buffer.slice(start);
    if (buffer.length > MAX_FRAME_CHARS) throw new Error(`event stream line over ${MAX_FRAME_CHARS} characters`);
  }
}
