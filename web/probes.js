// Probes: the list with each program's state, run count and run time,
// kept current by the probe watch; a form that builds a probe from a
// built-in or an uploaded object, offering the hooks its programs fit;
// attach, detach, delete; a map dumped as a table.
import { h, append, clear, time, table, field, confirmAction } from './dom.js';
import { call, can, follow, get, list } from './api.js';
import { attempt, tell } from './notice.js';

const STATE = { PROGRAM_ATTACHED: 'attached', PROGRAM_DETACHED: 'detached', PROGRAM_FAILED: 'failed' };

// The attach kinds a program of this libbpf type can take, and their fields.
const KINDS = {
  auto: { label: 'from its section', fields: [] },
  xdp: { label: 'XDP', fields: [['ifname', 'Interface']] },
  tc: { label: 'TC', fields: [['ifname', 'Interface'], ['direction', 'Direction', ['TC_INGRESS', 'TC_EGRESS']]] },
  tracepoint: { label: 'tracepoint', fields: [['category', 'Category'], ['name', 'Event']] },
  rawTracepoint: { label: 'raw tracepoint', fields: [['name', 'Event']] },
  uprobe: { label: 'uprobe', fields: [['binary', 'Binary'], ['symbol', 'Symbol']] },
  uretprobe: { label: 'uretprobe', fields: [['binary', 'Binary'], ['symbol', 'Symbol']] },
  kprobe: { label: 'kprobe', fields: [['function', 'Function']] },
  kretprobe: { label: 'kretprobe', fields: [['function', 'Function']] },
  perfEvent: { label: 'perf event', fields: [['type', 'Type'], ['config', 'Config'], ['sampleFreq', 'Frequency']] },
  cgroup: { label: 'cgroup', fields: [['path', 'Cgroup path'], ['attachType', 'Attach type']] },
};
const FITS = {
  xdp: ['xdp'], sched_cls: ['tc'], sched_act: ['tc'], tracepoint: ['tracepoint'],
  raw_tracepoint: ['rawTracepoint'], raw_tracepoint_writable: ['rawTracepoint'],
  kprobe: ['kprobe', 'kretprobe', 'uprobe', 'uretprobe'], perf_event: ['perfEvent'],
  cgroup_skb: ['cgroup'], cgroup_sock: ['cgroup'], cgroup_sock_addr: ['cgroup'], cgroup_sockopt: ['cgroup'],
  cgroup_sysctl: ['cgroup'], cgroup_device: ['cgroup'], sock_ops: ['cgroup'],
};
const kindsFor = type => ['auto', ...(FITS[type] || [])];

const needs = role => (can(role) ? '' : `needs the ${role} role`);

function programStates(p) {
  if (!(p.programs || []).length) return h('span', { text: 'not loaded' });
  return h('ul.states', {}, (p.programs || []).map(s => h(`li.${STATE[s.state] || 'unknown'}`, {},
    h('span.badge', { text: STATE[s.state] || 'unknown' }), ` ${s.program}`,
    s.runCount ? h('small', { text: ` · ${s.runCount} runs · ${(Number(s.runTimeNs || 0) / Number(s.runCount)).toFixed(0)} ns/run` }) : null,
    s.error ? h('div.error', { text: s.error }) : null)));
}

async function act(name, verb) {
  if (verb === 'delete') {
    if (!await confirmAction(`Delete probe ${name}? Its programs leave the kernel.`, 'Delete')) return false;
    return await attempt(() => call('DELETE', `/v1/probes/${encodeURIComponent(name)}`), `Deleted ${name}`) !== undefined;
  }
  return await attempt(() => call('POST', `/v1/probes/${encodeURIComponent(name)}:${verb}`),
    `${name}: ${verb === 'attach' ? 'attached' : 'detached'}`) !== undefined;
}

function actions(p, after) {
  const op = needs('operator');
  const b = (text, verb, cls = '') => h(`button${cls}`, { type: 'button', text, disabled: Boolean(op), title: op,
    'aria-label': `${text} ${p.name}`, onclick: async () => { if (await act(p.name, verb)) after(verb); } });
  return h('div.actions', {}, b('Attach', 'attach'), b('Detach', 'detach'), b('Delete', 'delete', '.danger'));
}

function listView(main) {
  const box = h('div', { 'aria-live': 'polite' });
  let pending = null;
  const refresh = async () => {
    const probes = await attempt(() => list('/v1/probes', 'probes'));
    if (!probes) return;
    clear(box).append(table([
      { title: 'Probe', cell: p => h('a', { href: `#/probes/${encodeURIComponent(p.name)}`, text: p.name }) },
      { title: 'Object', cell: p => p.spec?.builtin || (p.spec?.objectSha256 || '').slice(0, 12) },
      { title: 'Programs', cell: programStates },
      { title: 'Error', cell: p => p.error || (p.warnings || []).join('; ') || '—' },
      { title: 'Updated', cell: p => time(p.updated) },
      { title: 'Actions', cell: p => (p.managedBy ? h('small', { text: `managed by ${p.managedBy}` }) : actions(p, refresh)) },
    ], probes, 'No probes. Create one with the form below, from a built-in such as exec or an uploaded object.'));
  };
  const soon = () => { clearTimeout(pending); pending = setTimeout(refresh, 150); };
  main.append(h('h1', { text: 'Probes' }), box, h('h2', { text: 'New probe' }), creator(refresh));
  refresh();
  const stop = follow('/v1/probes:watch', soon);
  return () => { stop(); clearTimeout(pending); };
}

// The form: a name, a source, then per program whether to attach it and
// where; constants as NAME=VALUE lines.
function creator(onCreated) {
  const form = h('form.creator', { 'aria-label': 'New probe' });
  const name = h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9_.\\-]{1,64}', autocomplete: 'off' });
  const source = h('select', { name: 'source' });
  const programs = h('fieldset.programs', {}, h('legend', { text: 'Programs' }));
  const constants = h('textarea', { name: 'constants', rows: 2, placeholder: 'NAME=VALUE, one a line' });
  const outputs = h('fieldset.outputs', {}, h('legend', { text: 'Outputs' }));
  const submit = h('button', { type: 'submit', text: 'Create probe', disabled: !can('operator'), title: needs('operator') });
  let objects = [];

  const drawPrograms = () => {
    const obj = objects.find(o => o.sha256 === source.value);
    clear(programs).append(h('legend', { text: 'Programs' }));
    clear(outputs).append(h('legend', { text: 'Outputs' }));
    if (!obj) return;
    // What each map becomes: the agent's choice, metrics it polls,
    // events it reads, or nothing.
    for (const m of (obj.maps || []).filter(x => !x.internal)) {
      const choice = h('select', { name: `output-${m.name}` },
        [['auto', 'automatic'], ['metric', 'metrics (polled)'], ['events', 'events (ring/perf buffer)'], ['none', 'none']]
          .map(([v, t]) => h('option', { value: v, text: t })));
      choice.dataset.map = m.name;
      outputs.append(field(`Map ${m.name} (${m.type})`, choice));
    }
    for (const p of obj.programs || []) {
      const use = h('input', { type: 'checkbox', checked: true, name: `use-${p.name}` });
      const kind = h('select', { name: `kind-${p.name}` },
        kindsFor(p.type).map(k => h('option', { value: k, text: KINDS[k].label })));
      const params = h('div.params');
      const drawParams = () => {
        clear(params);
        for (const [key, label, choices] of KINDS[kind.value].fields) {
          const control = choices
            ? h('select', { name: `${p.name}.${key}` }, choices.map(c => h('option', { value: c, text: c })))
            : h('input', { name: `${p.name}.${key}`, autocomplete: 'off' });
          control.dataset.key = key;
          params.append(field(label, control));
        }
      };
      kind.addEventListener('change', drawParams);
      drawParams();
      const row = h('div.program', {}, h('label.check', {}, use, ` ${p.name} `, h('small', { text: `(${p.section})` })),
        field(`Hook for ${p.name}`, kind), params);
      row.dataset.program = p.name;
      programs.append(row);
    }
  };
  source.addEventListener('change', drawPrograms);

  form.addEventListener('submit', async e => {
    e.preventDefault();
    const obj = objects.find(o => o.sha256 === source.value);
    if (!obj) return tell('Choose an object first.');
    const spec = obj.builtin ? { builtin: obj.name } : { objectSha256: obj.sha256 };
    spec.programs = [...programs.querySelectorAll('.program')].filter(row => row.querySelector('input[type=checkbox]').checked)
      .map(row => {
        const kind = row.querySelector('select').value;
        const attach = {};
        for (const c of row.querySelectorAll('.params [data-key]')) if (c.value !== '') attach[c.dataset.key] = c.value;
        return { program: row.dataset.program, attach: { [kind]: attach } };
      });
    if (!spec.programs.length) return tell('Choose at least one program.');
    spec.outputs = [...outputs.querySelectorAll('select')].filter(c => c.value !== 'auto')
      .map(c => ({ map: c.dataset.map, [c.value]: c.value === 'none' ? true : {} }));
    spec.constants = constants.value.split('\n').map(l => l.trim()).filter(Boolean).map(l => {
      const eq = l.indexOf('=');
      return { name: l.slice(0, eq < 0 ? l.length : eq).trim(), value: eq < 0 ? '' : l.slice(eq + 1).trim() };
    });
    const made = await attempt(() => call('PUT', `/v1/probes/${encodeURIComponent(name.value)}`, spec),
      `Probe ${name.value} stored`);
    if (made) onCreated();
    return undefined;
  });

  attempt(async () => {
    objects = await list('/v1/objects', 'objects');
    source.append(...objects.map(o => h('option', { value: o.sha256,
      text: `${o.builtin ? 'built-in' : 'object'}: ${o.name || o.sha256.slice(0, 12)}` })));
    drawPrograms();
  });
  form.append(field('Name', name, 'letters, digits, _ . - (at most 64)'), field('Source', source), programs,
    outputs, field('Constants', constants, '.rodata values set before load'), submit);
  return form;
}

function mapDump(box, probe, map) {
  attempt(async () => {
    const d = await get(`/v1/probes/${encodeURIComponent(probe)}/maps/${encodeURIComponent(map)}`);
    const fields = list => (list || []).map(f => `${f.name}=${f.int ?? f.uint ?? f.real ?? f.text ?? f.flag ?? ''}`).join(' ');
    append(clear(box), d.warning ? h('p.warning', { text: d.warning }) : null,
      table([{ title: 'Key', cell: e => (d.decoded ? fields(e.key) : h('code', { text: e.rawKey })) },
        { title: 'Value', cell: e => (d.decoded ? fields(e.value) : h('code', { text: e.rawValue })) }],
      d.entries || [], 'The map is empty.', `${map}: ${(d.entries || []).length} entries`));
  });
}

function detailView(main, name) {
  main.append(h('p', {}, h('a', { href: '#/probes', text: '← Probes' })));
  const box = h('div');
  main.append(box);
  const draw = async () => {
    const p = await attempt(() => get(`/v1/probes/${encodeURIComponent(name)}`));
    if (!p) return;
    const dump = h('div.dump', { 'aria-live': 'polite' });
    const obj = await attempt(async () => (p.spec?.builtin
      ? (await list('/v1/objects', 'objects')).find(o => o.builtin && o.name === p.spec.builtin)
      : get(`/v1/objects/${p.spec.objectSha256}`)));
    const maps = obj ? (obj.maps || []).filter(m => !m.internal).map(m => m.name) : [];
    const mapInput = h('input', { name: 'map', list: 'probe-maps', autocomplete: 'off', value: maps[0] || '' });
    append(clear(box), h('h1', { text: p.name }),
      p.managedBy ? h('p', { text: `Managed by ${p.managedBy}: change it there.` }) : actions(p, v => (v === 'delete' ? (location.hash = '#/probes') : draw())),
      p.error ? h('p.error', { text: p.error }) : null,
      (p.warnings || []).map(w => h('p.warning', { text: w })),
      h('dl.facts', {}, [['Generation', p.generation], ['Created', time(p.created)], ['Updated', time(p.updated)]]
        .map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)])),
      h('h2', { text: 'Programs' }), programStates(p),
      h('h2', { text: 'Maps' }),
      h('form.inline', { onsubmit: e => { e.preventDefault(); mapDump(dump, p.name, mapInput.value); } },
        field('Map', mapInput), h('datalist', { id: 'probe-maps' }, maps.map(m => h('option', { value: m }))),
        h('button', { type: 'submit', text: 'Dump' })), dump,
      h('h2', { text: 'Spec' }), h('pre.spec', { text: JSON.stringify(p.spec, null, 2) }));
  };
  draw();
}

export function render(main, [name]) {
  if (name) return detailView(main, name);
  return listView(main);
}
