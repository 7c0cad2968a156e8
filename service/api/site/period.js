// Local wall times in an IANA time zone, as the API wants them: RFC 3339 with the zone's offset
// at that moment. And the presets, in local days of the zone chosen.

import { h, uid } from "./dom.js";

const pad = (n) => String(n).padStart(2, "0");

export function zoneKnown(zone) {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

export function zoneNames() {
  const names = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
  return ["UTC", ...names.filter((name) => name !== "UTC")];
}

/** A text input for an IANA time zone, with the browser's zones as suggestions: [input, datalist]. */
export function zoneInput(value = "UTC") {
  const list = h("datalist", { id: uid("zones") }, zoneNames().map((z) => h("option", { value: z })));
  return [h("input", { type: "text", list: list.id, value, autocomplete: "off", spellcheck: "false" }), list];
}

/** The wall clock of `zone` at the instant `ms`: {y, m, d, hh, mm} (m from 1). */
function wallClock(zone, ms) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric",
    hour: "numeric", minute: "numeric", second: "numeric",
  }).formatToParts(new Date(ms));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  return { y: get("year"), m: get("month"), d: get("day"), hh: get("hour"), mm: get("minute"), ss: get("second") };
}

function offsetMinutes(zone, ms) {
  const w = wallClock(zone, ms);
  return Math.round((Date.UTC(w.y, w.m - 1, w.d, w.hh, w.mm, w.ss) - Math.floor(ms / 1000) * 1000) / 60000);
}

/** "2026-12-01T00:00" in `zone` → "2026-12-01T00:00:00+01:00" ("" stays "": the API says what is missing). */
export function toRfc3339(local, zone) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(local || "");
  if (!match) return local || "";
  const [, y, m, d, hh, mm, ss = "00"] = match;
  let offset = 0;
  if (zoneKnown(zone)) {
    const wall = Date.UTC(+y, +m - 1, +d, +hh, +mm, +ss);
    offset = offsetMinutes(zone, wall);
    offset = offsetMinutes(zone, wall - offset * 60000); // the offset at the instant itself
  }
  const sign = offset < 0 ? "-" : "+";
  const abs = Math.abs(offset);
  const zoneText = offset === 0 ? "Z" : `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  return `${y}-${m}-${d}T${hh}:${mm}:${ss}${zoneText}`;
}

/** A calendar date plus `days` and/or `months` (Date.UTC normalises overflow), as "YYYY-MM-DDT00:00". */
function day(y, m, d, { days = 0, months = 0, hour = 0 } = {}) {
  const date = new Date(Date.UTC(y, m - 1 + months, d + days, hour));
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}T${pad(hour)}:00`;
}

export const PRESETS = [
  ["last-month", "Last month"],
  ["month-to-date", "Month to date"],
  ["yesterday", "Yesterday"],
];

/** {start, end} as datetime-local values in `zone`; end exclusive, on a whole hour. */
export function presetRange(key, zone, now = Date.now()) {
  const w = wallClock(zoneKnown(zone) ? zone : "UTC", now);
  switch (key) {
    case "last-month":
      return { start: day(w.y, w.m, 1, { months: -1 }), end: day(w.y, w.m, 1) };
    case "month-to-date": // from the 1st up to the start of the current hour
      return { start: day(w.y, w.m, 1), end: day(w.y, w.m, w.d, { hour: w.hh }) };
    case "yesterday":
      return { start: day(w.y, w.m, w.d, { days: -1 }), end: day(w.y, w.m, w.d) };
    default:
      throw new Error(`no preset ${key}`);
  }
}

export function describeRange(range, zone) {
  return `${range.start.replace("T", " ")} to ${range.end.replace("T", " ")} (${zone}, end exclusive)`;
}
