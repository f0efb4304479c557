// The OpenAI API of this server, as the page uses it: JSON GETs, and streamed chat completions
// read with fetch + ReadableStream (Server-Sent Events), with the API key when there is one.

const KEY_ITEM = "interference.apiKey";

export function apiKey() {
  try {
    return localStorage.getItem(KEY_ITEM) || "";
  } catch {
    return "";
  }
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_ITEM, key);
  else localStorage.removeItem(KEY_ITEM);
}

/** An error answered by the API (an OpenAI error object), or a failure to reach it. */
export class ApiError extends Error {
  constructor(status, error, midStream = false) {
    super(typeof error.message === "string" && error.message ? error.message : `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = typeof error.code === "string" ? error.code : null;
    this.type = typeof error.type === "string" ? error.type : null;
    this.midStream = midStream;
  }
}

function headers(json) {
  const out = { Accept: "application/json" };
  if (json) out["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says what there is to say
  }
  const error =
    body && typeof body.error === "object" && body.error
      ? body.error
      : { message: `${response.status} ${response.statusText || "error"}`.trim() };
  return new ApiError(response.status, error);
}

async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, { message: "The server cannot be reached.", code: "network_error" });
  }
}

export async function getJson(path, signal) {
  const response = await send(path, { headers: headers(false), signal, cache: "no-store" });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export async function postJson(path, body, signal) {
  const response = await send(path, {
    method: "POST",
    headers: headers(true),
    body: JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/**
 * Stream a chat completion. `onDelta(text)` gets each piece of content as it arrives; `run`
 * (returned at once by `onStart`, filled in as the stream goes) has the deployment that
 * answered, the usage, the time to first token and the elapsed time. Rejects with an ApiError
 * (a status, or an error event in the stream) or an AbortError (stopped).
 */
export async function streamChat(body, { signal, onStart, onDelta }) {
  const started = performance.now();
  const response = await send("/v1/chat/completions", {
    method: "POST",
    headers: headers(true),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  const run = {
    deployment: response.headers.get("x-interference-deployment"),
    attempts: Number(response.headers.get("x-interference-attempts")) || null,
    requestId: response.headers.get("x-request-id"),
    usage: null,
    finishReason: null,
    ttftMs: null,
    elapsedMs: null,
    pieces: 0,
    started,
    firstAt: null,
  };
  onStart?.(run);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (handleEvent(block, run, onDelta)) return run;
      }
    }
    if (buffer.trim()) handleEvent(buffer, run, onDelta);
    return run;
  } finally {
    run.elapsedMs = performance.now() - started;
    reader.releaseLock();
  }
}

/** One SSE event; true at `[DONE]`. */
function handleEvent(block, run, onDelta) {
  const data = block
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""))
    .join("\n");
  if (!data) return false;
  if (data === "[DONE]") return true;
  let chunk;
  try {
    chunk = JSON.parse(data);
  } catch {
    return false;
  }
  if (chunk.error) throw new ApiError(200, chunk.error, true);
  if (chunk.usage) run.usage = chunk.usage;
  for (const choice of chunk.choices || []) {
    if (choice.index) continue; // the page asks for one choice
    if (choice.finish_reason) run.finishReason = choice.finish_reason;
    const text = choice.delta && choice.delta.content;
    if (typeof text === "string" && text) {
      if (run.firstAt === null) {
        run.firstAt = performance.now();
        run.ttftMs = run.firstAt - run.started;
      }
      run.pieces += 1;
      onDelta(text);
    }
  }
  return false;
}

/** Tokens per second of the generation (first token to the end), or null. */
export function tokensPerSecond(run) {
  if (run.firstAt === null || run.elapsedMs === null) return null;
  const tokens = (run.usage && run.usage.completion_tokens) || run.pieces;
  const seconds = (run.started + run.elapsedMs - run.firstAt) / 1000;
  return tokens > 1 && seconds > 0 ? (tokens - 1) / seconds : null;
}

/** POST a form (an upload) and read the JSON answer. */
export async function postForm(path, form, signal) {
  const h = headers(false);
  const response = await send(path, { method: "POST", headers: h, body: form, signal, cache: "no-store" });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** POST JSON and read the answer as a Blob (spoken audio). */
export async function postForBlob(path, body, signal) {
  const h = { ...headers(true), Accept: "*/*" };
  const response = await send(path, { method: "POST", headers: h, body: JSON.stringify(body), signal });
  if (!response.ok) throw await errorOf(response);
  return response.blob();
}
