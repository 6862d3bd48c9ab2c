// Audit: every change made through the API, newest first, a page at a
// time.
import { h, clear, time, table } from './dom.js';
import { get } from './api.js';
import { attempt } from './notice.js';

const PAGE = 50;

export function render(main) {
  const box = h('div');
  const more = h('button', { type: 'button', text: 'Older entries', hidden: true });
  let rows = [];
  let before = '';

  const load = async () => {
    const q = new URLSearchParams({ page_size: String(PAGE), newest_first: 'true' });
    if (before) q.set('page_token', before);
    const page = await attempt(() => get(`/v1/audit?${q}`));
    if (!page) return;
    rows = rows.concat(page.entries || []);
    before = page.nextPageToken || '';
    more.hidden = !before;
    clear(box).append(table([
      { title: 'Time', cell: e => time(e.time) },
      { title: 'Who', cell: e => `${e.principal || e.role} (${e.role})` },
      { title: 'Action', cell: e => e.action },
      { title: 'Target', cell: e => e.target || '—' },
      { title: 'Result', cell: e => h(`span.result.${e.result < 400 ? 'ok' : 'bad'}`, { text: String(e.result) }) },
      { title: 'Message', cell: e => e.message || '' },
    ], rows, 'Nothing changed through the API yet.'));
  };
  more.addEventListener('click', load);
  main.append(h('h1', { text: 'Audit' }), box, more);
  load();
}
