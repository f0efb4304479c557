// Markdown to DOM nodes, for the answers of models (and nothing else).
// Every piece of text becomes a text node: no string is ever parsed as HTML, so whatever the
// model writes (<script>, <img onerror=...>, javascript: links) is shown as text, never run.
// Supported: fenced code blocks, headings, lists (nested by indentation), block quotes,
// horizontal rules, paragraphs; inline code, **strong**, *emphasis*, ~~strike~~, [links](https://...)
// and bare http(s) URLs. Links are kept only for http: and https: targets.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*).*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const INLINE = new RegExp(
  [
    /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/.source, // 1, 2: code
    /\[([^\]\n]+)\]\(\s*<?([^\s()<>]+)>?\s*\)/.source, // 3, 4: link
    /(\*\*|__)(?=\S)([\s\S]*?\S)\5/.source, // 5, 6: strong
    /(\*|_)(?=[^\s*_])([\s\S]*?[^\s\\])\7/.source, // 7, 8: emphasis
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 9: strike
    /(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"])/.source, // 10: bare URL
    /\\([\\`*_{}[\]()#+\-.!~>|])/.source, // 11: escaped character
  ].join("|"),
  "g",
);

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/** The URL if it is an absolute http(s) URL, else null. */
export function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function appendText(parent, text) {
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (i) parent.append(el("br"));
    if (line) parent.append(document.createTextNode(line));
  });
}

function link(href, parent, label, markdown) {
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  if (markdown) inline(label, a);
  else a.textContent = label;
  parent.append(a);
}

/** Inline Markdown of `text` appended to `parent`. */
export function inline(text, parent) {
  let at = 0;
  INLINE.lastIndex = 0;
  for (let m = INLINE.exec(text); m; m = INLINE.exec(text)) {
    const start = m.index;
    // `_` only opens emphasis at a word boundary (snake_case stays as it is)
    if ((m[5] === "__" || m[7] === "_") && start > 0 && /\w/.test(text[start - 1])) {
      INLINE.lastIndex = start + 1;
      continue;
    }
    // ... and closes at one too
    if ((m[5] === "__" || m[7] === "_") && /\w/.test(text[INLINE.lastIndex] || "")) {
      INLINE.lastIndex = start + 1;
      continue;
    }
    appendText(parent, text.slice(at, start));
    at = INLINE.lastIndex;
    if (m[1] !== undefined) {
      const code = el("code");
      code.textContent = m[2].length > 2 && /^ .* $/.test(m[2]) ? m[2].slice(1, -1) : m[2];
      parent.append(code);
    } else if (m[3] !== undefined) {
      const href = safeUrl(m[4]);
      if (href) link(href, parent, m[3], true);
      else appendText(parent, m[0]); // not http(s): shown as written, inert
    } else if (m[5] !== undefined) {
      inline(m[6], parent.appendChild(el("strong")));
    } else if (m[7] !== undefined) {
      inline(m[8], parent.appendChild(el("em")));
    } else if (m[9] !== undefined) {
      inline(m[9], parent.appendChild(el("del")));
    } else if (m[10] !== undefined) {
      const href = safeUrl(m[10]);
      if (href) link(href, parent, m[10], false);
      else appendText(parent, m[10]);
    } else {
      appendText(parent, m[11]);
    }
    INLINE.lastIndex = at; // the recursive calls above moved it
  }
  appendText(parent, text.slice(at));
}

function codeBlock(code, lang, onCopy) {
  const box = el("div", "code-block");
  const bar = el("div", "code-bar");
  const name = el("span", "code-lang");
  name.textContent = lang || "code";
  const copy = el("button", "copy-code");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => onCopy(code, copy));
  bar.append(name, copy);
  const pre = el("pre");
  const body = el("code");
  if (lang) body.dataset.lang = lang;
  body.textContent = code;
  pre.append(body);
  box.append(bar, pre);
  return box;
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function list(lines, i, out, onCopy) {
  const first = ITEM.exec(lines[i]);
  const base = indentOf(lines[i]);
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  const items = [];
  while (i < lines.length) {
    const line = lines[i];
    const m = ITEM.exec(line);
    if (m && indentOf(line) <= base + 1 && /\d/.test(m[2]) === ordered) {
      items.push([m[3]]);
      i++;
      continue;
    }
    const item = items[items.length - 1];
    if (!line.trim()) {
      // a blank line ends the list unless the next line goes on with it
      const next = lines[i + 1];
      if (next === undefined || (indentOf(next) <= base && !ITEM.test(next))) break;
      item.push("");
      i++;
      continue;
    }
    if (indentOf(line) > base || !startsBlock(line)) {
      item.push(line.slice(Math.min(indentOf(line), base + 2)));
      i++;
      continue;
    }
    break;
  }
  for (const itemLines of items) {
    const li = node.appendChild(el("li"));
    const tight = !itemLines.slice(1).some((l) => startsBlock(l) || !l.trim());
    if (tight) inline(itemLines.join("\n"), li);
    else blocks(itemLines, li, onCopy);
  }
  out.append(node);
  return i;
}

/** Block Markdown of `lines` appended to `out`. */
function blocks(lines, out, onCopy) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m = FENCE.exec(line);
    if (m) {
      const fence = m[1];
      const body = [];
      for (i++; i < lines.length; i++) {
        const closing = lines[i].trim();
        if (closing.startsWith(fence) && closing.replaceAll(fence[0], "") === "") break;
        body.push(lines[i]);
      }
      i++; // the closing fence (while an answer streams, the block may not be closed yet)
      out.append(codeBlock(body.join("\n"), m[2], onCopy));
    } else if (!line.trim()) {
      i++;
    } else if ((m = HEADING.exec(line))) {
      inline(m[2], out.appendChild(el(`h${m[1].length}`)));
      i++;
    } else if (RULE.test(line)) {
      out.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && (m = QUOTE.exec(lines[i])); i++) quoted.push(m[1]);
      blocks(quoted, out.appendChild(el("blockquote")), onCopy);
    } else if (ITEM.test(line)) {
      i = list(lines, i, out, onCopy);
    } else {
      const text = [line];
      for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines[i]); i++) text.push(lines[i]);
      inline(text.join("\n"), out.appendChild(el("p")));
    }
  }
}

/** Replace the content of `target` with `source` rendered as Markdown. */
export function renderMarkdown(source, target, onCopy = () => {}) {
  const fragment = document.createDocumentFragment();
  blocks(String(source).split(/\r?\n/), fragment, onCopy);
  target.replaceChildren(fragment);
}
