// Keys & usage, the administrator's view: offered when the key kept in this browser is the
// server's master key (GET /key/list answers it). Virtual keys are listed, created (the new key
// is shown once, with a copy button), blocked, unblocked and revoked; usage is in usage.js.
// Keys only travel in the Authorization header and in request bodies, never in URLs or logs.

import { ApiError, getJson, postJson } from "./api.js";
import { usd } from "./charts.js";
import { bindUsage, loadUsage, setKeyNames } from "./usage.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 100;
const CONFIRM_MS = 4000;
let admin = false;
let shown = false;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An error of the API as a sentence: its status, message and code. */
export function describe(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const code = error.code ? ` (${error.code})` : "";
  const status = error.status ? `${error.status}: ` : "";
  return `${status}${error.message}${code}`;
}

function showError(text) {
  const box = $("keys-error");
  box.textContent = text || "";
  box.hidden = !text;
}

function failed(what) {
  return (error) => {
    showError(`${what}: ${describe(error)}`);
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) probeAdmin();
  };
}

/** Whether the kept key administers keys; shows or hides the view's button accordingly. */
export async function probeAdmin() {
  let ok = false;
  try {
    await getJson("/key/list?size=1");
    ok = true;
  } catch {
    ok = false; // a 401, 403 (not the master key) or 404 (no master key): no view
  }
  const changed = ok !== admin;
  admin = ok;
  $("show-keys").hidden = !ok;
  $("keys-denied").hidden = ok;
  $("keys-admin").hidden = !ok;
  if (!ok) {
    hideCreated();
    $("keys-table").tBodies[0].replaceChildren();
  } else if (changed && shown) {
    refresh();
  }
  return ok;
}

/** Show the view (and load its keys and usage) or hide it. */
export function showKeys(visible) {
  shown = visible;
  $("keys-view").hidden = !visible;
  $("show-keys").setAttribute("aria-pressed", String(visible));
  if (visible) {
    showError("");
    $("keys-denied").hidden = admin;
    $("keys-admin").hidden = !admin;
    if (admin) refresh();
  }
}

async function refresh() {
  await loadKeys();
  await loadUsage(failed("The usage could not be loaded"));
}

// --- the list

async function allKeys() {
  const keys = [];
  for (let page = 1; ; page += 1) {
    const answer = await getJson(`/key/list?return_full_object=true&size=${PAGE_SIZE}&page=${page}`);
    keys.push(...(answer.keys || []).filter((k) => k && typeof k.token === "string"));
    if (page >= (answer.total_pages || 1)) return keys;
  }
}

async function loadKeys() {
  try {
    const keys = await allKeys();
    setKeyNames(keys);
    renderKeys(keys);
  } catch (error) {
    failed("The keys could not be loaded")(error);
  }
}

export function nameOf(key) {
  return key.key_alias || `${key.token.slice(0, 12)}…`;
}

function when(iso) {
  if (!iso) return null;
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? iso : at.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

function cell(row, text, className) {
  const td = el("td", className, text === null || text === undefined ? "–" : String(text));
  row.append(td);
  return td;
}

function budgetText(key) {
  let text = usd(Number(key.spend) || 0);
  if (key.max_budget !== null && key.max_budget !== undefined) {
    text += ` of ${usd(key.max_budget)}`;
    if (key.budget_duration) text += ` per ${key.budget_duration}`;
  }
  return text;
}

function statusOf(key) {
  if (key.blocked) return "blocked";
  if (key.expires && Date.parse(key.expires) <= Date.now()) return "expired";
  return "active";
}

function renderKeys(keys) {
  const rows = keys.map((key) => {
    const name = nameOf(key);
    const row = el("tr");
    row.dataset.token = key.token;
    const alias = cell(row, name);
    alias.title = `digest ${key.token.slice(0, 16)}…`;
    if (!key.key_alias) alias.classList.add("muted");
    cell(row, key.models && key.models.length ? key.models.join(", ") : "all");
    cell(row, budgetText(key));
    cell(row, [key.rpm_limit, key.tpm_limit, key.max_parallel_requests].map((v) => v ?? "–").join(" · "));
    cell(row, key.expires ? when(key.expires) : "never");
    const status = statusOf(key);
    cell(row, status, status === "active" ? "good" : "bad").classList.add("key-status");
    cell(row, key.last_active ? when(key.last_active) : "never");
    const actions = el("td", "key-actions");
    const blocking = !key.blocked;
    actions.append(
      action(blocking ? "Block" : "Unblock", `${blocking ? "Block" : "Unblock"} ${name}`, () =>
        postJson(blocking ? "/key/block" : "/key/unblock", { key: key.token })
          .then(loadKeys)
          .catch(failed(`${name} could not be ${blocking ? "blocked" : "unblocked"}`)),
      ),
      revokeButton(key, name),
    );
    row.append(actions);
    return row;
  });
  $("keys-table").tBodies[0].replaceChildren(...rows);
  $("keys-empty").hidden = keys.length > 0;
}

function action(label, ariaLabel, onClick) {
  const b = el("button", "", label);
  b.type = "button";
  b.setAttribute("aria-label", ariaLabel);
  b.addEventListener("click", async () => {
    b.disabled = true;
    showError("");
    try {
      await onClick();
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** Revoke asks for a second click (as deleting a conversation does). */
function revokeButton(key, name) {
  const b = el("button", "danger-outline", "Revoke");
  b.type = "button";
  b.setAttribute("aria-label", `Revoke ${name}`);
  let timer = null;
  b.addEventListener("click", async () => {
    if (!b.classList.contains("confirm")) {
      b.classList.add("confirm");
      b.textContent = "Revoke for good?";
      b.setAttribute("aria-label", `Confirm: revoke ${name} (it stops working at once)`);
      timer = setTimeout(() => {
        b.classList.remove("confirm");
        b.textContent = "Revoke";
        b.setAttribute("aria-label", `Revoke ${name}`);
      }, CONFIRM_MS);
      return;
    }
    clearTimeout(timer);
    b.disabled = true;
    showError("");
    try {
      await postJson("/key/delete", { keys: [key.token] });
      await loadKeys();
    } catch (error) {
      b.disabled = false;
      failed(`${name} could not be revoked`)(error);
    }
  });
  return b;
}

// --- creating a key

function number(input, whole) {
  const text = input.value.trim();
  if (!text) return undefined;
  const value = Number(text);
  const label = input.closest("label").firstChild.textContent.trim();
  if (!Number.isFinite(value) || value < 0 || (whole && (!Number.isInteger(value) || value < 1))) {
    throw new Error(`${label}: ${whole ? "a whole number of at least 1" : "a number of at least 0"}.`);
  }
  return value;
}

function createBody() {
  const body = {};
  const text = (id) => $(id).value.trim();
  if (text("new-alias")) body.key_alias = text("new-alias");
  const models = text("new-models")
    .split(",")
    .map((m) => m.trim())
    .filter(Boolean);
  if (models.length) body.models = models;
  const fields = [
    ["max_budget", "new-budget", false],
    ["rpm_limit", "new-rpm", true],
    ["tpm_limit", "new-tpm", true],
    ["max_parallel_requests", "new-parallel", true],
  ];
  for (const [name, id, whole] of fields) {
    const value = number($(id), whole);
    if (value !== undefined) body[name] = value;
  }
  if (text("new-budget-duration")) body.budget_duration = text("new-budget-duration");
  if (text("new-duration")) body.duration = text("new-duration");
  return body;
}

async function create(event) {
  event.preventDefault();
  showError("");
  let body;
  try {
    body = createBody();
  } catch (error) {
    showError(`The key was not created: ${error.message}`);
    return;
  }
  const submit = $("key-create-submit");
  submit.disabled = true;
  try {
    const created = await postJson("/key/generate", body);
    $("key-created-value").textContent = created.key;
    $("key-created-alias").textContent = created.key_alias ? ` “${created.key_alias}”` : "";
    $("key-created").hidden = false;
    $("key-create").reset();
    $("key-created-copy").focus();
    await loadKeys();
  } catch (error) {
    failed("The key was not created")(error);
  } finally {
    submit.disabled = false;
  }
}

function hideCreated() {
  $("key-created-value").textContent = "";
  $("key-created").hidden = true;
}

async function copyCreated(event) {
  const b = event.currentTarget;
  const text = $("key-created-value").textContent;
  let done = false;
  try {
    await navigator.clipboard.writeText(text);
    done = true;
  } catch {
    const range = document.createRange(); // select it, for Ctrl+C at least
    range.selectNodeContents($("key-created-value"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try {
      done = document.execCommand("copy");
    } catch {
      done = false;
    }
  }
  b.textContent = done ? "Copied" : "Select and copy";
  setTimeout(() => (b.textContent = "Copy"), 1500);
}

export function bindAdmin() {
  $("key-create").addEventListener("submit", create);
  $("key-created-copy").addEventListener("click", copyCreated);
  $("key-created-done").addEventListener("click", hideCreated);
  bindUsage(failed("The usage could not be loaded"), () => showError(""));
}
