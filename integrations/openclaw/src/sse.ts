// The node's event stream (`GET /v1/events`, Server-Sent Events) as frames. Parsing is
// eventsource-parser's (the WHATWG event-stream format); this only adapts it and bounds memory.
import { EventSourceParserStream } from "eventsource-parser/stream";

export interface SseFrame {
  /** The frame's `id:` (the event's sequence number), absent on notices about the stream (`gap`, `reset`). */
  id?: string;
  /** The frame's `event:`, `message` when it has none. */
  event: string;
  /** The `data:` lines joined by newlines. */
  data: string;
}

/** A frame larger than this ends the stream: the node sends one-line JSON events well under it. */
const MAX_FRAME_CHARS = 4 * 1024 * 1024;

export async function* readEventStream(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  let pending = 0;
  // Bounds what the parser may buffer for one unfinished frame.
  const bounded = new TransformStream<string, string>({
    transform(chunk, controller) {
      pending = chunk.includes("\n\n") || chunk.includes("\r\n\r\n") ? chunk.length : pending + chunk.length;
      if (pending > MAX_FRAME_CHARS) {
        controller.error(new Error(`event stream frame over ${MAX_FRAME_CHARS} characters`));
        return;
      }
      controller.enqueue(chunk);
    },
  });
  const frames = body
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(bounded)
    .pipeThrough(new EventSourceParserStream());
  for await (const message of frames) {
    yield { id: message.id, event: message.event ?? "message", data: message.data };
  }
}
