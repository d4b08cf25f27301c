// Virtual keys (master only): list with what each has spent, create (the secret shown
// once, with a copy button), rotate, revoke — the admin API's /admin/keys.

import { api } from "./api.js";
import { count, empty, fill, h, table, usd, when } from "./dom.js";

const GRACES = [["0", "at once"], ["3600", "in 1 hour"], ["86400", "in 1 day"]];
const LIVE = new Set(["active", "rotating"]);

export function render(main, session) {
  if (session.role !== "master") {
    main.append(h("section", { class: "card" }, empty("Keys are managed with the master key.")));
    return;
  }
  const secretBox = h("section", { class: "card secret", hidden: true, "aria-live": "polite" });
  const table = h("div", { class: "table-wrap" }, empty("Loading…"));
  const error = h("p", { class: "error", role: "alert", hidden: true });

  const fail = (e) => {
    fill(error, e.message);
    error.hidden = false;
  };
  const showSecret = (title, answer) => {
    const code = h("code", { class: "new-secret" }, answer.key);
    const copied = h("span", { class: "copied", role: "status" });
    fill(secretBox,
      h("h2", {}, title),
      h("p", {}, "Shown once: the gateway keeps only its hash. Copy it now."),
      h("div", { class: "secret-line" }, code,
        h("button", { type: "button", class: "copy", onclick: async () => {
          try {
            await navigator.clipboard.writeText(answer.key);
            fill(copied, "Copied");
          } catch {
            getSelection().selectAllChildren(code); // no clipboard: select it to copy by hand
            fill(copied, "Selected: press Ctrl+C");
          }
        } }, "Copy"), copied),
      h("button", { type: "button", class: "quiet", onclick: () => { secretBox.hidden = true; secretBox.replaceChildren(); } },
        "I have stored it"));
    secretBox.hidden = false;
    secretBox.scrollIntoView({ block: "nearest" });
  };
  const refresh = async () => {
    try {
      const [keys, spend] = await Promise.all([api("/admin/keys"), api("/admin/spend?by=key")]);
      const spent = new Map(spend.data.map((row) => [row.group, row]));
      fill(table, keyTable(keys.data, spent, { showSecret, refresh, fail }));
      error.hidden = true;
    } catch (e) {
      fail(e);
    }
  };

  main.append(createForm({ showSecret, refresh, fail }), secretBox, error,
              h("section", { class: "card" }, h("h2", {}, "Keys"), table));
  refresh();
}

function list(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

function createForm(actions) {
  const field = (name, label, props = {}) => h("label", {}, label, h("input", { name, ...props }));
  const period = h("select", { name: "period" }, ["day", "month", "total"].map((p) => h("option", { value: p }, p)));
  const form = h("form", { class: "card create", onsubmit: async (event) => {
    event.preventDefault();
    const f = new FormData(form);
    const body = { name: f.get("name").trim() };
    for (const k of ["team", "user"]) if (f.get(k).trim()) body[k] = f.get(k).trim();
    if (list(f.get("models")).length) body.models = list(f.get("models"));
    if (f.get("usd")) body.budgets = [{ usd: Number(f.get("usd")), period: f.get("period") }];
    try {
      const answer = await api("/admin/keys", { method: "POST", body });
      form.reset();
      actions.showSecret(`New key “${answer.record.name}”`, answer);
      await actions.refresh();
    } catch (e) {
      actions.fail(e);
    }
  } },
    h("h2", {}, "Create a key"),
    h("div", { class: "fields" },
      field("name", "Name", { required: true, placeholder: "search-bot" }),
      field("team", "Team", { placeholder: "optional" }),
      field("user", "Owner", { placeholder: "optional" }),
      field("models", "Models", { placeholder: "all; or sim, openai/*" }),
      h("label", {}, "Budget (USD)", h("span", { class: "inline" },
        h("input", { name: "usd", type: "number", min: "0", step: "any", placeholder: "none" }), "per", period))),
    h("button", { type: "submit", id: "create-key" }, "Create key"));
  return form;
}

function keyTable(keys, spent, actions) {
  if (!keys.length) return empty("No keys yet: create the first above.");
  const sorted = [...keys].sort((a, b) => b.created_at - a.created_at);
  return table(["Name", "Key", "Id", "Team", "Status", "Spend", "Requests", "Created", ""], sorted, (k) => {
    const s = spent.get(k.lineage);
    const cell = h("td", { class: "row-actions" });
    if (LIVE.has(k.status)) rowActions(cell, k, actions);
    return [k.name || "–", h("code", {}, k.hint), h("code", {}, k.id), k.team || "–",
            h("span", { class: `status ${k.status}` }, k.status),
            h("td", { "data-col": "spend" }, usd(s ? s.cost_usd : 0)),
            h("td", { "data-col": "requests" }, count(s ? s.requests : 0)),
            when(k.created_at), cell];
  }, (k) => ({ "data-key-id": k.id }), { class: "keys" });
}

function rowActions(cell, key, actions) {
  const act = async (path, body) => {
    try {
      return await api(`/admin/keys/${key.id}/${path}`, { method: "POST", body });
    } catch (e) {
      actions.fail(e);
      return null;
    } finally {
      await actions.refresh();
    }
  };
  const idle = () => fill(cell,
    h("button", { type: "button", class: "quiet", onclick: confirmRotate }, "Rotate"),
    h("button", { type: "button", class: "quiet danger", onclick: confirmRevoke }, "Revoke"));
  const confirmRotate = () => {
    const grace = h("select", { "aria-label": "The old key stops" },
      GRACES.map(([v, label]) => h("option", { value: v }, `old key stops ${label}`)));
    grace.value = "3600";
    fill(cell, grace,
      h("button", { type: "button", onclick: async () => {
        const answer = await act("rotate", { grace_seconds: Number(grace.value) });
        if (answer) actions.showSecret(`Rotated “${answer.record.name}”: its new key`, answer);
      } }, "Rotate now"),
      h("button", { type: "button", class: "quiet", onclick: idle }, "Cancel"));
  };
  const confirmRevoke = () => fill(cell,
    h("button", { type: "button", class: "danger", onclick: () => act("revoke", {}) }, "Revoke for good"),
    h("button", { type: "button", class: "quiet", onclick: idle }, "Cancel"));
  idle();
}
