/**
 * The dashboard's sign-in page (`GET /login`) and its script (`GET /login.js`), served by
 * coordinator/dashboard/server.ts without a session. Both are fixed text: nothing a request
 * carries is ever written into them (the server only picks `auto` and one of the fixed messages).
 *
 * A login link is `…/login#token=T`: the token rides in the fragment, which a browser never sends
 * to a server, a proxy or a log, and never puts in a Referer. The script takes it out of the
 * address bar and the history entry at once (history.replaceState), puts it in the form and
 * submits it: a same-origin POST with the token in the body. It does so by itself only when the
 * server saw that the page was opened by the operator (Sec-Fetch-Site `none`: typed, pasted,
 * opened from the terminal or a bookmark; or `same-origin`); a link followed from another site
 * only fills the form and asks for a click, so no other site can sign the browser in with a
 * token of its choosing. Without a fragment the operator pastes the token into the form.
 */

/** The fixed notes the page can show. */
export type LoginMessage = 'required' | 'invalid' | 'cross-origin' | 'signed-out' | 'query-token';

const MESSAGES: Record<LoginMessage, string> = {
  required: 'Sign in to see the dashboard.',
  invalid: 'This token is not valid (unknown, already used or expired): get a new one with aegis dashboard token.',
  'cross-origin': 'Refused: a sign-in or sign-out must come from this dashboard’s own page.',
  'signed-out': 'Signed out.',
  'query-token': 'Login links carry the token after “#”, not in the query: a token sent in a URL query does not sign anyone in. Get a new link with aegis dashboard token.',
};

const STYLE = `
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
main{max-width:34rem;margin:12vh auto;padding:2rem;background:#fff;border:1px solid #dde1e6;border-radius:8px}
h1{font-size:1.3rem;margin:0 0 1rem}
label{display:block;font-weight:600;margin:.5rem 0 .25rem}
input{width:100%;box-sizing:border-box;font:inherit;font-family:ui-monospace,monospace;padding:.45rem .6rem;border:1px solid #b8c0ca;border-radius:6px}
button{margin-top:.9rem;font:inherit;padding:.45rem 1.1rem;border:0;border-radius:6px;background:#1f5fbf;color:#fff;cursor:pointer}
.note{padding:.6rem .8rem;border-radius:6px;background:#eef3fb;margin:0 0 1rem}
.warn{background:#fff4e0}
.muted{color:#5b6572;font-size:.9rem}
code{font-family:ui-monospace,monospace}
`;

/** The sign-in page. `auto`: submit a token found in the fragment without a click. */
export function loginPage(opts: { auto: boolean; message?: LoginMessage }): string {
  const message = opts.message === undefined ? '' : `<p class="note${opts.message === 'signed-out' || opts.message === 'required' ? '' : ' warn'}" data-testid="login-message" data-message="${opts.message}">${MESSAGES[opts.message]}</p>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<link rel="icon" href="data:,">
<title>Aegis dashboard: sign in</title>
<style>${STYLE}</style>
<script src="/login.js" defer></script>
</head>
<body>
<main data-testid="login-page">
<h1>Aegis dashboard</h1>
${message}
<p class="note warn" id="cross-site" data-testid="login-cross-site" hidden>This sign-in link was opened from another site. Sign in only if you asked for it yourself (with <code>aegis dashboard token</code>).</p>
<form id="login" method="post" action="/login" data-auto="${opts.auto ? '1' : '0'}" autocomplete="off">
<label for="token">Login token</label>
<input id="token" name="token" type="password" required minlength="43" maxlength="43" pattern="[A-Za-z0-9_\\-]{43}" spellcheck="false" autocomplete="off" data-testid="login-token">
<button type="submit" data-testid="sign-in">Sign in</button>
</form>
<p class="muted">Run <code>aegis dashboard token</code> where the operator credential is and open the link it prints (the token rides after “#”, which the browser never sends anywhere), or paste the token above. A token works once.</p>
</main>
</body>
</html>
`;
}

/** The page's script (served as /login.js: the CSP allows no inline script). */
export const LOGIN_SCRIPT = `'use strict';
(function () {
  var m = /^#token=([A-Za-z0-9_-]{43})$/.exec(location.hash);
  // The token leaves the address bar and this history entry before anything else happens.
  if (location.hash || location.search) history.replaceState(null, '', location.pathname);
  var form = document.getElementById('login');
  var input = document.getElementById('token');
  if (!m || !form || !input) return;
  input.value = m[1];
  if (form.getAttribute('data-auto') === '1') {
    form.submit();
    return;
  }
  var note = document.getElementById('cross-site');
  if (note) note.hidden = false;
  var button = form.querySelector('button');
  if (button) button.focus();
})();
`;
