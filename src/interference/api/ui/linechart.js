// Line charts over time, drawn as inline SVG by the page itself (no library), for the Status
// view's live charts: one line per series, broken where a series has no value, a dot where it
// has one above zero, time labels (HH:MM, local time), y values with the unit on the axis, and a
// legend. Only presentation attributes are set (the page's CSP allows no inline style).

import { niceStep, node } from "./charts.js";

const HEIGHT = 220;
const PAD = { left: 52, right: 14, top: 12, bottom: 40 };
//: minutes between time labels, the smallest that leaves each label room
const MINUTE_STEPS = [1, 2, 3, 5, 10, 15, 30, 60];

const two = (n) => String(n).padStart(2, "0");

/** Unix seconds as local HH:MM. */
export function hhmm(seconds) {
  const at = new Date(seconds * 1000);
  return `${two(at.getHours())}:${two(at.getMinutes())}`;
}

/** Unix seconds as local HH:MM:SS. */
export function hhmmss(seconds) {
  return `${hhmm(seconds)}:${two(new Date(seconds * 1000).getSeconds())}`;
}

/** A number short enough for a tick: 0.25, 3.5, 42, 1200. */
export function short(value) {
  if (value === 0) return "0";
  if (Math.abs(value) >= 100) return String(Math.round(value));
  return String(Number(value.toPrecision(2)));
}

const known = (value) => value !== null && value !== undefined && !Number.isNaN(value);

/**
 * Draw into `figure` (after its figcaption) a line chart of `series`
 * ([{name, color, dashed, values: a number, or null where there is none, per point}]) over
 * `times` (unix seconds: the start of each point's bucket of `step` seconds). `unit` names
 * the y axis, `format` writes a value with its unit; `empty` is said instead of a chart when no
 * series has a value above zero. Returns whether a chart was drawn.
 */
export function drawLineChart(figure, { times, step, series, unit, format, empty }) {
  figure.querySelectorAll("svg.plot, .legend, .chart-empty").forEach((old) => old.remove());
  const caption = figure.querySelector("figcaption");
  const max = Math.max(0, ...series.flatMap((s) => s.values.filter(known)));
  if (!times.length || max <= 0) {
    const text = document.createElement("p");
    text.className = "chart-empty muted";
    text.textContent = empty;
    figure.append(text);
    figure.dataset.state = "empty";
    return false;
  }
  figure.dataset.state = "drawn";
  const width = Math.max(320, Math.round(figure.clientWidth || 640) - 20);
  const svg = node("svg", {
    class: "plot",
    viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "img",
    "aria-label": `${caption ? caption.textContent : unit}: up to ${format(max)}`,
  });
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const start = times[0];
  const end = times[times.length - 1] + step;
  const x = (t) => PAD.left + ((t + step / 2 - start) / (end - start)) * plotW;
  const tickStep = niceStep(max, 4);
  const top = Math.ceil(max / tickStep) * tickStep;
  const y = (value) => PAD.top + plotH - (value / top) * plotH;

  // the y axis: grid lines, their values, the unit
  for (let tick = 0; tick <= top + tickStep / 2; tick += tickStep) {
    const at = y(tick);
    svg.append(node("line", { x1: PAD.left, x2: width - PAD.right, y1: at, y2: at, class: "grid" }));
    svg.append(node("text", { x: PAD.left - 6, y: at + 4, "text-anchor": "end", class: "tick" }, short(tick)));
  }
  const middle = PAD.top + plotH / 2;
  svg.append(
    node("text", { x: 12, y: middle, transform: `rotate(-90 12 ${middle})`, "text-anchor": "middle", class: "axis-label" }, unit),
  );

  // the time axis: a label every few whole minutes
  const minutes = MINUTE_STEPS.find((m) => ((end - start) / (60 * m)) * 56 <= plotW) || 60;
  const every = minutes * 60;
  for (let t = Math.ceil(start / every) * every; t <= end; t += every) {
    const at = PAD.left + ((t - start) / (end - start)) * plotW;
    svg.append(node("line", { x1: at, x2: at, y1: PAD.top, y2: PAD.top + plotH, class: "grid" }));
    svg.append(node("text", { x: at, y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle", class: "tick time" }, hhmm(t)));
  }
  svg.append(node("line", { x1: PAD.left, x2: width - PAD.right, y1: y(0), y2: y(0), class: "axis" }));
  svg.append(
    node("text", { x: PAD.left + plotW / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "axis-label" }, "time (HH:MM)"),
  );

  // the lines, then their dots on top
  const dots = [];
  for (const s of series) {
    let d = "";
    let pen = "M";
    s.values.forEach((value, i) => {
      if (!known(value)) {
        pen = "M"; // a gap: the line starts again at the next value
        return;
      }
      const px = x(times[i]).toFixed(1);
      const py = y(value).toFixed(1);
      d += `${pen}${px} ${py} `;
      pen = "L";
      if (value > 0) {
        const dot = node("circle", { cx: px, cy: py, r: 2.6, fill: s.color, class: "point", "data-series": s.name });
        dot.append(node("title", {}, `${s.name}, ${hhmm(times[i])}–${hhmmss(times[i] + step)}: ${format(value)}`));
        dots.push(dot);
      }
    });
    if (d) {
      svg.append(
        node("path", {
          d: d.trim(),
          fill: "none",
          stroke: s.color,
          "stroke-dasharray": s.dashed ? "5 4" : null,
          class: "line",
          "data-series": s.name,
        }),
      );
    }
  }
  svg.append(...dots);
  figure.append(svg, legend(series, format));
  return true;
}

function legend(series, format) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const s of series) {
    const item = document.createElement("li");
    const swatch = node("svg", { class: "swatch", width: 18, height: 12, viewBox: "0 0 18 12", "aria-hidden": "true" });
    swatch.append(
      node("line", { x1: 1, x2: 17, y1: 6, y2: 6, stroke: s.color, "stroke-width": 3, "stroke-dasharray": s.dashed ? "4 3" : null }),
    );
    const name = document.createElement("span");
    name.className = "legend-name";
    name.textContent = s.name;
    const peak = Math.max(0, ...s.values.filter(known));
    const value = document.createElement("span");
    value.className = "muted";
    value.textContent = ` max ${format(peak)}`;
    item.append(swatch, name, value);
    list.append(item);
  }
  return list;
}
