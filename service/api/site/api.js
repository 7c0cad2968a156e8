// The public REST API, and nothing else: the bearer token lives only in sessionStorage and
// travels only in the Authorization header, never in a URL.

const BASE = "/analytics/v1";
const TOKEN_KEY = "analytics-exports.token";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

/** An API answer other than 2xx, as its problem document (RFC 9457). */
export class ApiError extends Error {
  constructor(problem) {
    super(`${problem.title}: ${problem.detail || ""}`);
    Object.assign(this, { status: 0, errors: {}, ...problem });
  }
}

const encode = (...parts) => parts.map(encodeURIComponent).join("/");
export const paths = {
  me: () => "/me",
  exports: (org) => `/orgs/${encode(org)}/exports`,
  job: (org, job) => `/orgs/${encode(org, "exports", job)}`,
  schedules: (org) => `/orgs/${encode(org)}/export-schedules`,
  schedule: (org, id) => `/orgs/${encode(org, "export-schedules", id)}`,
  webhooks: (org) => `/orgs/${encode(org)}/webhooks`,
  webhook: (org, id) => `/orgs/${encode(org, "webhooks", id)}`,
};

/**
 * Call the API: `api(path, {method, body, query, headers, signal, raw})`. JSON in and out; `raw`
 * answers the Response itself (a download, after fetch followed the API's redirect); `signal`
 * aborts the call (a view left). Throws ApiError. A 401 also tells the page (event
 * "session-ended") so it goes back to sign-in, unless `endsSession` is false (the first look,
 * before any sign-in).
 */
export async function api(path, { method = "GET", body, query, headers: extra, signal, raw = false, endsSession = true }
  = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json, application/problem+json", ...extra };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      // Same-origin cookies only: those of a single sign-on proxy in front (docs/operations.md),
      // which puts the Authorization header on the requests itself.
      credentials: "same-origin",
      referrerPolicy: "no-referrer",
      signal,
    });
  } catch (error) {
    throw new ApiError({
      title: raw ? "The file could not be fetched" : "The service could not be reached",
      detail: `${error.message} (network error, or storage that does not allow this page's origin)`,
    });
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401 && endsSession) dispatchEvent(new CustomEvent("session-ended", { detail: problem }));
    throw problem;
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

async function problemOf(response) {
  const type = response.headers.get("Content-Type") || "";
  const text = await response.text().catch(() => "");
  if (type.includes("json")) {
    try {
      const doc = JSON.parse(text);
      if (doc && typeof doc === "object") return new ApiError({ status: response.status, ...doc });
    } catch { /* not JSON after all: described below */ }
  }
  return new ApiError({
    status: response.status,
    title: `${response.status} ${response.statusText || "error"}`.trim(),
    detail: text.slice(0, 300) || `${response.url.split("?")[0]} answered ${response.status}`,
  });
}
