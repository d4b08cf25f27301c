// Building the page without innerHTML: every node is made here, so nothing a gateway
// or a model returns is ever parsed as markup (and the CSP needs no 'unsafe-inline').

const SVG_NS = "http://www.w3.org/2000/svg";

// Non-string values of HTML elements' own properties (checked, disabled, value…) are
// set as properties; everything else, and every SVG attribute, as an attribute.
function build(el, props, children, asAttributes = false) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (!asAttributes && name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: h("button", {class: "x", onclick: f}, "Send"). */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, attributes as given. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children, true);
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function usd(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (value === "unpriced") return "unpriced";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (n === 0) return "$0";
  if (Math.abs(n) < 0.01) return "$" + n.toPrecision(3);
  return "$" + n.toFixed(2);
}

export function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export function ms(n) {
  if (n === null || n === undefined) return "–";
  return n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms";
}

export function percent(fraction) {
  return fraction === null || fraction === undefined ? "–" : (100 * fraction).toFixed(1) + " %";
}

/** A time as the contract may give it: epoch seconds (or ms), or an ISO string. */
export function toDate(t) {
  if (typeof t === "number") return new Date(t > 1e12 ? t : t * 1000);
  const asNumber = Number(t);
  return Number.isFinite(asNumber) ? toDate(asNumber) : new Date(t);
}

/** A time in UTC, as the ledger and the budgets' periods count it. */
export function when(t) {
  const d = toDate(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toLocaleString("en-GB", { hour12: false, timeZone: "UTC" }) + " UTC";
}

export function randomId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A panel that says there is nothing (yet), and why. */
export function empty(message) {
  return h("p", { class: "empty" }, message);
}

/** A table whose rows become labelled cards on a phone (console.css): each cell
 * carries its column's name. `cells(row)` gives a row's cells, `rowProps(row)` its
 * attributes. */
export function table(columns, rows, cells, rowProps = () => ({}), props = {}) {
  return h("table", { ...props, class: `cards ${props.class || ""}`.trim() },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((row) => h("tr", rowProps(row), cells(row).map((cell, i) => {
      const td = cell instanceof HTMLTableCellElement ? cell : h("td", {}, cell);
      if (columns[i]) td.dataset.label = columns[i];
      return td;
    })))));
}
