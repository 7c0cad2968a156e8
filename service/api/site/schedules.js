// Export schedules: the org's recurring exports; create one, enable or disable it, delete it.

import { api, paths } from "./api.js";
import {
  announce, button, clearProblem, field, form, h, note, problemView, section, select, short, showProblem, table, time,
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
  const listBox = h("div");
  const status = h("div", { role: "status" });
  root.append(
    h("h1", { tabindex: "-1", text: "Schedules" }),
    h("p", { text: "Each run of a schedule makes one ordinary export of its period, at its hour, in its time zone." }),
    ctx.canWrite ? createSection() : note("This token is read-only: you can see the schedules, not change them."),
    section("Export schedules", status, listBox));

  function createSection() {
    const cadence = select(CADENCES, "monthly");
    const period = select(PERIODS, "previous_month");
    const [zone, zones] = zoneInput();
    const hour = h("input", { type: "number", min: "0", max: "23", step: "1", value: "6", inputmode: "numeric" });
    const enabled = h("input", { type: "checkbox", checked: true, id: "schedule-enabled" });
    const output = outputFields();
    const createForm = form("Create a schedule", [
      h("div", { class: "grid" },
        field("cadence", "Cadence", cadence),
        field("period", "Each run exports", period),
        field("timeZone", "Time zone", zone),
        field("runAtHour", "Hour of the runs (0 to 23)", hour, "Local hour; 6 runs after the night's rollups.")),
      zones,
      ...output.fields,
      h("div", { class: "field", "data-field": "enabled" },
        h("label", { class: "check", for: enabled.id }, enabled, "Enabled (a disabled schedule makes no run)"),
        h("p", { class: "field-error", hidden: true })),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Create schedule" })),
    ], async () => {
      const body = {
        cadence: cadence.value, period: period.value, timeZone: zone.value.trim(),
        runAtHour: hour.value === "" || Number.isNaN(+hour.value) ? hour.value : Number(hour.value),
        enabled: enabled.checked, ...output.values(),
      };
      try {
        const created = await api(paths.schedules(ctx.org), { method: "POST", body });
        clearProblem(createForm);
        status.replaceChildren(note(`Schedule ${short(created.scheduleId)} created; its first run: ${created.nextRunAt}.`));
        await load();
      } catch (problem) {
        showProblem(createForm, problem);
      }
    });
    return section("Create a schedule", createForm);
  }

  async function load() {
    try {
      const { items } = await api(paths.schedules(ctx.org));
      listBox.replaceChildren(items.length ? table("Export schedules, oldest first", [
        ["Runs", (x) => `${x.cadence} at ${String(x.runAtHour).padStart(2, "0")}:00 ${x.timeZone}`],
        ["Exports", (x) => PERIODS.find(([v]) => v === x.period)?.[1] || x.period],
        ["File", (x) => `${x.granularity}, ${x.format}, ${x.schema}`],
        ["Models", (x) => (x.models?.length ? x.models.join(", ") : "every model")],
        ["State", (x) => h("span", { class: `status status-${x.enabled ? "succeeded" : "expired"}` },
          x.enabled ? "enabled" : "disabled")],
        ["Next run", (x) => time(x.nextRunAt)],
        ["Last run", (x) => (x.lastRunAt ? h("span", {}, time(x.lastRunAt), ` (export ${short(x.lastJobId)})`) : "—")],
        ...(ctx.canWrite ? [["Actions", actions]] : []),
      ], items) : h("p", { text: "No schedules yet." }));
    } catch (problem) {
      listBox.replaceChildren(problemView(problem));
    }
  }

  function actions(x) {
    const which = () => h("span", { class: "visually-hidden", text: ` schedule ${short(x.scheduleId)}` });
    return h("span", { class: "actions" },
      button([x.enabled ? "Disable" : "Enable", which()], () => change(x, { enabled: !x.enabled })),
      button(["Delete", which()], () => remove(x), { class: "danger" }));
  }

  async function change(x, patch) {
    try {
      const updated = await api(paths.schedule(ctx.org, x.scheduleId), { method: "PATCH", body: patch });
      announce(`Schedule ${short(x.scheduleId)} ${updated.enabled ? "enabled" : "disabled"}.`);
      await load();
    } catch (problem) {
      status.replaceChildren(problemView(problem));
    }
  }

  async function remove(x) {
    if (!confirm(`Delete schedule ${short(x.scheduleId)}? The exports it made stay.`)) return;
    try {
      await api(paths.schedule(ctx.org, x.scheduleId), { method: "DELETE" });
      announce(`Schedule ${short(x.scheduleId)} deleted.`);
      await load();
    } catch (problem) {
      status.replaceChildren(problemView(problem));
    }
  }

  load();
  return () => {};
}
