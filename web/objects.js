// Objects: the list, upload (file picker or drag and drop, with
// progress), an object's programs, maps and signer, its verifier report
// with the failing source line highlighted, and delete.
import { h, append, clear, time, bytes, table, field, confirmAction } from './dom.js';
import { call, can, get, list, upload } from './api.js';
import { attempt, tell } from './notice.js';

const short = sha => sha.slice(0, 12);

function signer(o) {
  if (!o.signer) return o.builtin ? 'built-in' : 'unsigned';
  return `${o.signer.trusted ? '✓' : '✗'} ${o.signer.keyId}${o.signer.trustedComment ? ` (${o.signer.trustedComment})` : ''}`;
}

function uploader(onDone) {
  const allowed = can('admin');
  const input = h('input', { type: 'file', accept: '.o,application/octet-stream', disabled: !allowed });
  const progress = h('progress', { max: 1, value: 0, hidden: true, 'aria-label': 'upload progress' });
  const send = async file => {
    progress.hidden = false;
    const obj = await attempt(() => upload(file, p => { progress.value = p; }),
      `Uploaded ${file.name}`);
    progress.hidden = true;
    input.value = '';
    if (obj) onDone(obj);
  };
  input.addEventListener('change', () => input.files[0] && send(input.files[0]));
  const zone = h('div.drop', { 'aria-disabled': String(!allowed) },
    field('Upload an eBPF object (.o)', input, allowed ? 'or drop the file here' : 'uploading needs the admin role'),
    progress);
  zone.addEventListener('dragover', e => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', e => {
    e.preventDefault();
    zone.classList.remove('over');
    if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
  });
  return zone;
}

function listView(main) {
  const box = h('div');
  const refresh = async () => {
    const objects = await attempt(() => list('/v1/objects', 'objects'));
    if (!objects) return;
    clear(box).append(table([
      { title: 'Name', cell: o => h('a', { href: `#/objects/${o.sha256}`, text: o.name || short(o.sha256) }) },
      { title: 'SHA-256', cell: o => h('code', { title: o.sha256, text: short(o.sha256) }) },
      { title: 'Size', cell: o => bytes(o.size) },
      { title: 'Programs', cell: o => (o.programs || []).map(p => p.name).join(', ') },
      { title: 'Signer', cell: signer },
      { title: 'Uploaded', cell: o => (o.builtin ? 'built-in' : time(o.created)) },
    ], objects, 'No objects yet: upload one above.'));
  };
  main.append(h('h1', { text: 'Objects' }), uploader(o => { location.hash = `#/objects/${o.sha256}`; }), box);
  refresh();
}

// The verifier log with the failing instruction (the last one before the
// error) marked.
function verifierLog(text) {
  const lines = text.split('\n');
  let failing = -1;
  lines.forEach((l, i) => { if (/^\d+: \(/.test(l)) failing = i; });
  return h('pre.log', {}, lines.map((l, i) =>
    (i === failing ? h('mark.failing', { text: `${l}\n` }) : `${l}\n`)));
}

function report(box, r) {
  append(clear(box), h('h2', { text: r.accepted ? 'Verifier: accepted' : 'Verifier: rejected' }),
    h('p', { text: `kernel ${r.kernelRelease || ''}` }),
    (r.programs || []).map(p => h(`section.verdict.${p.accepted ? 'ok' : 'bad'}`, {},
      h('h3', {}, h('span.badge', { text: p.accepted ? 'accepted' : 'rejected' }), ` ${p.program} `,
        h('small', { text: `${p.section} · ${p.verifiedInsns || 0} instructions verified · ${p.loadTimeUs || 0} µs` })),
      p.error ? h('p.error', { text: p.error }) : null,
      p.missingFeature ? h('p', { text: `needs kernel feature: ${p.missingFeature}` }) : null,
      p.sourceLine ? h('div.source', {}, h('span.where', { text: p.sourceLine }),
        h('mark.source-line', { text: p.sourceText || '' })) : null,
      p.verifierLog ? h('details', {}, h('summary', { text: `Verifier log${p.verifierLogTruncated ? ' (truncated)' : ''}` }),
        verifierLog(p.verifierLog)) : null)));
}

async function detailView(main, sha) {
  main.append(h('p', {}, h('a', { href: '#/objects', text: '← Objects' })));
  const o = await attempt(() => get(`/v1/objects/${encodeURIComponent(sha)}`));
  if (!o) return;
  const verdict = h('div.report', { 'aria-live': 'polite' });
  const verify = h('button', { type: 'button', text: 'Verify', disabled: !can('operator'),
    title: can('operator') ? 'load every program into the verifier, attach nothing' : 'needs the operator role',
    onclick: async () => {
      verify.disabled = true;
      try {
        const r = await call('POST', `/v1/objects/${o.sha256}:verify`);
        report(verdict, r);
      } catch (e) {
        if (e.details?.report) report(verdict, e.details.report);
        tell(e.message);
      } finally { verify.disabled = !can('operator'); }
    } });
  const remove = h('button.danger', { type: 'button', text: 'Delete', disabled: o.builtin || !can('admin'),
    title: can('admin') ? '' : 'needs the admin role',
    onclick: async () => {
      if (!await confirmAction(`Delete object ${o.name}?`, 'Delete')) return;
      if (await attempt(() => call('DELETE', `/v1/objects/${o.sha256}`), `Deleted ${o.name}`) !== undefined)
        location.hash = '#/objects';
    } });
  append(main, h('h1', { text: o.name || short(o.sha256) }),
    o.description ? h('p', { text: o.description }) : null,
    h('dl.facts', {}, [['SHA-256', h('code', { text: o.sha256 })], ['Size', bytes(o.size)],
      ['License', o.license || '—'], ['BTF', o.hasBtf ? 'yes' : 'no'], ['Signer', signer(o)],
      ['Uploaded', o.builtin ? 'built-in' : time(o.created)]]
      .map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)])),
    (o.warnings || []).map(w => h('p.warning', { text: w })),
    h('div.actions', {}, verify, remove),
    verdict,
    h('h2', { text: 'Programs' }),
    table([{ title: 'Program', cell: p => p.name }, { title: 'Section', cell: p => h('code', { text: p.section }) },
      { title: 'Type', cell: p => p.type }, { title: 'Instructions', cell: p => String(p.insnCount || 0) }],
    o.programs || [], 'No programs.'),
    h('h2', { text: 'Maps' }),
    table([{ title: 'Map', cell: m => m.name }, { title: 'Type', cell: m => m.type },
      { title: 'Key', cell: m => m.keyType || `${m.keySize || 0} bytes` },
      { title: 'Value', cell: m => m.valueType || `${m.valueSize || 0} bytes` },
      { title: 'Entries', cell: m => String(m.maxEntries || 0) }],
    (o.maps || []).filter(m => !m.internal), 'No maps.'));
}

export function render(main, [sha]) {
  if (sha) detailView(main, sha);
  else listView(main);
}
