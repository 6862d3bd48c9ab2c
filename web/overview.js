// Overview: the agent, the kernel's features (with why each missing one
// is missing), counts, the store and the buffer, the sinks' lag.
import { h, clear, time, bytes, duration, table } from './dom.js';
import { get } from './api.js';
import { attempt } from './notice.js';

const FEATURES = { btf: 'BTF', bpffs: 'bpffs', tracefs: 'tracefs', kprobes: 'kprobes',
  ringbuf: 'ring buffers', xdp: 'XDP', bpfStats: 'run-time statistics', fentry: 'fentry', lsm: 'LSM' };

function dl(pairs) {
  return h('dl.facts', {}, pairs.map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]));
}

function fill(part, whole) {
  const share = Number(whole) ? Math.min(1, Number(part || 0) / Number(whole)) : 0;
  return h('span', {}, h('meter', { min: 0, max: 1, value: share, 'aria-label': 'buffer fill' }),
    ` ${(share * 100).toFixed(1)}%`);
}

function draw(box, st) {
  const features = st.features || {};
  const notes = features.notes || [];
  const storage = st.storage || {};
  clear(box).append(
    h('section.card', { 'aria-labelledby': 'ov-agent' }, h('h2', { id: 'ov-agent', text: 'Agent' }), dl([
      ['Version', st.version], ['Kernel', st.kernelRelease],
      ['Up', h('span', {}, duration(st.uptimeSeconds), ' since ', time(st.started))],
      ['Listening', (st.listen || []).join(', ') || '—'],
      ['Signed in as', `${st.caller?.principal} (${st.caller?.role})`],
      ['Signatures', st.signatures?.requireSigned ? 'required' : 'optional'],
    ])),
    h('section.card', { 'aria-labelledby': 'ov-counts' }, h('h2', { id: 'ov-counts', text: 'Store' }), dl([
      ['Objects', st.objectCount || '0'], ['Probes', st.probeCount || '0'],
      ['Samples buffered', `${st.sampleCount || 0} of ${st.bufferRows || '?'}`],
      ['Buffer fill (rows)', fill(st.sampleCount, st.bufferRows)],
      ['Buffer fill (bytes)', h('span', {}, fill(st.sampleBytes, st.bufferBytes), ` · ${bytes(st.sampleBytes)} of ${bytes(st.bufferBytes)}`)],
      ['Database', bytes(st.databaseBytes)],
      ['Storage', storage.state === 'failing' ? h('strong.bad', { text: `failing: ${storage.error}` }) : 'ok'],
      ['Samples dropped', storage.samplesDropped || '0'],
    ])),
    h('section.card', { 'aria-labelledby': 'ov-features' }, h('h2', { id: 'ov-features', text: 'Kernel features' }),
      h('ul.features', {}, Object.entries(FEATURES).map(([key, label]) => {
        const present = features[key] === 'FEATURE_PRESENT';
        const why = notes.filter(n => n.toLowerCase().startsWith(key.toLowerCase()) ||
          n.toLowerCase().startsWith(label.toLowerCase()));
        return h(`li.${present ? 'ok' : 'missing'}`, {},
          h('span.badge', { text: present ? 'present' : 'missing' }), ` ${label}`,
          why.length ? h('small', { text: ` — ${why.join('; ')}` }) : null);
      })),
      notes.length ? h('details', {}, h('summary', { text: 'All notes' }),
        h('ul', {}, notes.map(n => h('li', { text: n })))) : null),
    h('section.card.wide', { 'aria-labelledby': 'ov-sinks' }, h('h2', { id: 'ov-sinks', text: 'Sinks' }),
      table([
        { title: 'Sink', cell: s => h('a', { href: `#/sinks`, text: s.name }) },
        { title: 'Kind', cell: s => (s.statsd ? 'StatsD' : s.s3 ? 'S3' : '?') },
        { title: 'Lag (samples)', cell: s => s.health?.lagRows || '0' },
        { title: 'Lag (s)', cell: s => Number(s.health?.lagSeconds || 0).toFixed(1) },
        { title: 'Last error', cell: s => s.health?.lastError || '—' },
      ], st.sinks || [], 'No sinks: samples stay in the buffer. Add one on the Sinks page.')));
}

export function render(main) {
  const box = h('div.grid');
  main.append(h('h1', { text: 'Overview' }), box);
  const refresh = () => attempt(async () => draw(box, await get('/v1/status')));
  refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}
