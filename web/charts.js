// Charts: each metric map's series as rates over time, drawn with
// Chart.js from the samples watch, updating as samples arrive. A counter
// becomes its increase per second (a delta sample is one already); a
// gauge is drawn as it is.
import { h, clear } from './dom.js';
import { follow, get } from './api.js';
import { attempt } from './notice.js';

const POINTS = 120;

function seriesKey(s) {
  const tags = (s.tags || []).map(t => `${t.key}=${t.value}`).join(',');
  return tags ? `${s.name}{${tags}}` : s.name;
}

export function render(main) {
  const grid = h('div.charts');
  const state = h('p.state', { role: 'status', text: 'waiting for metric samples…' });
  const empty = h('p.empty', { text: 'No metric samples yet. Metric maps of running probes (netstat, syscalls, a map with metric output) appear here as they are polled.' });
  main.append(h('h1', { text: 'Charts' }), state, empty, grid);
  if (!window.Chart) { state.textContent = 'Chart.js did not load.'; return () => {}; }
  const charts = new Map();       // "probe/map" → {chart, series: Map}
  let stop = () => {};

  const chartFor = (probe, map) => {
    const id = `${probe}/${map}`;
    if (charts.has(id)) return charts.get(id);
    empty.hidden = true;
    const canvas = h('canvas', { role: 'img', 'aria-label': `${map} of ${probe}, per second` });
    const last = h('span.last', { text: '' });
    const card = h('section.card.chart', { 'data-chart': id }, h('h2', { text: `${probe} · ${map}` }),
      h('p', {}, 'per second, the last point of every series together: ', last), h('div.canvas', {}, canvas));
    grid.append(card);
    const chart = new window.Chart(canvas, {
      type: 'line',
      data: { datasets: [] },
      options: { animation: false, responsive: true, maintainAspectRatio: false, parsing: false,
        normalized: true, scales: { x: { type: 'linear', ticks: { callback: v => new Date(v).toLocaleTimeString() } },
          y: { beginAtZero: true } }, plugins: { legend: { display: true, position: 'bottom' } } },
    });
    const entry = { chart, series: new Map(), card, last, pending: false };
    charts.set(id, entry);
    return entry;
  };

  const redraw = entry => {
    if (entry.pending) return;
    entry.pending = true;
    requestAnimationFrame(() => {
      entry.pending = false;
      entry.chart.update('none');
      let total = 0;
      for (const s of entry.series.values()) total += s.data.length ? s.data[s.data.length - 1].y : 0;
      entry.last.textContent = total.toFixed(2);
      entry.card.dataset.last = String(total);
      entry.card.dataset.points = String(Math.max(0, ...[...entry.series.values()].map(s => s.data.length)));
    });
  };

  const add = s => {
    if (s.kind !== 'METRIC') return;
    const entry = chartFor(s.probe, s.map);
    const key = seriesKey(s);
    let series = entry.series.get(key);
    const t = new Date(s.time).getTime();
    if (!series) {
      series = { data: [], prev: null, dataset: null };
      series.dataset = { label: key, data: series.data, pointRadius: 0, borderWidth: 2 };
      entry.series.set(key, series);
      entry.chart.data.datasets.push(series.dataset);
    }
    const gauge = s.metricKind === 'GAUGE';
    let y = null;
    if (gauge) y = Number(s.value || 0);
    else if (series.prev && t > series.prev.t)
      y = (s.delta ? Number(s.value || 0) : Math.max(0, Number(s.value || 0) - series.prev.v)) / ((t - series.prev.t) / 1000);
    series.prev = { t, v: Number(s.value || 0) };
    if (y === null) return;
    series.data.push({ x: t, y });
    if (series.data.length > POINTS) series.data.shift();
    redraw(entry);
  };

  attempt(async () => {
    const st = await get('/v1/status');
    // A little history so a chart has points at once: the last few thousand samples.
    const after = Math.max(0, Number(st.lastSampleId || 0) - 5000);
    stop = follow(`/v1/samples:watch?after=${after}`, ev => { if (ev.event === 'sample') add(ev.data); },
      s => { state.textContent = s === 'live' ? 'live' : s === 'reconnecting' ? 'reconnecting…' : s; });
  });
  return () => { stop(); for (const e of charts.values()) e.chart.destroy(); clear(grid); };
}
