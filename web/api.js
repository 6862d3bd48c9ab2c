// api: the agent's REST API as the console uses it. The token lives in
// sessionStorage only (gone with the tab) and travels as the bearer
// header, never in a URL. A 401 anywhere signs the user out.

const KEY = 'graind.token';
const ROLES = ['reader', 'operator', 'admin'];

export const session = { caller: null };

export function token() { return sessionStorage.getItem(KEY); }
export function signIn(t) { sessionStorage.setItem(KEY, t); }
export function signOut(reason) {
  sessionStorage.removeItem(KEY);
  session.caller = null;
  window.dispatchEvent(new CustomEvent('graind:signed-out', { detail: reason || '' }));
}

// Whether the signed-in principal's role reaches `role`.
export function can(role) {
  const mine = session.caller ? ROLES.indexOf(session.caller.role) : -1;
  return mine >= ROLES.indexOf(role);
}

export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || [];
  }
}

async function failure(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let details = [];
  try {
    const body = await resp.json();
    if (body.message) message = body.message;
    details = body.details || [];
    if (body.verifyReport) details.report = body.verifyReport;
  } catch (_) { /* not a Status body */ }
  if (resp.status === 401) signOut(message);
  return new ApiError(resp.status, message, details);
}

function headers(extra) {
  return { Authorization: `Bearer ${token()}`, Accept: 'application/json', ...extra };
}

// One call: the parsed JSON answer, null for 204; throws ApiError.
export async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  return resp.status === 204 ? null : resp.json();
}

export const get = path => call('GET', path);

// Every page of a list: GET path?pageToken=... until it ends, at most max items.
export async function list(path, key, max = 5000) {
  const items = [];
  let next = '';
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(next ? `${path}${sep}page_token=${encodeURIComponent(next)}` : path);
    items.push(...(page[key] || []));
    next = page.nextPageToken || '';
  } while (next && items.length < max);
  return items;
}

// Upload an object file as the raw body, reporting progress (0..1).
// XMLHttpRequest because fetch reports no upload progress.
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/v1/objects?name=${encodeURIComponent(file.name.replace(/\.o$/, '').replace(/\.bpf$/, ''))}`);
    for (const [k, v] of Object.entries(headers({ 'Content-Type': 'application/octet-stream' })))
      xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = e => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, 'the upload failed: the agent could not be reached'));
    xhr.onload = async () => {
      const resp = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
      if (xhr.status >= 200 && xhr.status < 300) resolve(await resp.json());
      else reject(await failure(resp));
    };
    xhr.send(file);
  });
}

// Follow a watch route (Server-Sent Events through fetch, since
// EventSource cannot send the bearer header). onEvent({id, event, data})
// for each event; after a disconnect it reconnects with Last-Event-ID, so
// nothing is missed or repeated. onState('live' | 'reconnecting' | text).
// Returns a function that stops it.
export function follow(path, onEvent, onState = () => {}) {
  const controller = new AbortController();
  let lastId = '';
  let stopped = false;

  async function once() {
    const extra = lastId ? { 'Last-Event-ID': lastId } : {};
    const resp = await fetch(path, { headers: headers({ Accept: 'text/event-stream', ...extra }),
      signal: controller.signal });
    if (!resp.ok) throw await failure(resp);
    onState('live');
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const ev = { id: '', event: 'message', data: '' };
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;            // keep-alive
          const colon = line.indexOf(':');
          const name = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (name === 'data') ev.data += (ev.data ? '\n' : '') + text;
          else if (name === 'id') ev.id = text;
          else if (name === 'event') ev.event = text;
        }
        if (!ev.data) continue;
        if (ev.id) lastId = ev.id;
        try { ev.data = JSON.parse(ev.data); } catch (_) { /* left as text */ }
        onEvent(ev);
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && e.status !== 0 && e.status < 500) { onState(e.message); return; }
      }
      if (stopped) return;
      onState('reconnecting');
      await new Promise(r => setTimeout(r, 1000));
    }
  })();
  return () => { stopped = true; controller.abort(); };
}
