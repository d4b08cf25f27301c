// The dashboard: spend over time (stacked, bucket and grouping chosen here), the
// figures and top spenders, budgets, alerts and a live tail of the ledger — from
// /admin/dashboard/* (the master sees everything, a virtual key its own). Each panel
// loads on its own; one the gateway does not serve says so and the rest still work.

import { api, query } from "./api.js";
import { meter, stackedBars } from "./chart.js";
import { count, empty, fill, h, ms, percent, table, usd, when } from "./dom.js";

const RANGES = { "24h": [86400, "hour"], "7d": [7 * 86400, "day"], "30d": [30 * 86400, "day"],
                 "12mo": [365 * 86400, "month"] };
const TAIL_EVERY_MS = 4000;

function select(id, label, options, value) {
  const el = h("select", { id, "aria-label": label },
    options.map(([v, text]) => h("option", { value: v }, text)));
  el.value = value;
  return h("label", {}, label, el);
}

function panel(title, id) {
  const body = h("div", { class: "panel-body" }, empty("Loading…"));
  return { el: h("section", { class: "card panel", id }, h("h2", {}, title), body), body };
}

/** What a panel shows when its endpoint failed: the gateway may not have it yet. */
function unavailable(e) {
  if (e.status === 404) return empty("Not available on this gateway yet.");
  if (e.status === 401 || e.status === 403) return empty(`Not available to this key: ${e.message}`);
  return empty(`Could not load: ${e.message}`);
}

export function render(main, session) {
  if (!session.signed_in) {
    main.append(h("section", { class: "card" }, empty(session.admin
      ? "Sign in to see spend." : "The dashboard reads the admin API, which needs a master key (TOLLWAY_MASTER_KEY).")));
    return null;
  }
  const controls = h("form", { class: "card controls", onsubmit: (e) => e.preventDefault() },
    select("range", "Range", [["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"], ["12mo", "Last 12 months"]], "24h"),
    select("bucket", "Bucket", [["hour", "Hour"], ["day", "Day"], ["month", "Month"]], "hour"),
    select("stack", "Stack by", [["model", "Model"], ["key", "Key"], ["team", "Team"], ["feature", "Feature"], ["user", "User"], ["none", "Nothing"]], "model"),
    h("p", { class: "hint wide" }, "Times are UTC, as the ledger and the budgets' periods count them."));
  const spend = panel("Spend", "spend");
  const stats = panel("Figures", "stats");
  const top = panel("Top spenders", "top");
  const budgets = panel("Budgets", "budgets");
  const alerts = panel("Alerts", "alerts");
  const tail = panel("Live tail", "tail");
  const filters = h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    h("input", { name: "model", placeholder: "model", "aria-label": "Filter by model" }),
    h("input", { name: "key", placeholder: "key id", "aria-label": "Filter by key" }),
    select("status", "Status", [["", "any"], ["ok", "ok"], ["error", "error"]], ""));
  tail.el.insertBefore(filters, tail.body);
  const updated = h("p", { class: "hint", role: "status" });
  tail.el.append(updated);

  main.append(controls, h("div", { class: "grid" }, spend.el, stats.el), top.el,
              h("div", { class: "grid" }, budgets.el, alerts.el), tail.el);

  const value = (id) => controls.querySelector(`#${id}`).value;
  const loadSpend = async () => {
    const [seconds] = RANGES[value("range")];
    const until = new Date();
    const since = new Date(until.getTime() - seconds * 1000);
    try {
      const data = await api("/admin/dashboard/spend" + query({
        bucket: value("bucket"), stack: value("stack"),
        since: since.toISOString(), until: until.toISOString() }));
      const total = h("p", { class: "total" }, h("strong", { "data-total": "" }, usd(data.total.cost_usd)),
                      ` · ${count(data.total.requests)} requests`);
      // Drawn at the panel's own width, so its text keeps its size on a phone.
      const width = Math.max(320, spend.body.clientWidth);
      fill(spend.body, total, data.series.length
        ? stackedBars(data.series, { bucket: value("bucket"), width, height: width < 500 ? 220 : 260 })
        : empty("No spend in this range."));
    } catch (e) {
      fill(spend.body, unavailable(e));
    }
  };
  controls.querySelector("#range").addEventListener("change", () => {
    controls.querySelector("#bucket").value = RANGES[value("range")][1];
    loadSpend();
  });
  for (const id of ["bucket", "stack"]) controls.querySelector(`#${id}`).addEventListener("change", loadSpend);

  const loadStats = async () => {
    try {
      const d = await api("/admin/dashboard/stats");
      fill(stats.body, h("div", { class: "figures" },
        figure("requests", "Requests", count(d.requests)),
        figure("errors", "Errors", `${count(d.errors)} (${percent(d.error_rate)})`),
        figure("cost", "Cost", usd(d.cost_usd)),
        figure("latency", "Latency p50 / p95", `${ms(d.latency_ms.p50)} / ${ms(d.latency_ms.p95)}`),
        figure("ttft", "First token p50 / p95", `${ms(d.ttft_ms.p50)} / ${ms(d.ttft_ms.p95)}`),
        figure("cache", "Cache hits", `${count(d.cache.hits)} (${percent(d.cache.hit_rate)}) · saved ${usd(d.cache.saved_usd)}`),
        figure("tokens", "Tokens in / out", `${count(d.tokens.input)} / ${count(d.tokens.output)}`)));
      fill(top.body, h("div", { class: "tops" },
        ["key", "user", "feature", "model"].map((by) => topTable(by, (d.top && d.top[by]) || []))));
    } catch (e) {
      fill(stats.body, unavailable(e));
      fill(top.body, unavailable(e));
    }
  };
  const loadBudgets = async () => {
    try {
      const rows = await api("/admin/dashboard/budgets");
      fill(budgets.body, rows.length ? budgetTable(rows) : empty("No budgets apply."));
    } catch (e) {
      fill(budgets.body, unavailable(e));
    }
  };
  const loadAlerts = async () => {
    try {
      const { data } = await api("/admin/dashboard/alerts");
      fill(alerts.body, data.length ? h("ul", { class: "alerts" }, data.map((a) => h("li", {},
        h("time", {}, when(a.at)), " ", h("strong", {}, a.rule), ` (${a.scope}) `, a.message)))
        : empty("No alerts."));
    } catch (e) {
      fill(alerts.body, unavailable(e));
    }
  };

  // The tail refreshes every few seconds while the page shows (never overlapping).
  let timer = null;
  let left = false;
  const loadTail = async () => {
    clearTimeout(timer);
    const f = new FormData(filters);
    try {
      const { data } = await api("/admin/dashboard/tail" + query({
        limit: 50, model: f.get("model").trim(), key: f.get("key").trim(), status: f.get("status") }));
      if (left) return;
      fill(tail.body, data.length ? tailTable(data) : empty("No requests match."));
      fill(updated, `Updated ${new Date().toLocaleTimeString("en-GB", { hour12: false })}`);
    } catch (e) {
      if (left) return;
      fill(tail.body, unavailable(e));
      if (e.status === 404) return; // not served: asking again will not change that
    }
    if (!left) timer = setTimeout(loadTail, TAIL_EVERY_MS);
  };
  filters.addEventListener("change", loadTail);

  loadSpend();
  loadStats();
  loadBudgets();
  loadAlerts();
  loadTail();
  return () => {
    left = true;
    clearTimeout(timer);
  };
}

function figure(name, label, value) {
  return h("div", { class: "figure", "data-figure": name }, h("span", { class: "label" }, label), h("strong", {}, value));
}

function topTable(by, rows) {
  return h("div", { class: "top-table", "data-top": by },
    h("h3", {}, `By ${by}`),
    rows.length ? h("table", {}, h("tbody", {}, rows.map((r) => h("tr", {},
      h("td", {}, r.name), h("td", { class: "num" }, usd(r.cost_usd)), h("td", { class: "num" }, count(r.requests))))))
      : empty("Nothing yet."));
}

function budgetTable(rows) {
  return h("div", { class: "table-wrap" }, table(["Budget", "Period", "Used", "", "Left", "Resets"], rows, (b) => {
    const amount = (v) => (b.metric === "usd" ? usd(v) : `${count(v)} tokens`);
    return [`${b.scope} ${b.name}`, b.period,
            h("td", { class: "num" }, `${amount(b.used)} of ${amount(b.limit)}`),
            h("td", { class: "meter-cell" }, meter(b.used, b.limit)),
            h("td", { class: "num" }, amount(b.remaining)),
            b.resets_at ? when(b.resets_at) : "never"];
  }, (b) => ({ "data-budget": `${b.scope}/${b.name}` })));
}

function tailTable(rows) {
  return h("div", { class: "table-wrap" }, table(["Time", "Model", "Key", "Status", "Tokens", "Cost", "Latency", "Cache"], rows, (r) => [
    when(r.ts), r.model || r.model_asked || "–", r.key_id || "–", `${r.status} ${r.outcome}`,
    h("td", { class: "num" }, `${count(r.input_tokens)} / ${count(r.output_tokens)}`),
    h("td", { class: "num" }, r.priced === false ? "unpriced" : usd(r.cost_usd)),
    h("td", { class: "num" }, ms(r.latency_ms)), r.cache || "–",
  ], (r) => ({ "data-request-id": r.request_id, class: r.status >= 400 ? "failed" : null }), { class: "tail" }));
}
