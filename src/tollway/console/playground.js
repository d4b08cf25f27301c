// The playground: a chat streamed token by token from /v1/chat/completions, with what
// each reply cost and how it was answered (the x-tollway-* reply headers and the
// stream's cost trailer), Stop (or Esc) to abort it, server-side memory, and a second
// model side by side.

import { ApiError, api, gatewayNow, query, send } from "./api.js";
import { count, empty, fill, h, ms, randomId, usd } from "./dom.js";
import { costTrailer, events } from "./sse.js";

// Kept while the page is away, so a chat (and a reply still streaming) survives a
// visit to another page; started afresh for another signed-in identity.
const state = { owner: null, models: null, system: "", memory: false, compare: "",
                lanes: [], controller: null, setBusy: () => {} };

function newLane(model) {
  const lane = { model, history: [], conversation: null, spent: 0, replies: 0 };
  lane.log = h("div", { class: "log", "aria-live": "polite" });
  lane.title = h("span", { class: "lane-model" });
  lane.total = h("span", { class: "lane-total", "data-lane-total": "" });
  lane.el = h("section", { class: "lane" }, h("header", { class: "lane-head" }, lane.title, lane.total), lane.log);
  showLane(lane);
  return lane;
}

function showLane(lane) {
  fill(lane.title, lane.model);
  fill(lane.total, `${usd(lane.spent)} · ${lane.replies} ${lane.replies === 1 ? "reply" : "replies"}`);
}

/** A new chat: fresh lanes (one, or two to compare), new conversation ids. */
function restart() {
  if (state.controller) state.controller.abort();
  const models = [state.lanes[0]?.model || state.models?.[0] || ""];
  if (state.compare) models.push(state.compare);
  state.lanes = models.map(newLane);
}

export function render(main, session) {
  const owner = session.role === "key" ? session.key.id : session.role || "open";
  if (state.owner !== owner) {
    if (state.controller) state.controller.abort();
    Object.assign(state, { owner, models: null, lanes: [], compare: "", memory: false });
  }
  const lanes = h("div", { class: "lanes" });
  const model = h("select", { id: "model", "aria-label": "Model" });
  const compare = h("select", { id: "compare", "aria-label": "Compare with" });
  const memory = h("input", { type: "checkbox", id: "memory", checked: state.memory });
  const system = h("textarea", { id: "system", rows: 2, placeholder: "You are a helpful assistant.",
                                 value: state.system, oninput: () => { state.system = system.value; } });
  const input = h("textarea", { id: "prompt", rows: 3, placeholder: "Message — Enter sends, Shift+Enter is a new line, Esc stops",
                                "aria-label": "Message" });
  const sendButton = h("button", { type: "submit", id: "send" }, "Send");
  const stopButton = h("button", { type: "button", id: "stop", class: "danger", disabled: true,
                                   onclick: () => stop() }, "Stop");
  const status = h("p", { class: "status", role: "status" });

  const showLanes = () => {
    fill(lanes, state.lanes.map((l) => l.el));
    lanes.classList.toggle("two", state.lanes.length > 1);
  };
  const setBusy = (busy) => {
    sendButton.disabled = busy;
    stopButton.disabled = !busy;
  };
  const submit = async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || state.controller || !state.lanes.length) return;
    input.value = "";
    const controller = (state.controller = new AbortController());
    state.setBusy(true);
    await Promise.all(state.lanes.map((lane) => turn(lane, text, controller.signal)));
    state.controller = null;
    state.setBusy(false); // the page shown now, which may not be the one that sent
    input.focus();
  };
  const onKey = (event) => {
    if (event.key === "Escape") stop();
  };

  model.addEventListener("change", () => {
    for (const lane of state.lanes.slice(0, 1)) { lane.model = model.value; showLane(lane); }
  });
  compare.addEventListener("change", () => {
    state.compare = compare.value;
    restart();
    showLanes();
  });
  memory.addEventListener("change", () => {
    state.memory = memory.checked;
    restart();
    showLanes();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) submit(event);
  });

  main.append(
    h("form", { class: "card controls", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Model", model),
      h("label", {}, "Compare with", compare),
      h("label", { class: "check" }, memory, "Server-side memory"),
      h("button", { type: "button", class: "quiet", id: "new-chat", onclick: () => { restart(); showLanes(); } }, "New chat"),
      h("label", { class: "wide" }, "System prompt", system)),
    lanes,
    h("form", { class: "card composer", onsubmit: submit }, input, h("div", { class: "actions" }, sendButton, stopButton)),
    status);
  document.addEventListener("keydown", onKey);
  state.setBusy = setBusy;
  setBusy(state.controller !== null);

  loadModels().then((names) => {
    if (!names.length) {
      fill(lanes, empty("This gateway serves no chat models to this key."));
      sendButton.disabled = true;
      return;
    }
    fill(model, names.map((n) => h("option", { value: n }, n)));
    fill(compare, h("option", { value: "" }, "— none —"), names.map((n) => h("option", { value: n }, n)));
    if (!state.lanes.length) state.lanes = [newLane(names[0])];
    model.value = state.lanes[0].model;
    compare.value = state.compare;
    showLanes();
  }).catch((e) => fill(status, `Models could not be listed: ${e.message}`));

  return () => document.removeEventListener("keydown", onKey);
}

async function loadModels() {
  if (!state.models) {
    const list = await api("/v1/models");
    // Embedding models say their dimensions; they do not chat.
    state.models = list.data.filter((m) => m.dimensions === undefined).map((m) => m.id);
  }
  return state.models;
}

function stop() {
  if (state.controller) state.controller.abort();
}

/** One reply in one lane: sent, streamed into the page, then what it cost. */
async function turn(lane, text, signal) {
  lane.history.push({ role: "user", content: text });
  lane.log.append(h("div", { class: "msg user" }, text));
  const body = h("div", { class: "msg-text" });
  const meta = h("dl", { class: "meta" });
  const bubble = h("div", { class: "msg assistant streaming" }, body, meta);
  lane.log.append(bubble);
  bubble.scrollIntoView({ block: "nearest" });

  if (state.memory && !lane.conversation) lane.conversation = randomId("console-");
  const messages = state.system ? [{ role: "system", content: state.system }] : [];
  // With memory the gateway keeps the history: only the new turn goes.
  messages.push(...(lane.conversation ? [{ role: "user", content: text }] : lane.history));
  const requestId = randomId("console_");
  const headers = { "x-request-id": requestId };
  if (lane.conversation) headers["x-tollway-conversation"] = lane.conversation;

  const sentAt = gatewayNow();
  const started = performance.now();
  const got = { text: "", ttft: null, trailer: null, headers: null, stopped: false, error: null };
  try {
    const response = await send("/v1/chat/completions", {
      method: "POST", headers, signal,
      body: { model: lane.model, messages, stream: true },
    });
    got.headers = response.headers;
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    for await (const event of events(response.body)) {
      if (event.comment) got.trailer = costTrailer(event.comment) || got.trailer;
      if (!event.data || event.data === "[DONE]") continue;
      const chunk = JSON.parse(event.data);
      if (chunk.error) throw new ApiError(502, chunk); // an error after the stream began
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
      if (delta) {
        if (got.ttft === null) got.ttft = performance.now() - started;
        got.text += delta;
        body.textContent = got.text;
      }
    }
  } catch (e) {
    if (e.name === "AbortError") got.stopped = true;
    else got.error = e;
  }
  const latency = performance.now() - started;
  bubble.classList.remove("streaming");
  if (got.text) lane.history.push({ role: "assistant", content: got.text });
  else lane.history.pop(); // nothing came back: the turn is not part of the chat
  if (got.error) bubble.append(h("p", { class: "error", role: "alert" }, got.error.message));
  if (got.stopped) bubble.classList.add("stopped");

  let cost = got.trailer;
  if (got.stopped) {
    fill(meta, item("stopped", "Stopped", "finding what it cost…"));
    cost = await stoppedCost(requestId, sentAt);
  }
  fill(meta, details(got, cost, latency));
  if (cost && cost.cost_usd !== undefined && cost.cost_usd !== "unpriced") {
    lane.spent += Number(cost.cost_usd);
  }
  lane.replies += 1;
  showLane(lane);
}

/** A stopped stream never got its trailer: its ledger row says what it cost. */
async function stoppedCost(requestId, sentAt) {
  try {
    const { data } = await api(`/console/requests/${requestId}` + query({ at: sentAt.toFixed(3) }));
    if (!data) return null;
    return { cost_usd: data.priced ? data.cost_usd : "unpriced", input_tokens: data.input_tokens,
             output_tokens: data.output_tokens, estimated: data.estimated ? "true" : undefined };
  } catch {
    return null;
  }
}

function item(name, label, value) {
  return h("div", { class: "meta-item", "data-meta": name }, h("dt", {}, label), h("dd", {}, value));
}

/** Everything the reply says about itself. */
function details(got, cost, latency) {
  const header = (name) => (got.headers ? got.headers.get(name) : null);
  const out = [];
  if (got.stopped) out.push(item("stopped", "Stopped", "cost so far"));
  if (cost) {
    out.push(item("cost", "Cost", usd(cost.cost_usd) + (cost.estimated ? " (estimated)" : "")));
    if (cost.input_tokens !== undefined) { // a cache hit used none
      out.push(item("tokens", "Tokens", `${count(cost.input_tokens)} in · ${count(cost.output_tokens)} out`));
    }
    if (cost.saved_usd) out.push(item("saved", "Saved", usd(cost.saved_usd)));
  } else if (got.stopped) {
    out.push(item("cost", "Cost", "not known yet"));
  }
  out.push(item("latency", "Latency", ms(latency)));
  if (got.ttft !== null) out.push(item("ttft", "First token", ms(got.ttft)));
  if (header("x-tollway-model")) {
    out.push(item("deployment", "Answered by", `${header("x-tollway-model")} (${header("x-tollway-provider")})`));
  }
  if (header("x-tollway-cache")) out.push(item("cache", "Cache", header("x-tollway-cache")));
  out.push(item("guards", "Guards", header("x-tollway-guards") || "nothing redacted"));
  if (header("x-tollway-tier")) {
    const from = header("x-tollway-downgraded-from");
    const why = [header("x-tollway-downgrade-reason"), header("x-tollway-route-reason")].filter(Boolean).join(", ");
    out.push(item("tier", "Tier", header("x-tollway-tier") + (from ? ` (from ${from})` : "") + (why ? ` — ${why}` : "")));
  }
  if (header("x-tollway-degraded")) {
    out.push(item("degraded", "Degraded", `${header("x-tollway-degraded")} (${header("x-tollway-degrade-budget")})`));
  }
  if (header("x-tollway-max-tokens-clamped")) out.push(item("clamped", "max_tokens lowered", header("x-tollway-max-tokens-clamped")));
  if (header("x-tollway-conversation")) {
    const history = header("x-tollway-history-tokens");
    out.push(item("memory", "Memory", header("x-tollway-conversation") + (history ? ` · ${count(history)} history tokens` : "")));
  }
  if (header("x-tollway-budget-remaining-usd")) out.push(item("budget", "Budget left", usd(header("x-tollway-budget-remaining-usd"))));
  return out;
}
