// Stacked bar charts drawn as inline SVG by the page itself (no library): one bar per day, one
// coloured part per series, with axes, labels, a legend and a title per part for its value.
// Only presentation attributes are set (the page's CSP allows no inline style).

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 240;
const PAD = { left: 64, right: 12, top: 12, bottom: 40 };
//: a palette that reads on light and dark backgrounds; "other" is grey
export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f"];
const OTHER = "#9a9ea6";

/** An SVG element with these attributes (and text). */
export function node(tag, attributes, text) {
  const made = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined) made.setAttribute(name, String(value));
  }
  if (text !== undefined) made.textContent = text;
  return made;
}

/** A round step for about `count` ticks up to `max`. */
export function niceStep(max, count) {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  const nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 2.5 ? 2.5 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

/** Series beyond the `limit` largest are summed into one "other" series. */
export function topSeries(series, limit = PALETTE.length) {
  const sorted = [...series].sort((a, b) => total(b) - total(a));
  if (sorted.length <= limit) return sorted.map((s, i) => ({ ...s, color: PALETTE[i] }));
  const kept = sorted.slice(0, limit - 1).map((s, i) => ({ ...s, color: PALETTE[i] }));
  const rest = sorted.slice(limit - 1);
  const values = rest[0].values.map((_, day) => rest.reduce((sum, s) => sum + s.values[day], 0));
  return [...kept, { name: `${rest.length} others`, values, color: OTHER }];
}

function total(s) {
  return s.values.reduce((a, b) => a + b, 0);
}

/**
 * Draw into `figure` (after its figcaption) a stacked bar chart: `days` (labels, YYYY-MM-DD),
 * `series` ([{name, color, values: one number per day}]), `format` (a value as text) and
 * `unit` (the y axis' name).
 */
export function drawBarChart(figure, { days, series, format, unit }) {
  figure.querySelectorAll("svg, .legend, .chart-empty").forEach((old) => old.remove());
  const caption = figure.querySelector("figcaption");
  const totals = days.map((_, day) => series.reduce((sum, s) => sum + s.values[day], 0));
  const max = Math.max(0, ...totals);
  if (!days.length || max <= 0) {
    const empty = document.createElement("p");
    empty.className = "chart-empty muted";
    empty.textContent = "Nothing in this range.";
    figure.append(empty);
    return;
  }
  // drawn at the figure's width, so that its text has the page's size
  const width = Math.max(320, Math.round(figure.clientWidth || 640) - 20);
  const svg = node("svg", {
    class: "plot",
    viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "img",
    "aria-label": `${caption ? caption.textContent : unit}: ${format(totals.reduce((a, b) => a + b, 0))} in all`,
  });
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const step = niceStep(max, 4);
  const top = Math.ceil(max / step) * step;
  const y = (value) => PAD.top + plotH - (value / top) * plotH;

  // the y axis: grid lines and their values
  for (let tick = 0; tick <= top + step / 2; tick += step) {
    const at = y(tick);
    svg.append(node("line", { x1: PAD.left, x2: width - PAD.right, y1: at, y2: at, class: "grid" }));
    svg.append(node("text", { x: PAD.left - 6, y: at + 4, "text-anchor": "end", class: "tick" }, format(tick)));
  }
  svg.append(
    node("text", {
      x: 12,
      y: PAD.top + plotH / 2,
      transform: `rotate(-90 12 ${PAD.top + plotH / 2})`,
      "text-anchor": "middle",
      class: "axis-label",
    }, unit),
  );

  // the bars, one per day, stacked by series
  const slot = plotW / days.length;
  const barW = Math.max(1, Math.min(40, slot * 0.7));
  const every = Math.ceil(days.length / Math.max(2, Math.floor(plotW / 48)));
  days.forEach((day, index) => {
    const x = PAD.left + slot * index + (slot - barW) / 2;
    let base = 0;
    for (const s of series) {
      const value = s.values[index];
      if (value > 0) {
        const bar = node("rect", {
          x,
          y: y(base + value),
          width: barW,
          height: Math.max(0.5, y(base) - y(base + value)),
          fill: s.color,
          class: "bar",
        });
        bar.append(node("title", {}, `${s.name}, ${day}: ${format(value)}`));
        svg.append(bar);
        base += value;
      }
    }
    if (index % every === 0) {
      svg.append(
        node("text", { x: x + barW / 2, y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle", class: "tick" }, day.slice(5)),
      );
    }
  });
  svg.append(node("line", { x1: PAD.left, x2: width - PAD.right, y1: y(0), y2: y(0), class: "axis" }));
  svg.append(
    node("text", { x: PAD.left + plotW / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "axis-label" }, "day (UTC, month-day)"),
  );
  figure.append(svg, legend(series, format));
}

function legend(series, format) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const s of series) {
    const item = document.createElement("li");
    const swatch = node("svg", { class: "swatch", width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" });
    swatch.append(node("rect", { width: 12, height: 12, rx: 2, fill: s.color }));
    const name = document.createElement("span");
    name.className = "legend-name";
    name.textContent = s.name;
    const value = document.createElement("span");
    value.className = "muted";
    value.textContent = ` ${format(total(s))}`;
    item.append(swatch, name, value);
    list.append(item);
  }
  return list;
}

/** Days from `start` to `end` (YYYY-MM-DD, inclusive, UTC). */
export function daysBetween(start, end) {
  const days = [];
  const last = Date.parse(`${end}T00:00:00Z`);
  for (let at = Date.parse(`${start}T00:00:00Z`); at <= last && days.length < 1000; at += 86400000) {
    days.push(new Date(at).toISOString().slice(0, 10));
  }
  return days;
}

/** US dollars: cents when large, more digits when small. */
export function usd(value) {
  if (!value) return "$0";
  if (value >= 100) return `$${value.toFixed(0)}`;
  if (value >= 1) return `$${value.toFixed(2)}`;
  if (value < 1e-4) return `$${value.toExponential(1)}`;
  return `$${Number(value.toPrecision(2))}`;
}

/** A count, short: 950, 1.2k, 3.4M. */
export function count(value) {
  if (value >= 1e6) return `${Number((value / 1e6).toPrecision(3))}M`;
  if (value >= 1e3) return `${Number((value / 1e3).toPrecision(3))}k`;
  return String(Math.round(value * 100) / 100);
}
