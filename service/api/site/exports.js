// Exports: the request form (presets and custom fields), the org's exports newest first with a
// status filter and paging, live progress, cancel, and one job's facts, proof and audit events.

import { api, paths } from "./api.js";
import {
  announce, button, clearProblem, field, form, group, h, keepFocus, latest, morePages, note, problemView, section,
  select, short, showProblem, srOnly, statusWord, table, tableRow, time, uid,
} from "./dom.js";
import { PRESETS, describeRange, presetRange, toRfc3339, zoneInput } from "./period.js";
import { proofPanel } from "./verify.js";

const STATUSES = ["pending", "running", "succeeded", "failed", "expired", "cancelled"];
const ACTIVE = new Set(["pending", "running"]);
const PAGE_SIZE = 20;
const POLL_MS = 1000;

export function render(root, ctx) {
  const list = exportList(ctx);
  root.append(
    h("h1", { tabindex: "-1", text: "Exports" }),
    ctx.canWrite
      ? requestSection(ctx, list.created)
      : note("This token is read-only: you can see, download and verify exports, not request or cancel them."),
    ...list.el);
  follow(ctx, list);
}

/** The org's exports, newest first a page at a time, and the details of the one opened. */
function exportList(ctx) {
  // The page shown (its cursor), the jobs on it, the job whose details are open.
  const s = { status: "", cursors: [null], page: 0, next: null, jobs: new Map(), detail: null };
  const listBox = h("div");
  const problems = h("div"); // a cancel refused, from a row
  const liveNote = h("p", { class: "progress", role: "status" });
  const detailBox = h("div");
  const [listTurn, detailTurn] = [latest(ctx.signal), latest(ctx.signal)];
  const statusFilter = select([["", "Any status"], ...STATUSES.map((x) => [x, x])], "");
  statusFilter.addEventListener("change", () => {
    Object.assign(s, { status: statusFilter.value, cursors: [null], page: 0 });
    load();
  });
  ctx.signal.addEventListener("abort", () => s.detail?.dispose());

  /** The page of s.page; while it loads its paging buttons are disabled, and an answer overtaken is dropped. */
  async function load() {
    const current = listTurn();
    listBox.querySelectorAll(".pager button").forEach((b) => { b.disabled = true; });
    const query = { limit: PAGE_SIZE, status: s.status, cursor: s.cursors[s.page] };
    try {
      const page = await api(paths.exports(ctx.org), { query, signal: ctx.signal });
      if (!current()) return;
      s.next = page.nextCursor;
      s.jobs = new Map(page.items.map((job) => [job.jobId, job]));
      drawList();
    } catch (problem) {
      if (current()) listBox.replaceChildren(problemView(problem));
    }
  }

  const columns = [
    ["Requested", (job) => time(job.initiatedAt)],
    ["Period", (job) => rangeText(job.timeRange)],
    ["Granularity", (job) => job.granularity],
    ["File", (job) => `${job.format}, ${job.schema}`],
    ["Status", statusText],
    ["Actions", (job) => h("span", { class: "actions" },
      button(["Details", srOnly(` of export ${short(job.jobId)}`)], () => openDetail(job.jobId, true),
        { "data-action": "details" }),
      cancellable(job) && button(["Cancel", srOnly(` export ${short(job.jobId)}`)], () => cancel(job.jobId, problems),
        { class: "danger", "data-action": "cancel" }))],
  ];
  // The row whose details are open: aria-current, and "shown below" after its first cell (app.css).
  const rowProps = (job) => ({ "data-key": job.jobId, "aria-current": job.jobId === s.detail?.job.jobId && "true" });
  const cancellable = (job) => ctx.canWrite && ACTIVE.has(job.status) && !job.cancelRequestedAt;

  const turn = (by) => async () => {
    const back = keepFocus(listBox);
    if (by > 0) s.cursors[s.page + 1] = s.next;
    s.page += by;
    await load();
    back(listBox.querySelector("table"));
  };

  function drawList() {
    const jobs = [...s.jobs.values()];
    listBox.replaceChildren(
      jobs.length
        ? table("Exports, newest first", columns, jobs, rowProps)
        : h("p", { text: s.status ? `No ${s.status} exports.` : "No exports yet." }),
      h("div", { class: "actions pager" },
        button("Previous page", turn(-1), { disabled: s.page === 0, "data-action": "previous" }),
        h("span", { text: `Page ${s.page + 1}` }),
        button("Next page", turn(1), { disabled: !s.next, "data-action": "next" })));
  }

  /** A cancel; its problem shown in `where` (an alert by the row or in the details). */
  async function cancel(jobId, where) {
    where.replaceChildren();
    try {
      update(await api(`${paths.job(ctx.org, jobId)}/cancel`, { method: "POST" }));
    } catch (problem) {
      where.replaceChildren(problemView({ ...problem, title: `Export ${short(jobId)} not cancelled: ${problem.title}` }));
    }
  }

  /** A job changed: its row and its details redrawn in place, focus kept, the change announced. */
  function update(job) {
    const before = s.jobs.get(job.jobId) || (s.detail?.job.jobId === job.jobId ? s.detail.job : null);
    if (before && JSON.stringify(before) === JSON.stringify(job)) return;
    if (before && before.status !== job.status) {
      announce(`Export ${short(job.jobId)} is ${job.status}. ${progress(job)}`);
    }
    const old = listBox.querySelector(`tr[data-key="${job.jobId}"]`);
    if (s.jobs.has(job.jobId) && old) {
      s.jobs.set(job.jobId, job);
      const back = keepFocus(listBox);
      old.replaceWith(tableRow(columns, job, rowProps(job)));
      back();
    }
    if (s.detail?.job.jobId === job.jobId) s.detail.update(job);
  }

  async function openDetail(jobId, focus) {
    const current = detailTurn();
    let job = s.jobs.get(jobId);
    try {
      job = await api(paths.job(ctx.org, jobId), { signal: ctx.signal });
    } catch (problem) {
      if (!job) return current() && detailBox.replaceChildren(problemView(problem));
    }
    if (!current()) return;
    s.detail?.dispose();
    s.detail = jobDetail(ctx, job, cancel);
    detailBox.replaceChildren(s.detail.el);
    listBox.querySelector("tr[aria-current]")?.removeAttribute("aria-current");
    listBox.querySelector(`tr[data-key="${jobId}"]`)?.setAttribute("aria-current", "true");
    if (focus) s.detail.heading.focus();
    update(job);
  }

  async function created(job) {
    announce(`Export ${short(job.jobId)} requested: ${job.status}.`);
    Object.assign(s, { status: "", cursors: [null], page: 0 });
    statusFilter.value = "";
    await load();
    await openDetail(job.jobId, true);
  }

  /** The unfinished exports shown: those on the page, and the one whose details are open. */
  function unfinished() {
    const ids = new Set([...s.jobs.values()].filter((j) => ACTIVE.has(j.status)).map((j) => j.jobId));
    if (s.detail && ACTIVE.has(s.detail.job.status)) ids.add(s.detail.job.jobId);
    return [...ids];
  }

  load();
  const el = [section("Recent exports",
    h("div", { class: "grid" }, field("status", "Show", statusFilter)),
    h("div", { class: "actions" }, button("Refresh", load)),
    liveNote, problems, listBox), detailBox];
  return { el, created, update, unfinished, liveNote };
}

/**
 * Live progress: the unfinished exports fetched again each second until they finish; paused while
 * the page is hidden, stopped when the view is left. The note is written only when it changes.
 */
function follow(ctx, list) {
  let timer = null, busy = false;
  const say = (text) => { if (list.liveNote.textContent !== text) list.liveNote.textContent = text; };
  const next = () => { if (!busy && !timer && !document.hidden && !ctx.signal.aborted) timer = setTimeout(tick, POLL_MS); };
  async function tick() {
    timer = null;
    busy = true;
    try {
      for (const id of list.unfinished()) {
        const job = await api(paths.job(ctx.org, id), { signal: ctx.signal });
        if (ctx.signal.aborted) return;
        list.update(job);
      }
      const following = list.unfinished().length;
      say(following ? `Live: following ${following} unfinished export(s).` : "");
    } catch (problem) {
      if (!ctx.signal.aborted) say(`Live updates paused: ${problem.title}. ${problem.detail || ""}`);
    }
    busy = false;
    next();
  }
  const restart = () => { clearTimeout(timer); timer = null; next(); };
  document.addEventListener("visibilitychange", restart, { signal: ctx.signal });
  ctx.signal.addEventListener("abort", () => clearTimeout(timer));
  next();
}

/** The fields of the file an export (or a schedule's runs) makes, and their values for a body. */
export function outputFields() {
  const granularity = select([["hourly", "hourly"], ["daily", "daily"], ["monthly", "monthly"]], "daily");
  const format = select([["csv", "CSV"], ["csv.gz", "CSV, gzip-compressed (csv.gz)"], ["parquet", "Parquet"]], "csv");
  const schema = select([["native", "native (the service's own columns)"], ["focus-1.0", "FOCUS 1.0 (UTC only)"]]);
  const models = h("textarea", { rows: "3", spellcheck: "false" });
  return {
    fields: [
      h("div", { class: "grid" },
        field("granularity", "Granularity", granularity),
        field("format", "Format", format),
        field("schema", "Columns (schema)", schema)),
      field("models", "Models", models, "One model id per line; leave empty for every model."),
    ],
    values() {
      const body = { granularity: granularity.value, format: format.value, schema: schema.value };
      const ids = models.value.split(/\r?\n/).map((m) => m.trim()).filter(Boolean);
      if (ids.length) body.models = ids;
      return body;
    },
  };
}

function requestSection(ctx, onCreated) {
  const [zone, zones] = zoneInput();
  const start = h("input", { type: "datetime-local" });
  const end = h("input", { type: "datetime-local" });
  const output = outputFields();
  const chosen = h("p", { class: "hint", "aria-live": "polite" });
  const zoneName = () => zone.value.trim() || "UTC";
  let preset = null;
  let sent = null; // {text, key}: the body last sent and its Idempotency-Key, until it succeeds

  const presets = PRESETS.map(([key, label]) =>
    button(label, () => applyPreset(key), { "aria-pressed": "false", "data-preset": key }));
  function applyPreset(key) {
    preset = key;
    const range = presetRange(key, zoneName());
    start.value = range.start;
    end.value = range.end;
    presets.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.preset === key)));
    chosen.textContent = `${PRESETS.find(([k]) => k === key)[1]}: ${describeRange(range, zoneName())}`;
  }
  const custom = () => {
    preset = null;
    presets.forEach((b) => b.setAttribute("aria-pressed", "false"));
    chosen.textContent = "";
  };
  start.addEventListener("input", custom);
  end.addEventListener("input", custom);
  zone.addEventListener("change", () => preset && applyPreset(preset));

  const requestForm = form("Request an export", [
    field("timeZone", "Time zone", zone,
      "An IANA name such as Europe/Berlin: start and end are its local times, its days the daily buckets."),
    zones,
    group("timeRange", "Time range",
      h("div", { class: "presets", role: "group", "aria-label": "Presets" }, presets),
      chosen,
      h("div", { class: "grid" },
        field("timeRange.start", "Start", start, "Inclusive."),
        field("timeRange.end", "End", end, "Exclusive; at most 31 days after start."))),
    ...output.fields,
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Request export" })),
  ], async () => {
    const timeZone = zone.value.trim(); // none: the API's default, UTC
    const timeRange = { start: toRfc3339(start.value, timeZone), end: toRfc3339(end.value, timeZone) };
    const body = { timeRange, ...(timeZone && { timeZone }), ...output.values() };
    // A retry of the same request (after a network error, say) keeps its Idempotency-Key: never a second export.
    if (sent?.text !== JSON.stringify(body)) sent = { text: JSON.stringify(body), key: crypto.randomUUID() };
    try {
      const job = await api(paths.exports(ctx.org), { method: "POST", body, headers: { "Idempotency-Key": sent.key } });
      sent = null;
      clearProblem(requestForm);
      await onCreated(job);
    } catch (problem) {
      showProblem(requestForm, problem);
    }
  });
  return section("Request an export", requestForm);
}

const EVENT_COLUMNS = [
  ["When", (e) => time(e.occurredAt)],
  ["Event", (e) => e.event],
  ["Actor", (e) => e.actor || "—"],
  ["Attempt", (e) => e.attempt ?? "—"],
  ["From", (e) => [e.clientIp, e.userAgent].filter(Boolean).join(", ") || "—"],
  ["Details", (e) => Object.entries(e.details || {}).map(([k, v]) => `${k}: ${detailText(v)}`).join("; ") || "—"],
];

/** One job: its facts (redrawn as it changes), its actions, its proof and its audit events. */
function jobDetail(ctx, initial, cancel) {
  let job = initial;
  const heading = h("h2", { tabindex: "-1", id: uid("job"), text: `Export ${short(job.jobId)}` });
  const facts = h("dl", { class: "facts" });
  const problems = h("div");
  const actions = h("div", { class: "actions" });
  const proof = proofPanel(ctx, () => job);
  const events = h("div", { id: uid("events"), hidden: true });
  const el = h("section", { class: "panel", "aria-labelledby": heading.id },
    heading, facts, problems, actions, proof.el, events);

  function draw() {
    facts.replaceChildren(...factsOf(job).flatMap(([term, value]) => [h("dt", { text: term }), h("dd", {}, value)]));
    const back = keepFocus(actions);
    actions.replaceChildren(...[
      ctx.canWrite && ACTIVE.has(job.status) && !job.cancelRequestedAt &&
        button("Cancel export", () => cancel(job.jobId, problems), { class: "danger", "data-action": "cancel" }),
      button("Audit events", toggleEvents,
        { "data-action": "events", "aria-expanded": String(!events.hidden), "aria-controls": events.id }),
    ].filter(Boolean));
    back(heading);
    proof.el.hidden = job.status !== "succeeded";
  }

  function toggleEvents() {
    events.hidden = !events.hidden;
    actions.querySelector("[data-action=events]").setAttribute("aria-expanded", String(!events.hidden));
    if (events.hidden) return;
    const pages = h("div"); // a fresh one each time: a page still on its way when closed lands nowhere
    events.replaceChildren(h("h3", { text: "Audit events" }), pages);
    const fetchPage = (cursor) =>
      api(`${paths.job(ctx.org, job.jobId)}/events`, { query: { limit: 50, cursor }, signal: ctx.signal });
    return morePages(pages, fetchPage, (items) => table("Audit events, oldest first", EVENT_COLUMNS, items), "More events");
  }

  draw();
  if (job.status === "succeeded") proof.showManifest();
  return {
    el, heading,
    get job() { return job; },
    update(next) {
      const was = job.status;
      job = next;
      draw();
      if (was !== "succeeded" && job.status === "succeeded") proof.showManifest();
    },
    dispose: () => proof.dispose(),
  };
}

function factsOf(job) {
  const code = (text) => h("code", { text });
  return [
    ["Job", code(job.jobId)],
    ["Status", statusText(job)],
    ["Requested by", job.requestedBy],
    ["Requested", time(job.initiatedAt)],
    ["Time range", rangeText(job.timeRange)],
    ["Hours counted", rangeText(job.coverage)],
    ["Time zone", job.timeZone],
    ["Granularity", job.granularity],
    ["Models", job.models?.length ? job.models.join(", ") : "every model"],
    ["File", `${job.format}, ${job.schema} columns`],
    ["Rows", job.rowCount ?? "—"],
    ["Size", job.byteCount === null ? "—" : `${job.byteCount} bytes`],
    ["SHA-256 (service)", job.checksum ? code(job.checksum) : "—"],
    ["Manifest SHA-256", job.manifestChecksum ? code(job.manifestChecksum) : "—"],
    ["Completed", time(job.completedAt)],
    ["Expires", time(job.expiresAt)],
    job.scheduleId && ["Schedule", code(job.scheduleId)],
    job.restatementOf && ["Restates", code(job.restatementOf)],
    job.errorMessage && ["Error", job.errorMessage],
  ].filter(Boolean);
}

const statusText = (job) => h("span", {}, statusWord(job.status), " ", h("span", { class: "progress", text: progress(job) }));

function progress(job) {
  switch (job.status) {
    case "pending":
      if (!job.nextAttemptAt) return "waiting for a worker";
      return `to be retried after ${job.nextAttemptAt}${job.errorMessage ? `: ${job.errorMessage}` : ""}`;
    case "running":
      return `attempt ${job.attempts}${job.cancelRequestedAt ? ", cancel requested" : ""}`;
    case "succeeded":
      return `${job.rowCount} rows, ${job.byteCount} bytes`;
    case "failed":
      return job.errorMessage || "";
    default:
      return "";
  }
}

const detailText = (value) => (value === null ? "none" : typeof value === "object" ? JSON.stringify(value) : value);
const rangeText = (range) => (range ? `${range.start} to ${range.end}` : "—");
