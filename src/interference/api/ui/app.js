// The web chat: conversations, streaming answers, settings, the API key prompt.
// Text from people and models only ever reaches the page as text nodes (see markdown.js).

import { bindAdmin, probeAdmin, showKeys } from "./admin.js";
import { ApiError, apiKey, getJson, setApiKey, streamChat, tokensPerSecond } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { recordRequest, showStatus } from "./status.js";
import {
  loadConversations,
  loadSettings,
  newConversation,
  saveConversations,
  saveSettings,
} from "./store.js";
import { canSpeak, configureVoice, readAloud, toggleRecording } from "./voice.js";

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  list: $("conversations"),
  messages: $("messages"),
  empty: $("empty"),
  notice: $("notice"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  model: $("model"),
  title: $("title"),
  settings: $("settings"),
  system: $("system"),
  temperature: $("temperature"),
  maxTokens: $("max-tokens"),
  keyDialog: $("key-dialog"),
  keyInput: $("key-input"),
  keyReason: $("key-reason"),
};

const state = {
  conversations: loadConversations(),
  current: null,
  settings: loadSettings(),
  streaming: null, // {controller, conversation, message}
  renderQueued: new Set(),
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, className, onClick, ariaLabel) {
  const b = el("button", className, label);
  b.type = "button";
  if (ariaLabel) b.setAttribute("aria-label", ariaLabel);
  b.addEventListener("click", onClick);
  return b;
}

function save() {
  const kept = state.conversations.filter((c) => c.messages.length);
  saveConversations(kept);
}

function notice(text) {
  ui.notice.textContent = text || "";
  ui.notice.hidden = !text;
}

function describeError(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const code = error.code ? ` (${error.code})` : "";
  const status = error.status ? `${error.status}: ` : "";
  return `${status}${error.message}${code}`;
}

async function copyText(text, b) {
  let done = false;
  try {
    await navigator.clipboard.writeText(text);
    done = true;
  } catch {
    const area = el("textarea", "offscreen");
    area.value = text;
    document.body.append(area);
    area.select();
    try {
      done = document.execCommand("copy");
    } catch {
      done = false;
    }
    area.remove();
  }
  if (b) {
    const before = b.textContent;
    b.textContent = done ? "Copied" : "Copy failed";
    setTimeout(() => (b.textContent = before), 1200);
  }
}

// --- conversations list

function renderList() {
  const items = state.conversations.filter((c) => c.messages.length || c === state.current);
  ui.list.replaceChildren(
    ...items.map((c) => {
      const li = el("li", c === state.current ? "current" : "");
      li.dataset.id = c.id;
      const open = button(c.title, "open", () => openConversation(c));
      if (c === state.current) open.setAttribute("aria-current", "true");
      const rename = button("✎", "icon", () => startRename(li, c), `Rename ${c.title}`);
      rename.classList.add("rename");
      const remove = button("✕", "icon", () => removeConversation(c, remove), `Delete ${c.title}`);
      remove.classList.add("delete");
      li.append(open, rename, remove);
      return li;
    }),
  );
}

function startRename(li, conversation) {
  const input = el("input", "rename-input");
  input.value = conversation.title;
  input.setAttribute("aria-label", "New title");
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (keep && title) {
      conversation.title = title.slice(0, 120);
      save();
    }
    renderList();
    showTitle();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    else if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function removeConversation(conversation, b) {
  if (!b.classList.contains("confirm")) {
    b.classList.add("confirm");
    b.textContent = "Delete?";
    setTimeout(() => b.isConnected && renderList(), 3000);
    return;
  }
  if (state.streaming && state.streaming.conversation === conversation) stop();
  state.conversations = state.conversations.filter((c) => c !== conversation);
  save();
  if (state.current === conversation) openConversation(state.conversations[0] || null);
  else renderList();
}

function openConversation(conversation) {
  state.current = conversation || newConversation();
  if (!state.conversations.includes(state.current)) state.conversations.unshift(state.current);
  ui.app.classList.remove("sidebar-open");
  showView("chat");
  renderList();
  renderConversation();
  showTitle();
  ui.input.focus();
}

function showTitle() {
  ui.title.textContent = state.current && state.current.messages.length ? state.current.title : "interference";
}

/** Show one of the chat, the status view and the keys view. */
function showView(name) {
  showStatus(name === "status");
  showKeys(name === "keys");
  $("chat-view").hidden = name !== "chat";
  $("show-chat").setAttribute("aria-pressed", String(name === "chat"));
}

// --- messages

function renderConversation() {
  const conversation = state.current;
  ui.messages.replaceChildren(ui.empty);
  ui.empty.hidden = conversation.messages.length > 0;
  conversation.messages.forEach((m) => ui.messages.append(messageNode(m)));
  updateButtons();
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function metaText(message) {
  const meta = message.meta || {};
  const parts = [];
  if (message.model) parts.push(message.model);
  if (meta.deployment) parts.push(`via ${meta.deployment}`);
  if (meta.tokens) parts.push(`${meta.tokens} tokens`);
  if (meta.tps) parts.push(`${meta.tps.toFixed(1)} tok/s`);
  if (meta.ttftMs) parts.push(`first token ${Math.round(meta.ttftMs)} ms`);
  if (meta.stopped) parts.push("stopped");
  else if (meta.finish === "length") parts.push("cut at max tokens");
  return parts.join(" · ");
}

function messageNode(message) {
  const node = el("article", `message ${message.role}`);
  node.dataset.role = message.role;
  const label = el("div", "who", message.role === "user" ? "You" : "Assistant");
  const content = el("div", "content");
  node.append(label, content);
  node.message = message;
  fillMessage(node);
  return node;
}

function fillMessage(node) {
  const message = node.message;
  const content = node.querySelector(".content");
  if (message.role === "user") content.textContent = message.content;
  else renderMarkdown(message.content, content, copyText);
  node.classList.toggle("streaming", Boolean(state.streaming && state.streaming.message === message));
  node.querySelector(".error")?.remove();
  node.querySelector(".meta")?.remove();
  node.querySelector(".actions")?.remove();
  if (message.error) node.append(el("div", "error", `Error ${message.error}`));
  if (message.role !== "assistant" || node.classList.contains("streaming")) return;
  const meta = metaText(message);
  if (meta) node.append(el("div", "meta", meta));
  const actions = el("div", "actions");
  actions.append(button("Copy", "copy", (e) => copyText(message.content, e.currentTarget)));
  if (canSpeak() && message.content) {
    const onError = (error) => notice(`Reading aloud failed: ${describeError(error)}`);
    actions.append(button("Read aloud", "read-aloud", (e) => readAloud(message.content, e.currentTarget, onError)));
  }
  const messages = state.current.messages;
  if (messages[messages.length - 1] === message) actions.append(button("Regenerate", "regenerate", regenerate));
  node.append(actions);
}

function nodeOf(message) {
  return [...ui.messages.querySelectorAll(".message")].find((n) => n.message === message);
}

function refresh(message) {
  // one render per frame however many pieces arrive
  if (state.renderQueued.has(message)) return;
  state.renderQueued.add(message);
  requestAnimationFrame(() => {
    state.renderQueued.delete(message);
    const node = nodeOf(message);
    if (!node) return;
    const atBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
    fillMessage(node);
    if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
  });
}

function updateButtons() {
  const busy = Boolean(state.streaming);
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.messages.querySelectorAll(".regenerate").forEach((b) => (b.disabled = busy));
}

// --- sending

function requestBody(conversation) {
  const messages = [];
  const system = ui.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of conversation.messages) {
    if (m.content && !(m.role === "assistant" && m.error && !m.content)) {
      messages.push({ role: m.role, content: m.content });
    }
  }
  const body = {
    model: ui.model.value,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  const temperature = parseFloat(ui.temperature.value);
  if (!Number.isNaN(temperature)) body.temperature = temperature;
  const maxTokens = parseInt(ui.maxTokens.value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  return body;
}

function send() {
  const text = ui.input.value.trim();
  if (!text || state.streaming) return;
  if (!ui.model.value) {
    notice("No model to answer: the model list could not be loaded.");
    return;
  }
  const conversation = state.current;
  if (!conversation.messages.length) conversation.title = text.replace(/\s+/g, " ").slice(0, 60);
  conversation.messages.push({ role: "user", content: text });
  ui.input.value = "";
  generate(conversation);
}

function regenerate() {
  const conversation = state.current;
  if (state.streaming || !conversation.messages.length) return;
  while (conversation.messages.length && conversation.messages[conversation.messages.length - 1].role === "assistant") {
    conversation.messages.pop();
  }
  if (conversation.messages.length) generate(conversation);
}

async function generate(conversation) {
  const body = requestBody(conversation);
  const message = { role: "assistant", content: "", model: body.model, meta: {} };
  conversation.messages.push(message);
  conversation.updated = Date.now();
  const controller = new AbortController();
  state.streaming = { controller, conversation, message };
  notice("");
  save();
  renderList();
  showTitle();
  renderConversation();
  let run = null;
  let outcome = "ok";
  try {
    run = await streamChat(body, {
      signal: controller.signal,
      onStart: (r) => (run = r),
      onDelta: (text) => {
        message.content += text;
        refresh(message);
      },
    });
  } catch (error) {
    if (error.name === "AbortError") {
      message.meta.stopped = true;
      outcome = "stopped";
    } else {
      message.error = describeError(error);
      outcome = error.code || `error ${error.status}`;
      if (error instanceof ApiError && error.status === 401) askKey(error.message);
    }
  } finally {
    if (run) {
      const tps = tokensPerSecond(run);
      Object.assign(message.meta, {
        deployment: run.deployment,
        tokens: run.usage ? run.usage.completion_tokens : null,
        tps,
        ttftMs: run.ttftMs,
        finish: run.finishReason,
      });
    }
    recordRequest({ model: body.model, outcome, run, tps: run ? tokensPerSecond(run) : null });
    state.streaming = null;
    conversation.updated = Date.now();
    save();
    if (state.current === conversation) {
      const node = nodeOf(message);
      if (node) fillMessage(node);
      updateButtons();
    }
  }
}

function stop() {
  if (state.streaming) state.streaming.controller.abort();
}

// --- models and the key

async function loadModels() {
  try {
    const [list, info] = await Promise.all([getJson("/v1/models"), getJson("/")]);
    configureVoice(info);
    // chat with the models that chat, not with those deployed for speech or transcription
    const chats = new Set(info.chat_models || []);
    const audio = new Set([...(info.speech_models || []), ...(info.transcription_models || [])]);
    const all = (list.data || []).map((m) => m.id).filter((id) => typeof id === "string");
    const talking = all.filter((id) => (!info.chat_models || chats.has(id)) && !audio.has(id));
    const ids = talking.length ? talking : all;
    const chosen = ids.includes(state.settings.model) ? state.settings.model : ids[0] || "";
    ui.model.replaceChildren(...ids.map((id) => new Option(id, id, false, id === chosen)));
    ui.model.value = chosen;
    notice(ids.length ? "" : "This server serves no models.");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) askKey(error.message);
    else notice(`The models could not be loaded: ${describeError(error)}`);
  }
}

function askKey(reason) {
  ui.keyReason.textContent = apiKey()
    ? `This server refused the key kept in this browser: ${reason}`
    : "This server wants an API key.";
  ui.keyInput.value = "";
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  ui.keyInput.focus();
}

function bind() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "Escape") {
      stop();
    }
  });
  ui.stop.addEventListener("click", stop);
  $("mic").addEventListener("click", (e) =>
    toggleRecording(e.currentTarget, ui.input, (error) => notice(`Transcription failed: ${describeError(error)}`)),
  );
  $("new-chat").addEventListener("click", () => openConversation(null));
  $("open-sidebar").addEventListener("click", () => {
    ui.app.classList.add("sidebar-open");
    $("open-sidebar").setAttribute("aria-expanded", "true");
    $("new-chat").focus();
  });
  $("close-sidebar").addEventListener("click", () => {
    ui.app.classList.remove("sidebar-open");
    $("open-sidebar").setAttribute("aria-expanded", "false");
  });
  $("toggle-settings").addEventListener("click", (e) => {
    ui.settings.hidden = !ui.settings.hidden;
    e.currentTarget.setAttribute("aria-expanded", String(!ui.settings.hidden));
  });
  $("show-status").addEventListener("click", () => {
    ui.app.classList.remove("sidebar-open");
    showView("status");
  });
  $("show-keys").addEventListener("click", () => {
    ui.app.classList.remove("sidebar-open");
    showView("keys");
  });
  $("show-chat").addEventListener("click", () => showView("chat"));
  $("set-key").addEventListener("click", () => askKey(""));
  $("key-cancel").addEventListener("click", () => ui.keyDialog.close());
  $("key-form").addEventListener("submit", () => {
    setApiKey(ui.keyInput.value.trim());
    loadModels();
    probeAdmin();
  });
  const keep = () => {
    state.settings = {
      model: ui.model.value,
      system: ui.system.value,
      temperature: ui.temperature.value,
      maxTokens: ui.maxTokens.value,
    };
    saveSettings(state.settings);
  };
  for (const input of [ui.model, ui.system, ui.temperature, ui.maxTokens]) input.addEventListener("change", keep);
  ui.system.value = state.settings.system;
  ui.temperature.value = state.settings.temperature;
  ui.maxTokens.value = state.settings.maxTokens;
}

bind();
bindAdmin();
openConversation(state.conversations[0] || null);
loadModels();
probeAdmin();
