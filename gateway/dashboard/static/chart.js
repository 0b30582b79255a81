// Bar charts by UTC day on uPlot (vendored: vendor/uPlot.esm.js, MIT, see vendor/uPlot.LICENSE).
import uPlot from "./vendor/uPlot.esm.js";

const charts = new WeakMap();
const DAY_S = 86_400;

// The width (CSS px) a vertical axis needs for its tick labels `values` (null before uPlot has
// formatted them): about 7.5 px a character of the 12 px axis font, plus the ticks' gap.
function labelsWidth(_u, values) {
  if (!values) return 48;
  return Math.ceil(18 + 7.5 * Math.max(1, ...values.map((v) => String(v ?? "").length)));
}

// Draw `values` (numbers) for `days` ("YYYY-MM-DD", UTC) into `container`, replacing any chart
// there; `format` labels the y axis and the legend. `lines` ([{label, values, stroke}]) are
// further series on the same scale, drawn as lines over the bars.
export function dailyBars(container, days, values, label, format = (v) => String(v), lines = []) {
  const old = charts.get(container);
  if (old) old.destroy();
  container.replaceChildren();
  const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  const width = Math.max(280, container.clientWidth || 320);
  const plot = new uPlot({
    width, height: 220,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    legend: { show: true },
    cursor: { y: false },
    padding: [8, 14, 0, 0],
    scales: {
      // the days drawn and half a day either side, so the first and last bars are whole (uPlot
      // alone widens a single day to years)
      x: { time: true, range: (_u, min, max) => (xs.length ? [xs[0] - DAY_S / 2, xs[xs.length - 1] + DAY_S / 2]
        : [min, max]) },
      y: { range: (_u, min, max) => [Math.min(0, min) * 1.1, max > 0 ? max * 1.1 : 1] },
    },
    axes: [
      // ticks on whole days only: the bars are days, an hour tick between them means nothing
      { stroke: "#333", grid: { stroke: "#e3e3e3" }, incrs: [1, 2, 7, 14, 28].map((n) => n * DAY_S) },
      { stroke: "#333", grid: { stroke: "#e3e3e3" }, size: labelsWidth, values: (_u, ticks) => ticks.map(format) },
    ],
    series: [
      {},
      {
        label, stroke: "#1f5fa8", fill: "rgba(31, 95, 168, 0.35)", width: 1,
        paths: uPlot.paths.bars({ size: [0.7, 48] }), points: { show: false },
        value: (_u, v) => (v == null ? "–" : format(v)),
      },
      ...lines.map((line) => ({
        label: line.label, stroke: line.stroke || "#b5551d", width: 2,
        value: (_u, v) => (v == null ? "–" : format(v)),
      })),
    ],
  }, [xs, values, ...lines.map((line) => line.values)], container);
  charts.set(container, plot);
  container.dataset.points = String(values.length);
  container.dataset.total = String(values.reduce((a, b) => a + b, 0));
  container.dataset.last = values.length ? String(values[values.length - 1]) : "";
  if (!container.dataset.observed && "ResizeObserver" in window) {
    container.dataset.observed = "1";
    new ResizeObserver(() => {
      const current = charts.get(container);
      if (current) current.setSize({ width: Math.max(280, container.clientWidth || 320), height: 220 });
    }).observe(container);
  }
  return plot;
}

const sizers = new WeakMap(); // container → () => {width, height} of its category chart
const PALETTE = ["#1f5fa8", "#b5551d", "#1d6b35", "#6a3d9a"];

// Horizontal bars per category (a model, an operation), first category on top: `labels` are
// the categories, `series` ([{label, values, scale?, format?}]) the bars drawn side by side in
// each row, one value per label; `category` names the rows in the legend. Series on scale "y" share the bottom axis (`format`); a series
// with `scale: "b"` gets its own axis on top (e.g. calls next to amounts). The container carries
// the drawn data as JSON in `data-chart` ({labels, series: [{label, values}]}) for tests, and
// `aria-label` stays the caller's: the table next to the chart is the accessible view.
export function categoryBars(container, labels, series, format = (v) => String(v), category = "") {
  const old = charts.get(container);
  if (old) old.destroy();
  charts.delete(container);
  container.replaceChildren();
  container.dataset.chart = JSON.stringify({ labels, series: series.map((s) => ({ label: s.label, values: s.values })) });
  container.dataset.points = String(labels.length);
  if (!labels.length) {
    container.append(Object.assign(document.createElement("p"), { className: "hint", textContent: "No data in this period." }));
    return null;
  }
  const size = () => {
    const width = Math.max(260, container.clientWidth || 320);
    const row = Math.max(22, series.length * 14 + 10);
    return { width, height: labels.length * row + (series.some((s) => s.scale === "b") ? 90 : 64) };
  };
  // The category axis gets at most 40% of the width; longer names are cut with an ellipsis.
  // (the axis' ticks and gap take 15 px of it)
  const labelWidth = (width) => Math.min(width * 0.4, 24 + 7.5 * Math.max(...labels.map((l) => l.length)));
  const cut = (text, width) => {
    const max = Math.max(4, Math.floor((labelWidth(width) - 24) / 7.5));
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  };
  const range = (_u, min, max) => [Math.min(0, min) * 1.1, Math.max(0, max) * 1.1 || 1];
  const fmtOf = (s) => s.format || format;
  const second = series.find((s) => s.scale === "b");
  const plot = new uPlot({
    ...size(),
    legend: { show: true },
    padding: [8, 24, 0, 0], // room for the value axis' last label
    cursor: { x: false, points: { show: false } },
    scales: {
      x: { time: false, ori: 1, dir: -1, range: () => [-0.5, labels.length - 0.5] },
      y: { ori: 0, dir: 1, range }, b: { ori: 0, dir: 1, range },
    },
    axes: [
      { scale: "x", side: 3, stroke: "#333", grid: { show: false }, size: (u) => labelWidth(u.width),
        splits: () => labels.map((_l, i) => i), values: (u, ticks) => ticks.map((i) => cut(labels[i] ?? "", u.width)) },
      { scale: "y", side: 2, stroke: "#333", grid: { stroke: "#e3e3e3" }, size: 40, space: 90,
        values: (_u, ticks) => ticks.map(format) },
      ...(second ? [{ scale: "b", side: 0, stroke: PALETTE[series.indexOf(second) % PALETTE.length],
        grid: { show: false }, size: 30, space: 70, values: (_u, ticks) => ticks.map(fmtOf(second)) }] : []),
    ],
    series: [
      { label: category, value: (_u, i) => labels[i] ?? "–" },
      ...series.map((s, n) => {
        const color = PALETTE[n % PALETTE.length];
        const share = 0.8 / series.length;
        return {
          label: s.label, scale: s.scale || "y", stroke: color, fill: color, width: 0, fillTo: 0,
          points: { show: false }, value: (_u, v) => (v == null ? "–" : fmtOf(s)(v)),
          // each series takes its slice of the row: bars side by side, not over each other
          // (x0 and size in category units: row i spans i − 0.4 … i + 0.4)
          paths: uPlot.paths.bars({ size: [share, 28], disp: {
            x0: { unit: 1, values: () => labels.map((_l, i) => i - 0.4 + n * share) },
            size: { unit: 1, values: () => [share] },
          } }),
        };
      }),
    ],
  }, [labels.map((_l, i) => i), ...series.map((s) => s.values)], container);
  charts.set(container, plot);
  sizers.set(container, size);
  if (!container.dataset.observed && "ResizeObserver" in window) {
    container.dataset.observed = "1";
    new ResizeObserver(() => {
      const current = charts.get(container);
      if (current) current.setSize(sizers.get(container)());
    }).observe(container);
  }
  return plot;
}
