// The page: sign-in (a pasted token, #token=… from `make run`'s link, or a single sign-on proxy
// in front that authorises its requests), who the caller is, and
// the sections (#/exports, #/schedules, #/webhooks), each rendered by its own module.

import { api, paths, session } from "./api.js";
import { field, form, h, problemView, showProblem } from "./dom.js";
import * as exportsView from "./exports.js";
import * as schedulesView from "./schedules.js";
import * as webhooksView from "./webhooks.js";

const VIEWS = {
  exports: ["Exports", exportsView],
  schedules: ["Schedules", schedulesView],
  webhooks: ["Webhooks", webhooksView],
};
const WRITE = "exports:write";
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const identity = document.getElementById("identity");
const signOutButton = document.getElementById("sign-out");
const state = { me: null, org: null, stop: null };

/** A token in the fragment (`#token=…`) is taken, the fragment removed from the address bar; a bad % escape throws. */
function tokenFromFragment() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", `${location.pathname}${location.search}#/exports`);
  return decodeURIComponent(match[1]).trim();
}

/**
 * Ask the API who this is. `firstLook`: before any token, in case a single sign-on proxy in front
 * authorises the page's requests itself; a 401 then just shows the sign-in form.
 */
async function signIn({ firstLook = false } = {}) {
  try {
    state.me = await api(paths.me(), { endsSession: !firstLook });
  } catch (problem) {
    if (firstLook) showSignIn(problem.status === 401 ? undefined : problem);
    else if (problem.status !== 401) showSignIn(problem); // a 401 ends the session (below)
    return;
  }
  if (!state.me.orgs.length) {
    session.clear();
    showSignIn({ title: "No organisation", detail: "This token grants no organisation: ask for one that does." });
    return;
  }
  state.org = state.me.orgs.includes(state.org) ? state.org : state.me.orgs[0];
  showIdentity();
  nav.hidden = false;
  signOutButton.hidden = !session.token; // signed in by a proxy: its own sign-out
  route();
}

function showIdentity() {
  const { me } = state;
  const readOnly = !me.scopes.includes(WRITE);
  let org = h("code", { text: state.org });
  if (me.orgs.length > 1) {
    const choose = (event) => {
      state.org = event.target.value;
      route();
    };
    org = h("select", { id: "org", "aria-label": "Organisation", onchange: choose },
      me.orgs.map((id) => h("option", { value: id, selected: id === state.org, text: id })));
  }
  identity.replaceChildren(h("dl", {},
    h("div", {}, h("dt", { text: "Signed in as" }), h("dd", { text: me.subject })),
    h("div", {}, h("dt", { text: me.orgs.length > 1 ? "Organisations" : "Organisation" }), h("dd", {}, org)),
    h("div", {}, h("dt", { text: "Scopes" }),
      h("dd", { text: me.scopes.join(", ") + (readOnly ? " (read-only: no requests, cancels or changes)" : "") }))));
  identity.hidden = false;
}

function showSignIn(problem) {
  state.stop?.();
  Object.assign(state, { me: null, stop: null });
  nav.hidden = identity.hidden = signOutButton.hidden = true;
  const input = h("input", { type: "password", autocomplete: "off", spellcheck: "false", autocapitalize: "off" });
  const signInForm = form("Sign in", [
    field("token", "Bearer token", input,
      "Paste a token (`analytics-exports token`, or your identity provider's). It stays in this tab's " +
      "session storage and is sent only in the Authorization header."),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Sign in" })),
  ], async () => {
    const token = input.value.trim().replace(/^Bearer\s+/i, "");
    if (!token) {
      const missing = { title: "A token is required", detail: "Paste a bearer token.", errors: { token: "required" } };
      showProblem(signInForm, missing);
      return;
    }
    session.set(token);
    await signIn();
  });
  document.title = "Sign in · Analytics exports";
  const heading = h("h1", { tabindex: "-1", text: "Sign in" });
  main.replaceChildren(...[heading, problem && problemView(problem), signInForm].filter(Boolean));
  input.focus();
}

function signOut(problem) {
  session.clear();
  showSignIn(problem);
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
}

function route() {
  if (!state.me) return;
  const name = /^#\/(\w+)/.exec(location.hash)?.[1];
  if (location.hash && !name) return; // an in-page link such as #main
  const [title, view] = VIEWS[name] || VIEWS.exports;
  const current = VIEWS[name] ? name : "exports";
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.view === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  state.stop?.();
  main.replaceChildren();
  document.title = `${title} · Analytics exports`;
  // Leaving the view aborts its calls and timers: no answer arrives in a view no longer shown.
  const left = new AbortController();
  state.stop = () => left.abort();
  view.render(main, { org: state.org, me: state.me, canWrite: state.me.scopes.includes(WRITE), signal: left.signal });
  main.querySelector("h1")?.focus();
}

addEventListener("session-ended", (event) => signOut(event.detail));
addEventListener("hashchange", route);
signOutButton.addEventListener("click", () => signOut());

try {
  const linked = tokenFromFragment();
  if (linked) session.set(linked);
  signIn({ firstLook: !session.token });
} catch {
  showSignIn({ title: "This sign-in link is damaged",
    detail: "Its token is not readable (a bad % escape): open the link again as printed, or paste the token." });
}
