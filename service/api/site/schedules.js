// Export schedules: the org's recurring exports; create one, enable or disable it, delete it.

import { api, paths } from "./api.js";
import {
  button, clearProblem, field, form, group, h, listing, note, section, select, short, showProblem, srOnly, statusWord,
  table, time, uid,
} from "./dom.js";
import { outputFields } from "./exports.js";
import { zoneInput } from "./period.js";

const CADENCES = [["daily", "daily"], ["weekly", "weekly (Mondays)"], ["monthly", "monthly (the 1st)"]];
const PERIODS = [
  ["previous_day", "the previous day"],
  ["previous_week", "the previous week (Monday to Monday)"],
  ["previous_month", "the previous month"],
  ["month_to_date", "month to date"],
];

export function render(root, ctx) {
  const list = listing(ctx.signal, async () => (await api(paths.schedules(ctx.org), { signal: ctx.signal })).items,
    (items) => (items.length ? table("Export schedules, oldest first", [
      ["Runs", (x) => `${x.cadence} at ${String(x.runAtHour).padStart(2, "0")}:00 ${x.timeZone}`],
      ["Exports", (x) => PERIODS.find(([v]) => v === x.period)?.[1] || x.period],
      ["File", (x) => `${x.granularity}, ${x.format}, ${x.schema}`],
      ["Models", (x) => (x.models?.length ? x.models.join(", ") : "every model")],
      ["State", (x) => statusWord(x.enabled ? "enabled" : "disabled")],
      ["Next run", (x) => time(x.nextRunAt)],
      ["Last run", (x) => (x.lastRunAt ? h("span", {}, time(x.lastRunAt), ` (export ${short(x.lastJobId)})`) : "—")],
      ...(ctx.canWrite ? [["Actions", actions]] : []),
    ], items, (x) => ({ "data-key": x.scheduleId })) : h("p", { text: "No schedules yet." })));
  root.append(
    h("h1", { tabindex: "-1", text: "Schedules" }),
    h("p", { text: "Each run of a schedule makes one ordinary export of its period, at its hour, in its time zone." }),
    ctx.canWrite ? createSection() : note("This token is read-only: you can see the schedules, not change them."),
    section("Export schedules", ...list.el));

  function createSection() {
    const cadence = select(CADENCES, "monthly");
    const period = select(PERIODS, "previous_month");
    const [zone, zones] = zoneInput();
    const hour = h("input", { type: "number", min: "0", max: "23", step: "1", value: "6", inputmode: "numeric" });
    const enabled = h("input", { type: "checkbox", checked: true, id: uid("enabled") });
    const output = outputFields();
    const createForm = form("Create a schedule", [
      h("div", { class: "grid" },
        field("cadence", "Cadence", cadence),
        field("period", "Each run exports", period),
        field("timeZone", "Time zone", zone),
        field("runAtHour", "Hour of the runs (0 to 23)", hour, "Local hour; 6 runs after the night's rollups.")),
      zones,
      ...output.fields,
      group("enabled", "State",
        h("label", { class: "check", for: enabled.id }, enabled, "Enabled (a disabled schedule makes no run)")),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Create schedule" })),
    ], async () => {
      const timeZone = zone.value.trim(); // none: the API's default, UTC
      const body = {
        cadence: cadence.value, period: period.value, ...(timeZone && { timeZone }),
        runAtHour: hour.value === "" || Number.isNaN(+hour.value) ? hour.value : Number(hour.value),
        enabled: enabled.checked, ...output.values(),
      };
      try {
        const created = await api(paths.schedules(ctx.org), { method: "POST", body });
        clearProblem(createForm);
        await list.load();
        const made = `Schedule ${short(created.scheduleId)} created; its first run: ${created.nextRunAt}.`;
        list.notes.replaceChildren(note(made));
        list.focus(created.scheduleId);
      } catch (problem) {
        showProblem(createForm, problem);
      }
    });
    return section("Create a schedule", createForm);
  }

  function actions(x) {
    const which = () => srOnly(` schedule ${short(x.scheduleId)}`);
    const path = paths.schedule(ctx.org, x.scheduleId);
    const toggle = () => list.run(() => api(path, { method: "PATCH", body: { enabled: !x.enabled } }),
      (updated) => `Schedule ${short(x.scheduleId)} ${updated.enabled ? "enabled" : "disabled"}.`);
    const remove = () => confirm(`Delete schedule ${short(x.scheduleId)}? The exports it made stay.`) &&
      list.run(() => api(path, { method: "DELETE" }), () => `Schedule ${short(x.scheduleId)} deleted.`);
    return h("span", { class: "actions" },
      button([x.enabled ? "Disable" : "Enable", which()], toggle, { "data-action": "toggle" }),
      button(["Delete", which()], remove, { class: "danger", "data-action": "delete" }));
  }
}
