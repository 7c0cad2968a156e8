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

const DAY = 86_400_000;

/** The wall clock of `zone` at the instant `ms` (whole seconds), as the milliseconds of its fields read as UTC. */
function wallOf(zone, ms) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric",
    hour: "numeric", minute: "numeric", second: "numeric",
  }).formatToParts(new Date(ms));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  return Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second"));
}

/**
 * The instant a wall time of `zone` names (`wall`: its fields read as UTC), from the offsets a day
 * before and after it: a time the clocks show twice (fall back) names the earlier instant; a time
 * they skip (spring forward) names the later one, which the clocks show that much later (Berlin's
 * 02:30 is 03:30+02:00; Santiago's skipped midnight is 01:00, the day's first instant).
 */
function instantOf(zone, wall) {
  const candidates = [wall - DAY, wall, wall + DAY].map((ms) => wall - (wallOf(zone, ms) - ms));
  const fits = candidates.filter((t) => wallOf(zone, t) === wall);
  return fits.length ? Math.min(...fits) : Math.max(...candidates);
}

/** The instant `ms` on the clocks of `zone`, with their offset: "2026-03-29T03:30:00+02:00". */
function rfc3339(zone, ms) {
  const offset = Math.round((wallOf(zone, ms) - ms) / 60000);
  const abs = Math.abs(offset);
  const zoneText = offset === 0 ? "Z" : `${offset < 0 ? "-" : "+"}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  return new Date(ms + offset * 60000).toISOString().slice(0, 19) + zoneText;
}

const known = (zone) => (zoneKnown(zone) ? zone : "UTC");

/** "2026-12-01T00:00" in `zone` → "2026-12-01T00:00:00+01:00" ("" stays "": the API says what is missing). */
export function toRfc3339(local, zone) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(local || "");
  if (!match) return local || "";
  const [, y, m, d, hh, mm, ss = "00"] = match;
  return rfc3339(known(zone), instantOf(known(zone), Date.UTC(+y, +m - 1, +d, +hh, +mm, +ss)));
}

export const PRESETS = [
  ["last-month", "Last month"],
  ["month-to-date", "Month to date"],
  ["yesterday", "Yesterday"],
];

/**
 * {start, end} as datetime-local values in `zone` at the instant `now`; end exclusive, on a whole
 * hour; each the first instant of its local day or hour. Month to date in the month's first hour
 * (no whole hour yet) is last month, with `instead` saying so.
 */
export function presetRange(key, zone, now = Date.now()) {
  const z = known(zone);
  const w = new Date(wallOf(z, now));
  const at = (months, day, hour = 0) =>
    rfc3339(z, instantOf(z, Date.UTC(w.getUTCFullYear(), w.getUTCMonth() + months, day, hour))).slice(0, 16);
  const today = w.getUTCDate();
  const lastMonth = { start: at(-1, 1), end: at(0, 1) };
  switch (key) {
    case "last-month":
      return lastMonth;
    case "month-to-date": {
      const range = { start: at(0, 1), end: at(0, today, w.getUTCHours()) };
      return range.start < range.end ? range : { ...lastMonth, instead: "no whole hour of this month yet, so last month" };
    }
    case "yesterday":
      return { start: at(0, today - 1), end: at(0, today) };
    default:
      throw new Error(`no preset ${key}`);
  }
}

export function describeRange(range, zone) {
  const text = `${range.start.replace("T", " ")} to ${range.end.replace("T", " ")} (${zone}, end exclusive)`;
  return range.instead ? `${range.instead}: ${text}` : text;
}
