// Webhooks: the org's endpoints; register one (its signing secret shown once), enable or disable
// it, rotate its secret, delete it, and see its deliveries.

import { api, paths } from "./api.js";
import {
  announce, button, clearProblem, field, form, h, note, problemView, section, short, showProblem, table, time, uid,
} from "./dom.js";

const EVENTS = ["export.succeeded", "export.failed", "export.restated"];
const DELIVERY_LOOKS = { pending: "pending", delivered: "succeeded", failed: "failed" };

export function render(root, ctx) {
  const listBox = h("div");
  const status = h("div", { role: "status" });
  const secretBox = h("div", { "aria-live": "polite" });
  const deliveriesBox = h("div");
  root.append(
    h("h1", { tabindex: "-1", text: "Webhooks" }),
    h("p", { text: "Each endpoint gets a signed POST when an export succeeds, fails or is restated." }),
    secretBox,
    ctx.canWrite ? createSection() : note("This token is read-only: you can see the webhooks and deliveries, not change them."),
    section("Webhook endpoints", status, listBox),
    deliveriesBox);

  function createSection() {
    const url = h("input", { type: "url", autocomplete: "off", spellcheck: "false", placeholder: "https://example.com/hook" });
    const boxes = EVENTS.map((name) =>
      h("input", { type: "checkbox", id: uid("event"), value: name, checked: name !== "export.restated" }));
    const createForm = form("Register a webhook", [
      field("url", "URL", url, "Where deliveries are POSTed: an https:// URL of a public host."),
      h("fieldset", { "data-field": "events" }, h("legend", { text: "Events" }),
        boxes.map((box) => h("label", { class: "check", for: box.id }, box, box.value)),
        h("p", { class: "field-error", hidden: true })),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Create webhook" })),
    ], async () => {
      const body = { url: url.value.trim(), events: boxes.filter((b) => b.checked).map((b) => b.value) };
      try {
        const created = await api(paths.webhooks(ctx.org), { method: "POST", body });
        clearProblem(createForm);
        url.value = "";
        showSecret(created, "created");
        await load();
      } catch (problem) {
        showProblem(createForm, problem);
      }
    });
    return section("Register a webhook", createForm);
  }

  /** The secret, shown this once (no later answer has it), until dismissed. */
  function showSecret(webhook, what) {
    const copied = h("span", { role: "status" });
    const secret = h("code", { text: webhook.secret });
    secretBox.replaceChildren(h("div", { class: "secret" },
      h("p", { class: "problem-title", text: `Webhook ${what}: its signing secret, shown only now` }),
      h("p", { text: `Store it where the receiver at ${webhook.url} verifies signatures; it is not shown again.` }),
      h("p", {}, secret),
      h("div", { class: "actions" },
        button("Copy secret", () => copy(webhook.secret, copied)),
        button("I have stored it: hide the secret", () => {
          secretBox.replaceChildren();
          root.querySelector("h1").focus();
        }),
        copied)));
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

  async function load() {
    try {
      const { items } = await api(paths.webhooks(ctx.org));
      listBox.replaceChildren(items.length ? table("Webhook endpoints, oldest first", [
        ["URL", (w) => h("code", { text: w.url })],
        ["Events", (w) => w.events.join(", ")],
        ["State", state],
        ["Created", (w) => time(w.createdAt)],
        ["Actions", actions],
      ], items) : h("p", { text: "No webhooks yet." }));
    } catch (problem) {
      listBox.replaceChildren(problemView(problem));
    }
  }

  function state(w) {
    const word = w.enabled ? (w.failingSince ? "failing" : "enabled") : "disabled";
    const cls = w.enabled ? (w.failingSince ? "failed" : "succeeded") : "expired";
    const why = !w.enabled ? (w.disabledReason ? ` (${w.disabledReason})` : "")
      : w.failingSince ? ` since ${w.failingSince}` : "";
    return h("span", {}, h("span", { class: `status status-${cls}`, text: word }), why);
  }

  function actions(w) {
    const which = () => h("span", { class: "visually-hidden", text: ` of ${w.url}` });
    return h("span", { class: "actions" },
      button(["Deliveries", which()], () => deliveries(w)),
      ctx.canWrite && button([w.enabled ? "Disable" : "Enable", which()], () => change(w, { enabled: !w.enabled })),
      ctx.canWrite && button(["Rotate secret", which()], () => rotate(w)),
      ctx.canWrite && button(["Delete", which()], () => remove(w), { class: "danger" }));
  }

  async function change(w, patch) {
    try {
      await api(paths.webhook(ctx.org, w.webhookId), { method: "PATCH", body: patch });
      announce(`Webhook ${w.url} ${patch.enabled ? "enabled" : "disabled"}.`);
      await load();
    } catch (problem) {
      status.replaceChildren(problemView(problem));
    }
  }

  async function rotate(w) {
    if (!confirm(`Rotate the secret of ${w.url}? For 24 hours deliveries are signed with the old one too.`)) return;
    try {
      const rotated = await api(`${paths.webhook(ctx.org, w.webhookId)}/rotate-secret`, { method: "POST" });
      showSecret(rotated, "secret rotated");
      await load();
    } catch (problem) {
      status.replaceChildren(problemView(problem));
    }
  }

  async function remove(w) {
    if (!confirm(`Delete the webhook ${w.url} and its deliveries?`)) return;
    try {
      await api(paths.webhook(ctx.org, w.webhookId), { method: "DELETE" });
      announce(`Webhook ${w.url} deleted.`);
      deliveriesBox.replaceChildren();
      await load();
    } catch (problem) {
      status.replaceChildren(problemView(problem));
    }
  }

  async function deliveries(w, cursor = null) {
    const heading = h("h2", { tabindex: "-1", text: `Deliveries to ${w.url}` });
    if (!cursor) {
      deliveriesBox.replaceChildren(h("section", { class: "panel", "aria-label": `Deliveries to ${w.url}` }, heading));
    }
    const panel = deliveriesBox.firstChild;
    panel.querySelector("[data-action=more]")?.remove();
    try {
      const page = await api(`${paths.webhook(ctx.org, w.webhookId)}/deliveries`, { query: { limit: 20, cursor } });
      panel.append(page.items.length || cursor ? table("Deliveries, newest first", [
        ["Created", (d) => time(d.createdAt)],
        ["Event", (d) => d.event],
        ["Export", (d) => h("code", { text: short(d.jobId) })],
        ["Status", (d) => h("span", { class: `status status-${DELIVERY_LOOKS[d.status]}`, text: d.status })],
        ["Attempts", (d) => d.attempts.map((a) => `${a.attempt}: ${a.statusCode ?? a.error ?? "no answer"}`).join("; ")
          || "none yet"],
        ["Next attempt", (d) => time(d.nextAttemptAt)],
      ], page.items) : h("p", { text: "No deliveries yet." }));
      if (page.nextCursor) {
        panel.append(button("More deliveries", () => deliveries(w, page.nextCursor), { "data-action": "more" }));
      }
    } catch (problem) {
      panel.append(problemView(problem));
    }
    if (!cursor) heading.focus();
  }

  load();
  return () => {};
}
