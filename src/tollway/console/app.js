// The console: who is signed in, which page shows, the sign-in form.
// Pages are modules with one function, render(main, session), that may return a
// function to call when the page is left (to stop its timers).

import { api } from "./api.js";
import { empty, fill, h } from "./dom.js";
import * as dashboard from "./dashboard.js";
import * as keys from "./keys.js";
import * as playground from "./playground.js";

const PAGES = { playground, dashboard, keys };
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const banner = document.getElementById("banner");

let session = null; // GET /console/session: {signed_in, role, key, open, admin}
let leave = null;

function pageName() {
  const name = location.hash.replace(/^#\//, "");
  return name in PAGES ? name : "playground";
}

/** May this visitor use the console without signing in? (An open gateway.) */
function admitted() {
  return session.signed_in || session.open;
}

function render() {
  if (leave) leave();
  leave = null;
  showHeader();
  if (!admitted() || location.hash === "#/sign-in") {
    fill(main, signInForm());
    return;
  }
  const name = pageName();
  for (const a of nav.querySelectorAll("a")) {
    a.classList.toggle("active", a.dataset.page === name);
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  leave = PAGES[name].render(main, session) || null;
}

function showHeader() {
  nav.hidden = !admitted();
  nav.querySelector('[data-page="keys"]').hidden = session.role !== "master";
  if (session.open && !session.signed_in) {
    banner.hidden = false;
    fill(banner, "This gateway is open: no master key is configured, so anyone who can reach it may call it. ",
         "Set TOLLWAY_MASTER_KEY to require keys.");
  } else {
    banner.hidden = true;
  }
  const label = session.role === "master" ? "Master key"
    : session.role === "key" ? `${session.key.name || session.key.id} (${session.key.hint})` : null;
  fill(who,
       label ? h("span", { class: "signed-in", title: "Signed in as" }, label) : null,
       label ? h("button", { class: "quiet", type: "button", onclick: signOut }, "Sign out")
             : admitted() ? h("a", { href: "#/sign-in", class: "button quiet" }, "Sign in") : null);
}

function signInForm() {
  const input = h("input", { type: "password", name: "key", id: "key", required: true,
                             autocomplete: "off", spellcheck: "false",
                             placeholder: "tw-… or the master key" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card sign-in", method: "post", action: "/console/session",
    onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      error.hidden = true;
      try {
        session = await api("/console/session", { method: "POST", body: { key: input.value } });
        input.value = "";
        if (location.hash === "#/sign-in") history.replaceState(null, "", "#/playground");
        render();
      } catch (e) {
        fill(error, e.message);
        error.hidden = false;
      } finally {
        button.disabled = false;
      }
    } },
    h("h1", {}, "Sign in"),
    h("label", { for: "key" }, "API key"),
    input,
    button,
    error,
    h("p", { class: "hint" },
      "The master key shows everything; a virtual key (tw-…) its own playground and spend. ",
      "The key is sent once to open a session and is not kept by this page: the session lives in a cookie scripts cannot read."));
  return form;
}

async function signOut() {
  session = await api("/console/session", { method: "DELETE" });
  history.replaceState(null, "", "#/playground");
  render();
}

window.addEventListener("hashchange", render);
window.addEventListener("tollway:signed-out", async () => {
  const before = session;
  session = await api("/console/session");
  if (before && before.signed_in && !session.signed_in) render();
});

try {
  session = await api("/console/session");
  render();
} catch (e) {
  fill(main, empty(`The console cannot reach the gateway: ${e.message}`));
}
