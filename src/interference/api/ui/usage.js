// Usage in the Keys & usage view: GET /usage for a range of days, drawn as spend and tokens per
// day (by key or by model, charts.js) and summed in a table. Keys are named by their alias
// (from /key/list) where they have one, else by a short digest.

import { getJson } from "./api.js";
import { count, daysBetween, drawBarChart, topSeries, usd } from "./charts.js";

const $ = (id) => document.getElementById(id);
const DAY_MS = 86400000;
const NOT_VIRTUAL = "master or configured keys";
const state = { by: "key", answer: null, names: new Map(), aliases: new Set() };

function isoDay(at) {
  return new Date(at).toISOString().slice(0, 10);
}

/** Remember the aliases of the listed keys (by digest prefix, as /usage names keys). */
export function setKeyNames(keys) {
  state.names = new Map();
  state.aliases = new Set();
  for (const key of keys) {
    if (!key.key_alias) continue;
    state.names.set(key.token, key.key_alias);
    state.names.set(key.token.slice(0, 16), key.key_alias);
    state.aliases.add(key.key_alias);
  }
  if (state.answer) render();
}

function keyLabel(name) {
  if (!name) return NOT_VIRTUAL;
  if (state.names.has(name)) return state.names.get(name);
  if (!state.aliases.has(name) && /^[0-9a-f]{16,}$/.test(name)) return `${name.slice(0, 12)}…`;
  return name;
}

function groupOf(row) {
  return state.by === "key" ? keyLabel(row.key) : String(row.model || "–");
}

export async function loadUsage(onError) {
  const start = $("usage-start").value;
  const end = $("usage-end").value;
  if (!start || !end || start > end) {
    onError(new Error("Pick a first day on or before the last day."));
    return;
  }
  try {
    const query = new URLSearchParams({ start_date: start, end_date: end });
    state.answer = await getJson(`/usage?${query}`);
    render();
  } catch (error) {
    onError(error);
  }
}

function seriesOf(days, groups, measure) {
  const index = new Map(days.map((day, i) => [day, i]));
  const series = new Map();
  for (const row of state.answer.data || []) {
    const name = groupOf(row);
    if (!groups.has(name)) continue;
    if (!series.has(name)) series.set(name, { name, values: days.map(() => 0) });
    const at = index.get(row.day);
    if (at !== undefined) series.get(name).values[at] += measure(row);
  }
  return [...series.values()];
}

function render() {
  const answer = state.answer;
  const rows = answer.data || [];
  const days = daysBetween(answer.start_date, answer.end_date);
  const sums = new Map();
  for (const row of rows) {
    const name = groupOf(row);
    const sum = sums.get(name) || { requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, cost: 0 };
    for (const field of Object.keys(sum)) sum[field] += Number(row[field]) || 0;
    sums.set(name, sum);
  }
  const groups = new Set(sums.keys());
  // one colour per group in both charts: ordered by cost, then requests
  const order = [...sums.entries()].sort((a, b) => b[1].cost - a[1].cost || b[1].requests - a[1].requests);
  const ranked = (series) => {
    const rank = new Map(order.map(([name], i) => [name, i]));
    return series.sort((a, b) => rank.get(a.name) - rank.get(b.name));
  };
  const spend = topSeries(ranked(seriesOf(days, groups, (r) => Number(r.cost) || 0)));
  const tokens = topSeries(ranked(seriesOf(days, groups, (r) => (r.prompt_tokens || 0) + (r.completion_tokens || 0))));
  drawBarChart($("chart-spend"), { days, series: spend, format: usd, unit: "USD" });
  drawBarChart($("chart-tokens"), { days, series: tokens, format: count, unit: "tokens" });

  $("usage-group-head").textContent = state.by;
  const body = $("usage-totals").tBodies[0];
  body.replaceChildren(...order.map(([name, sum]) => totalsRow(name, sum, "td")));
  const total = answer.total || {};
  $("usage-totals").tFoot.replaceChildren(totalsRow("total", total, "th"));
  const requests = Number(total.requests) || 0;
  $("usage-summary").textContent =
    `${answer.start_date} to ${answer.end_date} (UTC days): ${requests} request${requests === 1 ? "" : "s"}, ` +
    `${usd(Number(total.cost) || 0)}` +
    (rows.length ? "" : ". No usage recorded in this range.");
}

function totalsRow(name, sum, tag) {
  const row = document.createElement("tr");
  const values = [
    name,
    sum.requests ?? 0,
    sum.errors ?? 0,
    (sum.prompt_tokens ?? 0).toLocaleString(),
    (sum.completion_tokens ?? 0).toLocaleString(),
    usd(Number(sum.cost) || 0),
  ];
  values.forEach((value, i) => {
    const cell = document.createElement(i === 0 ? "th" : tag === "th" ? "th" : "td");
    if (i === 0) cell.scope = "row";
    cell.textContent = String(value);
    if (i > 0) cell.className = "number";
    row.append(cell);
  });
  return row;
}

function groupBy(by) {
  state.by = by;
  $("usage-by-key").setAttribute("aria-pressed", String(by === "key"));
  $("usage-by-model").setAttribute("aria-pressed", String(by === "model"));
  if (state.answer) render();
}

export function bindUsage(onError, onLoad) {
  const today = Date.now();
  $("usage-end").value = isoDay(today);
  $("usage-start").value = isoDay(today - 29 * DAY_MS);
  $("usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    onLoad();
    loadUsage(onError);
  });
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized); // the charts are drawn at their width: again once it settles
    resized = setTimeout(() => state.answer && !$("keys-view").hidden && render(), 200);
  });
  $("usage-by-key").addEventListener("click", () => groupBy("key"));
  $("usage-by-model").addEventListener("click", () => groupBy("model"));
}
