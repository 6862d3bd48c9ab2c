// app: sign-in, the navigation and the router. Each view is a module
// whose render(main, params) draws into main and returns a function that
// stops what it started (streams, timers) when the user leaves it.
import { h, clear, field } from './dom.js';
import { ApiError, get, session, signIn, signOut, token } from './api.js';
import { tell } from './notice.js';
import * as overview from './overview.js';
import * as objects from './objects.js';
import * as probes from './probes.js';
import * as live from './live.js';
import * as charts from './charts.js';
import * as sinks from './sinks.js';
import * as audit from './audit.js';

const views = { overview, objects, probes, live, charts, sinks, audit };
const main = document.getElementById('view');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let leave = () => {};

function showSignIn(reason) {
  leave();
  leave = () => {};
  nav.hidden = true;
  clear(who);
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true,
    spellcheck: 'false' });
  const form = h('form.signin', { 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title', text: 'Sign in to graind' }),
    h('p', { text: 'Paste a bearer token: admin.token or reader.token from the agent\'s state directory, or one made by graind token add. It stays in this tab only.' }),
    field('Token', input),
    h('button', { type: 'submit', text: 'Sign in' }));
  form.addEventListener('submit', async e => {
    e.preventDefault();
    signIn(input.value.trim());
    await start();
  });
  clear(main).append(form);
  tell(reason || '');
  input.focus();
}

function route() {
  const [name, ...rest] = (location.hash.replace(/^#\/?/, '') || 'overview').split('/');
  const view = views[name] || overview;
  leave();
  tell('');
  for (const a of nav.querySelectorAll('a'))
    a.toggleAttribute('aria-current', a.getAttribute('href') === `#/${name}`);
  clear(main);
  leave = view.render(main, rest.map(decodeURIComponent)) || (() => {});
  main.focus({ preventScroll: true });
}

async function start() {
  if (!token()) return showSignIn();
  try {
    const status = await get('/v1/status');
    session.caller = status.caller || { principal: '?', role: 'reader' };
  } catch (e) {
    if (!token()) return undefined;          // a 401 signed out already
    tell(e instanceof ApiError ? e.message : String(e));
    return undefined;
  }
  nav.hidden = false;
  clear(who).append(h('span', { text: `${session.caller.principal} · ` }),
    h('strong.role', { text: session.caller.role }),
    h('button.link', { type: 'button', text: 'Sign out', onclick: () => signOut() }));
  route();
  return undefined;
}

window.addEventListener('hashchange', () => session.caller && route());
window.addEventListener('graind:signed-out', e =>
  showSignIn(e.detail ? `Signed out: ${e.detail}` : ''));
start();
