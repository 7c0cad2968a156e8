// DOM helpers: elements built with textContent only (never innerHTML), labelled fields with an
// error slot each, tables that read as cards on narrow screens, problems and status words.

let counter = 0;
export const uid = (prefix) => `${prefix}-${++counter}`;

const PROPERTIES = new Set(["value", "checked", "selected"]);

/** h("button", {class: "x", onclick: fn, "aria-label": "…"}, child, "text", [more]) */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** A button that never submits: button("Refresh", load), button("Delete", fn, { class: "danger" }). */
export function button(label, onclick, props = {}) {
  return h("button", { type: "button", class: "secondary", onclick, ...props }, label);
}

export const note = (text) => h("p", { class: "notice", text });

/** Words for screen readers only: button(["Delete", srOnly(" schedule 1a2b")]). */
export const srOnly = (text) => h("span", { class: "visually-hidden", text });

/** A labelled control in a box named by its API field (data-field), with a hint and an error slot. */
export function field(name, label, control, hint) {
  control.id ||= uid(name.replace(/\W/g, "-"));
  if (!["checkbox", "radio"].includes(control.type)) control.name ||= name;
  const hintEl = hint ? h("p", { class: "hint", id: `${control.id}-hint`, text: hint }) : null;
  const error = h("p", { class: "field-error", id: `${control.id}-error`, hidden: true });
  describe(control, hintEl?.id, error.id);
  return h("div", { class: "field", "data-field": name },
    h("label", { for: control.id, text: label }), hintEl, control, error);
}

/** A fieldset for several controls that the API may name together (e.g. timeRange). */
export function group(name, legend, ...children) {
  const error = h("p", { class: "field-error", id: uid("group-error"), hidden: true });
  const box = h("fieldset", { "data-field": name }, h("legend", { text: legend }), ...children, error);
  box.querySelectorAll("input, select, textarea").forEach((c) => describe(c, error.id));
  return box;
}

function describe(control, ...ids) {
  const all = [...(control.getAttribute("aria-describedby") || "").split(" "), ...ids];
  control.setAttribute("aria-describedby", all.filter(Boolean).join(" "));
}

export function select(options, value) {
  return h("select", {}, options.map(([v, text]) => h("option", { value: v, selected: v === value, text })));
}

export function problemView(problem) {
  return h("div", { class: "problem", role: "alert", tabindex: "-1" },
    h("p", { class: "problem-title", text: problem.title || "Error" }),
    problem.detail ? h("p", { text: problem.detail }) : null);
}

/** The problem above the form, and each of its field errors next to the control it names. */
export function showProblem(form, problem) {
  clearProblem(form);
  const summary = form.querySelector(":scope > .form-problem");
  summary.replaceChildren(problemView(problem));
  summary.hidden = false;
  let first = null;
  for (const [name, message] of Object.entries(problem.errors || {})) {
    const box = boxFor(form, name);
    if (!box) {
      summary.firstChild.append(h("p", { text: `${name}: ${message}` }));
      continue;
    }
    const slot = box.querySelector(":scope > .field-error");
    slot.textContent = slot.hidden ? message : `${slot.textContent}; ${message}`;
    slot.hidden = false;
    box.querySelectorAll("input, select, textarea").forEach((c) => c.setAttribute("aria-invalid", "true"));
    first ||= box.querySelector("input, select, textarea");
  }
  (first || summary).focus?.();
}

export function clearProblem(form) {
  const summary = form.querySelector(":scope > .form-problem");
  summary.hidden = true;
  summary.replaceChildren();
  form.querySelectorAll(".field-error").forEach((p) => { p.hidden = true; p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
}

/** "timeRange.start" → its own box; "models[2]" → models; "timeRange.x" → the timeRange group. */
function boxFor(form, name) {
  let key = name.replace(/\[\d+\]/g, "");
  while (key) {
    const box = form.querySelector(`[data-field="${CSS.escape(key)}"]`);
    if (box) return box;
    key = key.includes(".") ? key.slice(0, key.lastIndexOf(".")) : "";
  }
  return null;
}

/** A form whose submit runs `onsubmit(form)` (never a native submission: form-action 'none'). */
export function form(label, children, onsubmit) {
  const el = h("form", { "aria-label": label, novalidate: true },
    h("div", { class: "form-problem", tabindex: "-1", hidden: true }), ...children);
  el.addEventListener("submit", (event) => {
    event.preventDefault();
    whileBusy(el.querySelector("button[type=submit]"), () => onsubmit(el));
  });
  return el;
}

/** Focus lost from `el`'s part of the page: on the body, or on a container of `el` (a click on a disabled button). */
const focusLost = (el) => !document.activeElement || document.activeElement.contains(el);

/** Run `task` with `control` disabled (never twice at once); focus back on it if lost meanwhile. */
export async function whileBusy(control, task) {
  if (control.disabled) return;
  control.disabled = true;
  try { await task(); } finally {
    control.disabled = false;
    if (focusLost(control)) control.focus();
  }
}

/** Calls whose latest answer alone counts: `const current = turn(); await …; if (!current()) return;`. */
export function latest(signal) {
  let last = 0;
  return () => { const mine = ++last; return () => mine === last && !signal?.aborted; };
}

/**
 * `const back = keepFocus(box)` before a redraw, `back(fallback)` after: focus lost in the redraw goes to
 * the same control (data-action) of the same row (data-key), else that row's first button, else fallback.
 */
export function keepFocus(box) {
  const was = box.contains(document.activeElement) ? document.activeElement : null;
  const key = was?.closest("[data-key]")?.dataset.key;
  return (fallback) => {
    if (!was || !focusLost(box)) return;
    const scope = key ? box.querySelector(`[data-key="${CSS.escape(key)}"]`) : box;
    (scope?.querySelector(`[data-action="${was.dataset.action}"]:not(:disabled)`) ||
      (key && scope?.querySelector("button:not(:disabled)")) || fallback)?.focus();
  };
}

/**
 * A list that changes (schedules, webhooks): `fetchItems()` answers the items, `draw(items)` shows them (rows
 * with data-key). `run(task, after)` makes a change, announces what `after(answer)` says, draws the list again.
 */
export function listing(signal, fetchItems, draw) {
  const notes = h("div", { role: "status" });
  const box = h("div", { tabindex: "-1" });
  const turn = latest(signal);
  async function load() {
    const current = turn();
    const shown = await fetchItems().then(draw).catch(problemView);
    if (current()) box.replaceChildren(shown);
  }
  async function run(task, after) {
    const back = keepFocus(box);
    notes.replaceChildren();
    try {
      const said = after(await task());
      if (said) announce(said);
    } catch (problem) {
      return notes.replaceChildren(problemView(problem));
    }
    await load();
    back(box.querySelector("table") || box);
  }
  load();
  const focus = (key) => box.querySelector(`[data-key="${CSS.escape(key)}"] button`)?.focus();
  return { el: [notes, box], notes, load, run, focus };
}

/** Pages appended to `box` (`fetchPage(cursor)` → {items, nextCursor}, `draw` each), the next on "More …", then focused. */
export async function morePages(box, fetchPage, draw, moreLabel, cursor = null) {
  let added;
  try {
    const page = await fetchPage(cursor);
    box.append(added = draw(page.items, cursor));
    if (page.nextCursor) box.append(button(moreLabel, (event) => {
      event.currentTarget.remove();
      morePages(box, fetchPage, draw, moreLabel, page.nextCursor);
    }));
  } catch (problem) {
    box.append(added = problemView(problem));
  }
  if (cursor) (added.querySelector("table") || added).focus();
}

/** A table: `columns` are [label, (item) => node|string, className?]; cells carry their label. */
export function table(caption, columns, items, rowProps = () => ({})) {
  return h("div", { class: "table-wrap" }, h("table", { class: "cards", tabindex: "-1" },
    h("caption", { text: caption }),
    h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col", text: label })))),
    h("tbody", {}, items.map((item) => tableRow(columns, item, rowProps(item))))));
}

export function tableRow(columns, item, props = {}) {
  return h("tr", props, columns.map(([label, cell, cls]) =>
    h("td", { "data-label": label, class: cls }, h("span", {}, cell(item)))));
}

export function time(iso) {
  if (!iso) return "—";
  const shown = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
  return h("time", { datetime: iso, title: iso, text: shown });
}

/** A status as a word with a mark (app.css): pending, succeeded, enabled, failing, agrees, … */
export function statusWord(status) {
  return h("span", { class: `status status-${status}`, text: status });
}

export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

export function section(title, ...children) {
  const id = uid("h");
  return h("section", { "aria-labelledby": id }, h("h2", { id, text: title }), ...children);
}

export const short = (uuid) => (uuid ? uuid.slice(0, 8) : "—");
