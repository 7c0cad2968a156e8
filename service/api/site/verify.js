// A job's proof panel: the manifest (its SHA-256 against manifestChecksum, its totals per
// currency), and on "Download" the file's SHA-256 against checksum, and for CSV its totals
// recounted here and set beside the manifest's.

import { api, paths } from "./api.js";
import { button, h, note, problemView, statusWord, table, whileBusy } from "./dom.js";
import { compareTotals, csvTotals, gunzip, parseExact, sha256Hex } from "./proof.js";

const CONTENT_TYPES = { csv: "text/csv", "csv.gz": "application/gzip", parquet: "application/vnd.apache.parquet" };
/** Past this size the check (which holds the whole file in this tab's memory) asks first. */
const LARGE_BYTES = 200_000_000;

function verdict(ok, text) {
  return h("p", { class: `verdict ${ok ? "ok" : "bad"}`, text });
}

export function proofPanel(ctx, currentJob) {
  const fetchButton = button("Download", () => download(), { class: null, "data-action": "download" });
  const result = h("div", { "aria-live": "polite" });
  const save = h("div");
  const totals = h("div", { "aria-live": "polite" });
  const el = h("div", { class: "proof" },
    h("h3", { text: "Proof" }),
    h("p", { class: "hint", text: "Download fetches the file through the API and computes its SHA-256 here, in your " +
      "browser; the manifest's totals are set beside the file's own." }),
    h("div", { class: "actions" }, fetchButton),
    result, save, totals);
  let manifest = null; // {doc, exact, ok} or {problem}
  let file = null; // csvTotals(), {note}, or {error}
  let blobUrl = null;
  const jobPath = () => paths.job(ctx.org, currentJob().jobId);

  async function showManifest() {
    const job = currentJob();
    try {
      const buffer = await (await api(`${jobPath()}/manifest`, { raw: true, signal: ctx.signal })).arrayBuffer();
      const digest = await sha256Hex(buffer);
      manifest = { ...parseExact(new TextDecoder().decode(buffer)), ok: digest === job.manifestChecksum };
    } catch (problem) {
      manifest = { problem: problem.title ? problem : { title: "The manifest is not readable", detail: problem.message } };
    }
    drawTotals();
  }

  /** The file fetched and checked, once at a time; a large one only once the user says so. */
  function download(sure = false) {
    const job = currentJob();
    if (job.byteCount > LARGE_BYTES && !sure) {
      const megabytes = Math.round(job.byteCount / 1e6);
      return result.replaceChildren(
        note(`This file is ${megabytes} MB: the check holds all of it in this tab's memory, which may slow the ` +
          "browser or fail."),
        button(`Download and check ${megabytes} MB anyway`, () => download(true), { "data-action": "anyway" }));
    }
    return whileBusy(fetchButton, () => check(job));
  }

  async function check(job) {
    result.replaceChildren(h("p", { class: "progress", text: "Downloading…" }));
    let buffer;
    try {
      buffer = await (await api(`${jobPath()}/download`, { raw: true, signal: ctx.signal })).arrayBuffer();
    } catch (problem) {
      result.replaceChildren(problemView(problem));
      return;
    }
    result.replaceChildren(h("p", { class: "progress", text: `Computing the SHA-256 of ${buffer.byteLength} bytes…` }));
    const digest = await sha256Hex(buffer);
    const ok = digest === job.checksum;
    result.replaceChildren(
      ok ? verdict(true, "SHA-256 matches the service's checksum")
        : verdict(false, "Mismatch: the file's SHA-256 is not the service's checksum"),
      h("dl", { class: "facts" },
        h("dt", { text: "File SHA-256" }), h("dd", {}, h("code", { text: digest })),
        h("dt", { text: "Service checksum" }), h("dd", {}, h("code", { text: job.checksum })),
        h("dt", { text: "Bytes" }),
        h("dd", { text: `${buffer.byteLength} fetched; the service recorded ${job.byteCount}` })));
    offer(buffer, job, ok);
    await recount(buffer, job);
  }

  function offer(buffer, job, ok) {
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = URL.createObjectURL(new Blob([buffer], { type: CONTENT_TYPES[job.format] }));
    const name = `export-${job.jobId}.${job.format}`;
    save.replaceChildren(h("p", {}, h("a", { class: ok ? "button" : "button secondary", href: blobUrl, download: name },
      ok ? `Save ${name}` : `Save ${name} anyway (not verified)`)));
  }

  async function recount(buffer, job) {
    if (job.format === "parquet") {
      file = { note: "Parquet: the totals are not recomputed in the browser; the SHA-256 above is the proof." };
    } else {
      try {
        const content = job.format === "csv.gz" ? await gunzip(buffer) : buffer;
        file = csvTotals(new TextDecoder("utf-8", { fatal: true }).decode(content), job.schema);
        if (job.format === "csv.gz") file.contentDigest = await sha256Hex(content);
      } catch (error) {
        file = { error: `Not this export's CSV, so no totals were recomputed: ${error.message}` };
      }
    }
    drawTotals();
  }

  function drawTotals() {
    const job = currentJob();
    const parts = [];
    const recounted = file?.totals ? file : null;
    if (manifest?.problem) parts.push(problemView(manifest.problem));
    if (manifest?.doc) {
      parts.push(verdict(manifest.ok, manifest.ok
        ? "Manifest matches the service's manifest checksum"
        : "Mismatch: the manifest's SHA-256 is not the service's manifest checksum"));
      const lines = compareTotals(manifest.doc.totals, recounted);
      const columns = [["Currency", (l) => l.currency], ["Measure", (l) => l.measure],
        ["Manifest", (l) => l.manifest, "num"]];
      if (recounted) {
        columns.push(["This file (recomputed)", (l) => l.file, "num"], ["Check", (l) =>
          (manifest.exact ? statusWord(l.agrees ? "agrees" : "differs") : "not verifiable in this browser")]);
      }
      parts.push(lines.length
        ? table("Totals per currency", columns, lines)
        : h("p", { text: "The manifest counts no rows, so it has no totals." }));
      if (recounted && !manifest.exact) {
        parts.push(note("The manifest's totals are not verifiable in this browser: it rounds integers past 2^53, " +
          "and the exact digits need JSON.parse source text access (a current Chromium or Firefox)."));
      } else if (recounted) {
        const agree = lines.every((l) => l.agrees) && recounted.rows === job.rowCount;
        parts.push(verdict(agree, agree
          ? `The file's totals agree with the manifest (${recounted.rows} rows)`
          : `The file's totals differ from the manifest (${recounted.rows} rows in the file, ${job.rowCount} recorded)`));
      }
      const expected = manifest.doc.files?.[0]?.uncompressed?.sha256;
      if (recounted?.contentDigest && expected) {
        parts.push(verdict(recounted.contentDigest === expected, recounted.contentDigest === expected
          ? "The uncompressed CSV matches the manifest's SHA-256"
          : "Mismatch: the uncompressed CSV's SHA-256 is not the manifest's"));
      }
    }
    if (job.schema === "focus-1.0" && recounted) {
      parts.push(h("p", { class: "hint", text: "FOCUS columns: recomputed from BillingCurrency, BilledCost, " +
        "x_RequestCount, ConsumedQuantity and x_ErrorCount." }));
    }
    if (file?.note) parts.push(note(file.note));
    if (file?.error) parts.push(verdict(false, file.error));
    totals.replaceChildren(...parts);
  }

  return {
    el, showManifest,
    dispose() { if (blobUrl) URL.revokeObjectURL(blobUrl); },
  };
}
