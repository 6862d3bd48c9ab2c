// notice: one message for the user at the top of the page (an error from
// the API with its message, or a success), cleared on navigation.
import { h, clear } from './dom.js';
import { ApiError } from './api.js';

const notice = document.getElementById('notice');

export function tell(message, kind = 'error') {
  clear(notice);
  if (!message) return;
  notice.append(h(`div.notice.${kind}`, {}, h('span', { text: message }),
    h('button.link', { type: 'button', 'aria-label': 'Dismiss', text: '×', onclick: () => clear(notice) })));
}

// Run a control's action; its failure becomes the notice. Resolves to the
// action's result, or undefined when it failed.
export async function attempt(action, success) {
  try {
    const result = await action();
    if (success) tell(success, 'ok');
    return result;
  } catch (e) {
    tell(e instanceof ApiError ? e.message : String(e));
    return undefined;
  }
}
