// The operator view: models, deployments (health, cooldown, in flight, time to first token)
// and this page's recent requests, refreshed every few seconds while it is shown; the server's
// last 15 minutes as live charts (live.js).

import { ApiError, getJson } from "./api.js";
import { showLive } from "./live.js";

const REFRESH_MS = 3000;
const recent = [];
let timer = null;

const $ = (id) => document.getElementById(id);

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  row.append(td);
}

/** Note a request of the chat, for the table of recent requests. */
export function recordRequest({ model, outcome, run, tps }) {
  recent.unshift({
    at: new Date(),
    model,
    outcome,
    deployment: run ? run.deployment : null,
    ttftMs: run && run.ttftMs !== null ? Math.round(run.ttftMs) : null,
    tokens: run && run.usage ? run.usage.completion_tokens : null,
    tps: tps ? tps.toFixed(1) : null,
  });
  recent.length = Math.min(recent.length, 20);
  if (timer !== null) renderRecent();
}

function renderRecent() {
  const body = $("status-recent").tBodies[0];
  body.replaceChildren(
    ...recent.map((r) => {
      const row = document.createElement("tr");
      cell(row, r.at.toLocaleTimeString());
      cell(row, r.model);
      cell(row, r.deployment);
      cell(row, r.outcome, r.outcome === "ok" ? "good" : "bad");
      cell(row, r.ttftMs === null ? null : `${r.ttftMs} ms`);
      cell(row, r.tokens);
      cell(row, r.tps);
      return row;
    }),
  );
}

function renderDeployments(providers) {
  const body = $("status-deployments").tBodies[0];
  const rows = [];
  for (const [model, entry] of Object.entries(providers.models || {})) {
    for (const d of entry.deployments || []) {
      const row = document.createElement("tr");
      cell(row, model);
      cell(row, d.deployment);
      const health = d.healthy ? "healthy" : `cooling down ${d.cooldown_remaining_s} s`;
      cell(row, health, d.healthy ? "good" : "bad");
      cell(row, d.max_concurrency ? `${d.in_flight} / ${d.max_concurrency}` : d.in_flight);
      cell(row, d.ttft_ms === null ? null : `${d.ttft_ms} ms`);
      cell(row, d.successes);
      cell(row, d.failures);
      cell(row, d.last_error);
      rows.push(row);
    }
  }
  body.replaceChildren(...rows);
}

async function refresh() {
  const error = $("status-error");
  try {
    const [models, providers, health] = await Promise.all([
      getJson("/v1/models"),
      getJson("/v1/providers"),
      getJson("/health"),
    ]);
    $("status-models").replaceChildren(
      ...(models.data || []).map((m) => {
        const li = document.createElement("li");
        li.textContent = m.id;
        return li;
      }),
    );
    renderDeployments(providers);
    const parts = [`server ${health.status}`];
    if (health.version) parts.push(`version ${health.version}`);
    if (health.uptime_s !== undefined) parts.push(`up ${Math.round(health.uptime_s)} s`);
    parts.push(`routing: ${providers.strategy}`, `updated ${new Date().toLocaleTimeString()}`);
    $("status-summary").textContent = parts.join(" · ");
    error.hidden = true;
  } catch (exc) {
    error.textContent =
      exc instanceof ApiError ? `Status unavailable: ${exc.message}` : `Status unavailable: ${exc}`;
    error.hidden = false;
  }
  renderRecent();
}

/** Show the status view (refreshed every few seconds) or the chat. */
export function showStatus(visible) {
  $("status-view").hidden = !visible;
  $("chat-view").hidden = visible;
  $("show-status").setAttribute("aria-pressed", String(visible));
  $("show-chat").setAttribute("aria-pressed", String(!visible));
  showLive(visible);
  if (visible && timer === null) {
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  } else if (!visible && timer !== null) {
    clearInterval(timer);
    timer = null;
  }
}
