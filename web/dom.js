// dom: building the page from data without ever parsing it as HTML.
// Every string from the agent goes in as a text node or an attribute
// value, so object names, event fields and verifier logs stay text.

// h('tag.class', {attr: value, onclick: fn}, child, ...): an element.
// Children: nodes, strings (text), numbers, arrays of these; null skipped.
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked' || key === 'disabled' || key === 'hidden') el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

// Append children (as h() takes them) to el.
export function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// A time in the browser's zone, with UTC on hover.
export function time(iso) {
  if (!iso) return h('span', { text: '—' });
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', { text: iso });
  return h('time', { datetime: iso, title: d.toISOString().replace('T', ' ').replace('Z', ' UTC'),
    text: d.toLocaleString() });
}

export function bytes(n) {
  n = Number(n || 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function duration(seconds) {
  let s = Math.floor(Number(seconds || 0));
  const parts = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]])
    if (s >= size) { parts.push(`${Math.floor(s / size)}${unit}`); s %= size; }
  parts.push(`${s}s`);
  return parts.slice(0, 2).join(' ');
}

// A table: columns [{title, cell: row => node|string}], rows, and what to
// say when there are none.
export function table(columns, rows, empty, caption) {
  if (!rows.length) return h('p.empty', { text: empty });
  return h('div.scroll', {}, h('table', {},
    caption ? h('caption', { text: caption }) : null,
    h('thead', {}, h('tr', {}, columns.map(c => h('th', { scope: 'col', text: c.title })))),
    h('tbody', {}, rows.map(r => h('tr', {}, columns.map(c => h('td', { 'data-label': c.title }, c.cell(r))))))));
}

// A labelled form control: label text, then the control.
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h('div.field', {}, h('label', { for: id, text: label }), control,
    hint ? h('small', { text: hint }) : null);
}

// Ask before something that cannot be undone: a modal dialog, keyboard
// reachable, Escape cancels. Resolves true when confirmed.
export function confirmAction(question, action) {
  return new Promise(resolve => {
    const dialog = h('dialog.confirm', { 'aria-label': 'Confirm' });
    const done = ok => { dialog.close(); dialog.remove(); resolve(ok); };
    append(dialog, [h('p', { text: question }), h('div.actions', {},
      h('button.danger', { type: 'button', text: action, onclick: () => done(true) }),
      h('button', { type: 'button', text: 'Cancel', onclick: () => done(false) }))]);
    dialog.addEventListener('cancel', e => { e.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector('button').focus();
  });
}
