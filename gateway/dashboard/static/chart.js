// Bar charts by UTC day on uPlot (vendored: vendor/uPlot.esm.js, MIT, see vendor/uPlot.LICENSE).
import uPlot from "./vendor/uPlot.esm.js";

const charts = new WeakMap();

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
    scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min) * 1.1, Math.max(1, max) * 1.1] } },
    axes: [
      { stroke: "#333", grid: { stroke: "#e3e3e3" } },
      { stroke: "#333", grid: { stroke: "#e3e3e3" }, size: 70, values: (_u, ticks) => ticks.map(format) },
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
