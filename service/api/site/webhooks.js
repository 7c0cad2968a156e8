// Webhooks: the org's endpoints; register one (its signing secret shown once), enable or disable
// it, rotate its secret, delete it, and see its deliveries.

import { api, paths } from "./api.js";
import {
  announce, button, clearProblem, field, form, group, h, listing, morePages, note, section, short, showProblem, srOnly,
  statusWord, table, time, uid,
} from "./dom.js";

const EVENTS = ["export.succeeded", "export.failed", "export.restated", "export.cancelled"];
// Checked at first: what most endpoints want.
const USUAL = ["export.succeeded", "export.failed"];

export function render(root, ctx) {
  const secretBox = h("div"); // never a live region: a screen reader would read the secret out
  const deliveriesBox = h("div");
  const list = listing(ctx.signal, async () => (await api(paths.webhooks(ctx.org), { signal: ctx.signal })).items,
    (items) => (items.length ? table("Webhook endpoints, oldest first", [
      ["URL", (w) => h("code", { text: w.url })],
      ["Events", (w) => w.events.join(", ")],
      ["State", state],
      ["Created", (w) => time(w.createdAt)],
      ["Actions", actions],
    ], items, (w) => ({ "data-key": w.webhookId })) : h("p", { text: "No webhooks yet." })));
  root.append(
    h("h1", { tabindex: "-1", text: "Webhooks" }),
    h("p", { text: "Each endpoint gets a signed POST when an export succeeds, fails, is restated or is cancelled." }),
    secretBox,
    ctx.canWrite ? createSection() : note("This token is read-only: you can see the webhooks and deliveries, not change them."),
    section("Webhook endpoints", ...list.el),
    deliveriesBox);

  function createSection() {
    const url = h("input", { type: "url", autocomplete: "off", spellcheck: "false", placeholder: "https://example.com/hook" });
    const boxes = EVENTS.map((name) =>
      h("input", { type: "checkbox", id: uid("event"), value: name, checked: USUAL.includes(name) }));
    const createForm = form("Register a webhook", [
      field("url", "URL", url, "Where deliveries are POSTed: an https:// URL of a public host."),
      group("events", "Events", boxes.map((box) => h("label", { class: "check", for: box.id }, box, box.value))),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Create webhook" })),
    ], async () => {
      const body = { url: url.value.trim(), events: boxes.filter((b) => b.checked).map((b) => b.value) };
      try {
        const created = await api(paths.webhooks(ctx.org), { method: "POST", body });
        clearProblem(createForm);
        url.value = "";
        showSecret(created, "created");
        await list.load();
      } catch (problem) {
        showProblem(createForm, problem);
      }
    });
    return section("Register a webhook", createForm);
  }

  /** The secret, shown this once (no later answer has it), until dismissed; announced, never read out. */
  function showSecret(webhook, what) {
    const copied = h("span", { role: "status" });
    secretBox.replaceChildren(h("div", { class: "secret" },
      h("p", { class: "problem-title", text: `Webhook ${what}: its signing secret, shown only now` }),
      h("p", { text: `Store it where the receiver at ${webhook.url} verifies signatures; it is not shown again.` }),
      h("p", {}, h("code", { text: webhook.secret })),
      h("div", { class: "actions" },
        button("Copy secret", () => copy(webhook.secret, copied)),
        button("I have stored it: hide the secret", () => {
          secretBox.replaceChildren();
          root.querySelector("h1").focus();
        }),
        copied)));
    announce(`Webhook ${what}: its signing secret is shown below, only now.`);
    secretBox.querySelector("button").focus();
  }

  async function copy(text, where) {
    try {
      await navigator.clipboard.writeText(text);
      where.textContent = "Copied.";
    } catch {
      where.textContent = "Copying is not allowed here: select the secret and copy it.";
    }
  }

  function state(w) {
    const word = w.enabled ? (w.failingSince ? "failing" : "enabled") : "disabled";
    const why = !w.enabled ? (w.disabledReason ? ` (${w.disabledReason})` : "")
      : w.failingSince ? ` since ${w.failingSince}` : "";
    return h("span", {}, statusWord(word), why);
  }

  function actions(w) {
    const which = () => srOnly(` of ${w.url}`);
    const path = paths.webhook(ctx.org, w.webhookId);
    const toggle = () => list.run(() => api(path, { method: "PATCH", body: { enabled: !w.enabled } }),
      () => `Webhook ${w.url} ${w.enabled ? "disabled" : "enabled"}.`);
    const rotate = () => confirm(`Rotate the secret of ${w.url}? For 24 hours deliveries are signed with the old one too.`) &&
      list.run(() => api(`${path}/rotate-secret`, { method: "POST" }), (rotated) => showSecret(rotated, "secret rotated"));
    const remove = () => confirm(`Delete the webhook ${w.url} and its deliveries?`) &&
      list.run(() => api(path, { method: "DELETE" }), () => {
        deliveriesBox.replaceChildren();
        return `Webhook ${w.url} deleted.`;
      });
    return h("span", { class: "actions" },
      button(["Deliveries", which()], () => deliveries(w), { "data-action": "deliveries" }),
      ctx.canWrite && [
        button([w.enabled ? "Disable" : "Enable", which()], toggle, { "data-action": "toggle" }),
        button(["Rotate secret", which()], rotate, { "data-action": "rotate" }),
        button(["Delete", which()], remove, { class: "danger", "data-action": "delete" }),
      ]);
  }

  /** The endpoint's deliveries, newest first, in a panel of their own (a new one each time). */
  async function deliveries(w) {
    const heading = h("h2", { tabindex: "-1", text: `Deliveries to ${w.url}` });
    const panel = h("section", { class: "panel", "aria-label": `Deliveries to ${w.url}` }, heading);
    deliveriesBox.replaceChildren(panel);
    const fetchPage = (cursor) =>
      api(`${paths.webhook(ctx.org, w.webhookId)}/deliveries`, { query: { limit: 20, cursor }, signal: ctx.signal });
    await morePages(panel, fetchPage, (items, cursor) => (items.length || cursor ? table("Deliveries, newest first", [
      ["Created", (d) => time(d.createdAt)],
      ["Event", (d) => d.event],
      ["Export", (d) => h("code", { text: short(d.jobId) })],
      ["Status", (d) => statusWord(d.status)],
      ["Attempts", (d) => d.attempts.map((a) => `${a.attempt}: ${a.statusCode ?? a.error ?? "no answer"}`).join("; ")
        || "none yet"],
      ["Next attempt", (d) => time(d.nextAttemptAt)],
    ], items) : h("p", { text: "No deliveries yet." })), "More deliveries");
    heading.focus();
  }
}
