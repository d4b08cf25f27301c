// Charts as inline SVG, drawn here: a stacked bar chart of spend over time and a
// budget meter. No library: the axes, scales and colours below are all there is.

import { h, s, toDate, usd } from "./dom.js";

const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2",
                 "#db2777", "#65a30d", "#7c3aed", "#ea580c"];
const OTHER = "#94a3b8";
const MAX_GROUPS = PALETTE.length; // the rest are drawn together as "other"

/** Colours by group name: the largest groups keep the palette, the rest are "other"
 * (as is the server's own "other", the groups past those it named). */
function colours(series) {
  const totals = new Map();
  for (const point of series) {
    for (const g of point.groups) {
      if (!g.other) totals.set(g.name, (totals.get(g.name) || 0) + g.cost_usd);
    }
  }
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([name]) => name);
  const colour = new Map(ranked.slice(0, MAX_GROUPS).map((name, i) => [name, PALETTE[i]]));
  const folded = series.some((point) => point.groups.some((g) => g.other));
  return { colour, named: ranked.slice(0, MAX_GROUPS), other: folded || ranked.length > MAX_GROUPS };
}

/** A round upper bound and the ticks under it (0, ¼, ½, ¾, 1 of it). */
function scale(max) {
  if (max <= 0) return { top: 1, ticks: [0, 1] };
  const magnitude = 10 ** Math.floor(Math.log10(max));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((m) => m * 4 >= max);
  return { top: step * 4, ticks: [0, 1, 2, 3, 4].map((i) => i * step) };
}

function bucketLabel(t, bucket) {
  const d = toDate(t);
  if (bucket === "month") return d.toLocaleDateString("en-GB", { month: "short", year: "2-digit", timeZone: "UTC" });
  if (bucket === "day") return d.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
  return d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
}

/**
 * Spend per bucket, stacked by group: `series` as /admin/dashboard/spend gives it,
 * [{t, groups: [{name, cost_usd, requests}]}]. Returns a figure (the SVG and its legend).
 */
export function stackedBars(series, { bucket = "hour", width = 720, height = 260 } = {}) {
  const { colour, named, other } = colours(series);
  const totals = series.map((p) => p.groups.reduce((sum, g) => sum + g.cost_usd, 0));
  const { top, ticks } = scale(Math.max(0, ...totals));
  // Room on the left for the longest tick label ("$0.000400"), ~7 px a character.
  const widest = Math.max(...ticks.map((v) => usd(v).length));
  const pad = { left: Math.max(40, 7 * widest + 12), right: 8, top: 12, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const band = plotW / Math.max(series.length, 1);
  const barW = Math.max(1, band * 0.72);

  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
                         "aria-label": "Spend over time, stacked" });
  for (const v of ticks) {
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "gridline" }),
               s("text", { x: pad.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, usd(v)));
  }
  const every = Math.ceil(series.length / Math.max(1, Math.floor(plotW / 64)));
  series.forEach((point, i) => {
    const x = pad.left + i * band + (band - barW) / 2;
    let base = 0;
    const groups = [...point.groups].sort((a, b) => b.cost_usd - a.cost_usd);
    for (const g of groups) {
      if (g.cost_usd <= 0) continue;
      const fillColour = colour.get(g.name) || OTHER;
      svg.append(s("rect", { x, y: y(base + g.cost_usd), width: barW,
                             height: Math.max(0.5, y(base) - y(base + g.cost_usd)),
                             fill: fillColour, class: "bar", "data-group": g.name },
                   s("title", {}, `${bucketLabel(point.t, bucket)} · ${g.name}: ${usd(g.cost_usd)}, ${g.requests} requests`)));
      base += g.cost_usd;
    }
    if (i % every === 0) {
      svg.append(s("text", { x: x + barW / 2, y: height - 8, class: "tick", "text-anchor": "middle" },
                   bucketLabel(point.t, bucket)));
    }
  });
  svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), class: "axis" }));

  const legend = h("ul", { class: "legend" },
    named.map((name) => h("li", {}, swatch(colour.get(name)), name)),
    other ? h("li", {}, swatch(OTHER), "other") : null);
  return h("figure", { class: "chart-figure" }, svg, legend);
}

function swatch(colour) {
  return s("svg", { width: 10, height: 10, class: "swatch", "aria-hidden": "true" },
           s("rect", { width: 10, height: 10, rx: 2, fill: colour }));
}

/** How much of a budget is used: a bar, red past 90 %. */
export function meter(used, limit) {
  const fraction = limit > 0 ? Math.min(1, used / limit) : 0;
  return s("svg", { viewBox: "0 0 100 8", preserveAspectRatio: "none", class: "meter",
                    role: "img", "aria-label": `${Math.round(fraction * 100)} % used` },
           s("rect", { width: 100, height: 8, rx: 2, class: "meter-track" }),
           s("rect", { width: 100 * fraction, height: 8, rx: 2,
                       class: fraction >= 0.9 ? "meter-fill hot" : "meter-fill" }));
}
