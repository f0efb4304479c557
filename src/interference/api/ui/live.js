// The Status view's live charts: the server's last 15 minutes in 10-second buckets
// (GET /v1/status/recent: every key's requests, so the master key's figures), read every few
// seconds while the view is shown and the tab is visible, and drawn as line charts
// (linechart.js): requests per second and output tokens per second per model, time to first
// token (p50 and p95) per model, failed upstream attempts per deployment.

import { ApiError, getJson } from "./api.js";
import { PALETTE } from "./charts.js";
import { drawLineChart, hhmmss, short } from "./linechart.js";

const REFRESH_MS = 5000;
const OTHER = "#9a9ea6";
const $ = (id) => document.getElementById(id);
let shown = false;
let timer = null;
let controller = null;

/** Start (shown) or stop reading the figures. */
export function showLive(visible) {
  shown = visible;
  schedule();
}

/** Read every few seconds while the view is shown and the tab visible; else not at all. */
function schedule() {
  const run = shown && document.visibilityState === "visible";
  if (run && timer === null) {
    load();
    timer = setInterval(load, REFRESH_MS);
  } else if (!run && timer !== null) {
    clearInterval(timer);
    timer = null;
    if (controller) controller.abort();
    controller = null;
  }
}

document.addEventListener("visibilitychange", schedule);

function setState(state, text) {
  const section = $("live");
  section.dataset.state = state;
  $("live-charts").hidden = state !== "charts";
  $("live-empty").hidden = state !== "empty";
  $("live-denied").hidden = state !== "denied";
  const error = $("live-error");
  error.hidden = state !== "error";
  error.textContent = state === "error" ? text : "";
}

async function load() {
  if (controller) return; // the last reading is still on its way
  const mine = new AbortController();
  controller = mine;
  try {
    const answer = await getJson("/v1/status/recent", mine.signal);
    if (shown && controller === mine) render(answer);
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      setState("denied");
      $("live-summary").textContent = "";
    } else {
      const why = error instanceof ApiError ? `${error.status ? `${error.status}: ` : ""}${error.message}` : String(error);
      setState("error", `Live charts unavailable: ${why}`);
    }
  } finally {
    if (controller === mine) controller = null;
  }
}

/** Names ranked by `total` (largest first), each with a colour; past the palette, "others". */
function ranked(totals) {
  const names = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || a.localeCompare(b));
  const kept = names.length <= PALETTE.length ? names : names.slice(0, PALETTE.length - 1);
  return { kept: kept.map((name, i) => ({ name, color: PALETTE[i] })), rest: names.slice(kept.length) };
}

/** One series per kept name, and the rest summed (when `sum`) as one grey series. */
function seriesOf(points, { kept, rest }, value, sum = true) {
  const series = kept.map(({ name, color }) => ({ name, color, values: points.map((p) => value(p, name)) }));
  if (rest.length && sum) {
    const values = points.map((p) => rest.reduce((total, name) => total + (value(p, name) || 0), 0));
    series.push({ name: `${rest.length} others`, color: OTHER, values });
  }
  return series;
}

function render(answer) {
  const points = answer.points || [];
  const step = answer.bucket_s || 10;
  const minutes = Math.round((answer.window_s || step * points.length) / 60);
  const times = points.map((p) => p.t);
  const requests = new Map();
  const failures = new Map();
  let errors = 0;
  for (const point of points) {
    for (const [name, m] of Object.entries(point.models || {})) {
      requests.set(name, (requests.get(name) || 0) + Math.round(m.requests_per_s * step));
      errors += m.errors || 0;
    }
    for (const [name, count] of Object.entries(point.deployments || {})) {
      failures.set(name, (failures.get(name) || 0) + count);
    }
  }
  const updated = `updated ${hhmmss(Date.now() / 1000)}`;
  if (!requests.size && !failures.size) {
    $("live-empty").textContent = `No requests in the last ${minutes} minutes.`;
    $("live-summary").textContent = updated;
    setState("empty");
    return;
  }
  const total = [...requests.values()].reduce((a, b) => a + b, 0);
  const failed = [...failures.values()].reduce((a, b) => a + b, 0);
  $("live-summary").textContent = [
    `${total} requests`,
    `${errors} answered with an error`,
    `${failed} failed upstream attempts in the last ${minutes} minutes`,
    updated,
  ].join(" · ");
  setState("charts");

  const models = ranked(requests);
  const field = (key) => (p, name) => (p.models && p.models[name] ? p.models[name][key] : 0);
  drawLineChart($("live-requests"), {
    times,
    step,
    series: seriesOf(points, models, field("requests_per_s")),
    unit: "requests / s",
    format: (v) => `${short(v)} req/s`,
    empty: `No requests in the last ${minutes} minutes.`,
  });
  const quantile = (key) => (p, name) => (p.models && p.models[name] ? p.models[name][key] : null);
  const ttft = [];
  for (const model of models.kept) {
    const [p50] = seriesOf(points, { kept: [model], rest: [] }, quantile("ttft_p50_ms"));
    const [p95] = seriesOf(points, { kept: [model], rest: [] }, quantile("ttft_p95_ms"));
    ttft.push({ ...p50, name: `${model.name} p50` }, { ...p95, name: `${model.name} p95`, dashed: true });
  }
  drawLineChart($("live-ttft"), {
    times,
    step,
    series: ttft,
    unit: "ms",
    format: (v) => `${short(v)} ms`,
    empty: `No streamed answers in the last ${minutes} minutes (the time to first token is measured on streams).`,
  });
  drawLineChart($("live-tokens"), {
    times,
    step,
    series: seriesOf(points, models, field("tokens_per_s")),
    unit: "tokens / s",
    format: (v) => `${short(v)} tok/s`,
    empty: `No output tokens in the last ${minutes} minutes.`,
  });
  drawLineChart($("live-errors"), {
    times,
    step,
    series: seriesOf(points, ranked(failures), (p, name) => (p.deployments && p.deployments[name]) || 0),
    unit: `failed attempts / ${step} s`,
    format: (v) => `${short(v)} failed`,
    empty: `No failed upstream attempts in the last ${minutes} minutes.`,
  });
}
