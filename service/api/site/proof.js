// Proof, computed in the browser: the SHA-256 of the bytes fetched, and the totals per currency
// of a CSV export recounted exactly (money as BigInt micro-units, never floating point).

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export async function gunzip(buffer) {
  const stream = new Blob([buffer]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer();
}

/**
 * The manifest as JSON whose integers stay exact (BigInt, from their source text): {doc, exact}.
 * `exact` is false when this browser gives no source text and an integer is past 2^53 (its digits
 * already rounded): its totals are then not verifiable here.
 */
export function parseExact(text) {
  let exact = true;
  const doc = JSON.parse(text, (key, value, context) => {
    if (!Number.isInteger(value)) return value;
    if (/^-?\d+$/.test(context?.source ?? "")) return BigInt(context.source);
    if (!Number.isSafeInteger(value)) exact = false;
    return BigInt(value);
  });
  return { doc, exact };
}

const SCALE = 1_000_000n;
const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

/** "-12.5" → -12500000n; more than six decimals (unless zeros) is not an amount of this service. */
export function micros(text) {
  const match = DECIMAL.exec(text.trim());
  if (!match) throw new Error(`not a number: ${JSON.stringify(text)}`);
  const [, sign, whole, fraction = ""] = match;
  if (fraction.length > 6 && /[^0]/.test(fraction.slice(6))) throw new Error(`more than 6 decimals: ${text}`);
  const value = BigInt(whole) * SCALE + BigInt(fraction.slice(0, 6).padEnd(6, "0"));
  return sign ? -value : value;
}

export function formatMicros(value) {
  const sign = value < 0n ? "-" : "";
  const abs = value < 0n ? -value : value;
  return `${sign}${abs / SCALE}.${String(abs % SCALE).padStart(6, "0")}`;
}

function integer(text) {
  const trimmed = text.trim();
  if (!/^-?\d+$/.test(trimmed)) throw new Error(`not an integer: ${JSON.stringify(text)}`);
  return BigInt(trimmed);
}

/** RFC 4180 rows: quoted cells with "" for a quote, and commas and line breaks inside quotes. */
export function* csvRows(text) {
  let row = [], cell = "", quoted = false, i = 0, number = 1;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i += 1; continue; }
      cell += c; i += 1; continue;
    }
    if (c === '"') { quoted = true; i += 1; }
    else if (c === ",") { row.push(cell); cell = ""; i += 1; }
    else if (c === "\n" || c === "\r") {
      row.push(cell); yield row; row = []; cell = ""; number += 1;
      i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
    } else { cell += c; i += 1; }
  }
  if (quoted) throw new Error(`row ${number}: the file ends inside a quoted cell`);
  if (cell !== "" || row.length) { row.push(cell); yield row; }
}

/** Which columns hold the figures totalled, per dataset schema (service/formats.py COLUMNS). */
const COLUMNS = {
  native: {
    currency: "currency", cost: "cost_total", requests: "request_count", tokens: "tokens_total", errors: "error_count",
  },
  "focus-1.0": {
    currency: "BillingCurrency", cost: "BilledCost", requests: "x_RequestCount", tokens: "ConsumedQuantity",
    errors: "x_ErrorCount", focus: true,
  },
};

/**
 * The rows and per-currency totals of a CSV export's text. Totals are BigInt: costMicros,
 * requestCount, tokensTotal (FOCUS: micro-units of its decimal quantity), errorCount. A cell
 * that is not this service's throws, naming its row (the header is row 1).
 */
export function csvTotals(text, schema) {
  const c = COLUMNS[schema];
  if (!c) throw new Error(`no totals for schema ${schema}`);
  const rows = csvRows(text.replace(/^\uFEFF/, ""));
  const header = rows.next().value || [];
  const at = {};
  for (const [name, column] of Object.entries(c)) {
    if (name === "focus") continue;
    at[name] = header.indexOf(column);
    if (at[name] < 0) throw new Error(`the file has no ${column} column`);
  }
  // FOCUS writes nulls as empty cells; the native columns are never empty.
  const read = (cells, name, parse) => (c.focus && cells[at[name]] === "" ? 0n : parse(cells[at[name]]));
  const totals = new Map();
  let count = 0, number = 1;
  for (const cells of rows) {
    number += 1;
    if (cells.length === 1 && cells[0] === "") continue; // a blank line
    try {
      if (cells.length !== header.length) throw new Error(`${cells.length} cells where the header has ${header.length}`);
      const currency = cells[at.currency];
      const sum = totals.get(currency) || { costMicros: 0n, requestCount: 0n, tokensTotal: 0n, errorCount: 0n };
      sum.costMicros += read(cells, "cost", micros);
      sum.requestCount += read(cells, "requests", integer);
      sum.tokensTotal += read(cells, "tokens", c.focus ? micros : integer);
      sum.errorCount += read(cells, "errors", integer);
      totals.set(currency, sum);
    } catch (error) {
      throw new Error(`row ${number}: ${error.message}`);
    }
    count += 1;
  }
  if (c.focus) for (const sum of totals.values()) sum.tokensTotal = exactUnits(sum.tokensTotal);
  return { rows: count, totals };
}

function exactUnits(value) {
  return value % SCALE === 0n ? value / SCALE : formatMicros(value);
}

const MEASURES = [["Cost", "costTotal", "costMicros"], ["Requests", "requestCount", "requestCount"],
  ["Tokens", "tokensTotal", "tokensTotal"], ["Errors", "errorCount", "errorCount"]];
const amount = (text) => { try { return micros(text); } catch { return null; } };

/**
 * Lines of comparison, {currency, measure, manifest, file, agrees}, for each currency in either
 * (texts; "absent" where one has none). `file` and `agrees` are null when the file's totals were not
 * computed. A malformed manifest value differs, never throws.
 */
export function compareTotals(manifestTotals, file) {
  const listed = manifestTotals && typeof manifestTotals === "object" ? manifestTotals : {};
  const currencies = new Set([...Object.keys(listed), ...(file ? file.totals.keys() : [])]);
  return [...currencies].sort().flatMap((currency) => MEASURES.map(([measure, key, fileKey]) => {
    const given = listed[currency]?.[key];
    const manifest = given === undefined || given === null ? "absent" : String(given);
    if (!file) return { currency, measure, manifest, file: null, agrees: null };
    const counted = file.totals.get(currency)?.[fileKey];
    const text = counted === undefined ? "absent" : key === "costTotal" ? formatMicros(counted) : String(counted);
    // Money compared as amounts ("1.50" is "1.500000"); counts as their exact digits.
    const agrees = key === "costTotal" && counted !== undefined ? amount(manifest) === counted : manifest === text;
    return { currency, measure, manifest, file: text, agrees };
  }));
}
