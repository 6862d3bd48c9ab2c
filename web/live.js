// Live: events of one probe or all, from the samples watch, newest
// first, pausable, filtered by text, at most KEEP in the page. It starts
// from now (the status' last sample id) and resumes after a disconnect
// with Last-Event-ID.
import { h, clear, time, field } from './dom.js';
import { follow, get, list } from './api.js';
import { attempt } from './notice.js';

const KEEP = 500;

export function fieldText(f) {
  const v = f.int ?? f.uint ?? f.real ?? f.text ?? f.flag ?? '';
  return `${f.name}=${v}`;
}

function describe(s) {
  if (s.kind === 'EVENT') return (s.fields || []).map(fieldText).join(' ');
  const tags = (s.tags || []).map(t => `${t.key}=${t.value}`).join(' ');
  return `${s.name}${tags ? ` {${tags}}` : ''} = ${s.value ?? 0}${s.delta ? ' (Δ)' : ''}`;
}

export function render(main) {
  const probe = h('select', { name: 'probe' }, h('option', { value: '', text: 'every probe' }));
  const filter = h('input', { type: 'search', name: 'filter', placeholder: 'text in the event' });
  const pause = h('button', { type: 'button', text: 'Pause', 'aria-pressed': 'false' });
  const state = h('span.state', { role: 'status', text: 'connecting…' });
  const events = h('ol.events', { 'aria-label': 'events, newest first' });
  const count = h('span.count');
  let paused = false;
  let held = [];
  let stop = () => {};
  let seen = 0;

  const matches = li => !filter.value || li.textContent.toLowerCase().includes(filter.value.toLowerCase());
  const show = items => {
    for (const s of items) {
      const li = h(`li.${s.kind === 'EVENT' ? 'event' : 'metric'}`, { 'data-id': s.id },
        time(s.time), ' ', h('strong', { text: s.probe }), h('span.map', { text: `/${s.map}` }), ' ',
        h('span.text', { text: describe(s) }));
      li.hidden = !matches(li);
      events.prepend(li);
    }
    while (events.children.length > KEEP) events.lastElementChild.remove();
    count.textContent = `${seen} received · ${events.children.length} shown`;
  };

  const connect = async () => {
    stop();
    clear(events);
    held = [];
    const st = await attempt(() => get('/v1/status'));
    const after = st ? st.lastSampleId || '0' : '0';
    const q = new URLSearchParams({ after });
    if (probe.value) q.set('probe', probe.value);
    stop = follow(`/v1/samples:watch?${q}`, ev => {
      if (ev.event === 'error') { state.textContent = `stream ended: ${ev.data?.message || ev.data}`; return; }
      if (ev.event !== 'sample') return;
      seen++;
      if (paused) { held.push(ev.data); held = held.slice(-KEEP); count.textContent = `${seen} received · ${held.length} held while paused`; } else show([ev.data]);
    }, s => { state.textContent = s === 'live' ? 'live' : s === 'reconnecting' ? 'reconnecting…' : s; });
  };

  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) { show(held); held = []; }
  });
  filter.addEventListener('input', () => { for (const li of events.children) li.hidden = !matches(li); });
  probe.addEventListener('change', connect);

  main.append(h('h1', { text: 'Live' }),
    h('div.toolbar', {}, field('Probe', probe), field('Filter', filter), pause, state, count), events);
  attempt(async () => {
    const probes = await list('/v1/probes', 'probes');
    probe.append(...probes.map(p => h('option', { value: p.name, text: p.name })));
  });
  connect();
  return () => stop();
}
