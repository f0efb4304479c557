// Conversations and settings, kept in this browser's localStorage.

const CONVERSATIONS = "interference.conversations";
const SETTINGS = "interference.settings";

function read(item, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(item) || "null");
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function write(item, value) {
  try {
    localStorage.setItem(item, JSON.stringify(value));
    return true;
  } catch {
    return false; // full or disabled: the page goes on without keeping it
  }
}

function isConversation(c) {
  return c && typeof c.id === "string" && typeof c.title === "string" && Array.isArray(c.messages);
}

export function newId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Conversations, most recently updated first. */
export function loadConversations() {
  const list = read(CONVERSATIONS, []);
  return (Array.isArray(list) ? list.filter(isConversation) : []).sort((a, b) => b.updated - a.updated);
}

export function saveConversations(list) {
  return write(CONVERSATIONS, list);
}

export function newConversation() {
  const now = Date.now();
  return { id: newId(), title: "New chat", messages: [], created: now, updated: now };
}

export function loadSettings() {
  const s = read(SETTINGS, {});
  return {
    model: typeof s.model === "string" ? s.model : "",
    system: typeof s.system === "string" ? s.system : "",
    temperature: typeof s.temperature === "string" ? s.temperature : "",
    maxTokens: typeof s.maxTokens === "string" ? s.maxTokens : "",
  };
}

export function saveSettings(settings) {
  write(SETTINGS, settings);
}
