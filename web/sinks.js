// Sinks: each forwarder's health (lag in samples and seconds, last
// success, last error, what it sent) and, for operators, its
// configuration to edit or delete. Secrets are masked by the agent; a
// masked secret sent back keeps the stored one.
import { h, clear, time, bytes, table, field, confirmAction } from './dom.js';
import { call, can, list } from './api.js';
import { attempt } from './notice.js';

const EXAMPLE = { statsd: { host: '127.0.0.1', port: 8125, prefix: 'graind' } };

function editable(sink) {
  const copy = { ...sink };
  delete copy.name;
  delete copy.health;
  delete copy.managedBy;
  return copy;
}

function editor(onSaved, sink) {
  const allowed = can('operator') && !sink?.managedBy;
  const name = h('input', { name: 'sink-name', required: true, value: sink?.name || '', autocomplete: 'off' });
  const text = h('textarea.code', { name: 'sink-config', rows: 8, spellcheck: 'false',
    value: JSON.stringify(sink ? editable(sink) : EXAMPLE, null, 2) });
  const save = h('button', { type: 'submit', text: 'Save sink', disabled: !allowed,
    title: allowed ? '' : sink?.managedBy ? `managed by ${sink.managedBy}` : 'needs the operator role' });
  const form = h('form.sink-editor', { 'aria-label': 'Sink configuration' },
    field('Name', name), field('Configuration (proto3 JSON: statsd or s3, selector)', text), save);
  form.addEventListener('submit', async e => {
    e.preventDefault();
    let body;
    try { body = JSON.parse(text.value); } catch (err) { return attempt(() => { throw new Error(`the configuration is not JSON: ${err.message}`); }); }
    if (await attempt(() => call('PUT', `/v1/sinks/${encodeURIComponent(name.value)}`, body), `Sink ${name.value} saved`) !== undefined)
      onSaved();
    return undefined;
  });
  return form;
}

export function render(main) {
  const box = h('div');
  const edit = h('div');
  const refresh = async () => {
    const sinks = await attempt(() => list('/v1/sinks', 'sinks'));
    if (!sinks) return;
    clear(box).append(table([
      { title: 'Sink', cell: s => s.name },
      { title: 'Kind', cell: s => (s.statsd ? `StatsD ${s.statsd.host}:${s.statsd.port}` : s.s3 ? `S3 ${s.s3.bucket}` : '?') },
      { title: 'Lag', cell: s => `${s.health?.lagRows || 0} samples · ${Number(s.health?.lagSeconds || 0).toFixed(1)} s` },
      { title: 'Last success', cell: s => time(s.health?.lastSuccess) },
      { title: 'Last error', cell: s => s.health?.lastError || '—' },
      { title: 'Sent', cell: s => `${s.health?.samplesSent || 0} samples · ${bytes(s.health?.bytesSent)}` },
      { title: 'Actions', cell: s => h('div.actions', {},
        h('button', { type: 'button', text: 'Edit', 'aria-label': `Edit ${s.name}`,
          onclick: () => { clear(edit).append(editor(refresh, s)); edit.querySelector('textarea').focus(); } }),
        h('button.danger', { type: 'button', text: 'Delete', 'aria-label': `Delete ${s.name}`,
          disabled: !can('operator') || Boolean(s.managedBy), title: can('operator') ? '' : 'needs the operator role',
          onclick: async () => {
            if (!await confirmAction(`Delete sink ${s.name}? Samples it has not sent stay in the buffer.`, 'Delete')) return;
            if (await attempt(() => call('DELETE', `/v1/sinks/${encodeURIComponent(s.name)}`), `Deleted ${s.name}`) !== undefined) refresh();
          } })) },
    ], sinks, 'No sinks yet: add a StatsD or S3 sink with the form below.'));
  };
  clear(edit).append(editor(refresh));
  main.append(h('h1', { text: 'Sinks' }), box, h('h2', { text: 'Add or change a sink' }), edit);
  refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}
