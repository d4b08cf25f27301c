// Server-sent events from a fetch body (EventSource cannot POST): each event's data
// and its comment lines — the gateway's cost trailer is a comment,
// ": tollway cost_usd=… input_tokens=… output_tokens=…".

export async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        yield parse(block);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function parse(block) {
  const data = [];
  const comments = [];
  let event = "message";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) comments.push(line.slice(1).trim());
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    else if (line.startsWith("event:")) event = line.slice(6).trim();
  }
  return { event, data: data.join("\n"), comment: comments.join("\n") };
}

/** The cost trailer's fields ({cost_usd, input_tokens, output_tokens, estimated, …}),
 * or null for any other comment. */
export function costTrailer(comment) {
  if (!comment.startsWith("tollway ")) return null;
  const out = {};
  for (const pair of comment.slice(8).split(" ")) {
    const [k, v] = pair.split("=");
    if (k) out[k] = v;
  }
  return out;
}
