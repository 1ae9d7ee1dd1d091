// kipuka console: helpers every page shares. Plain browser JavaScript, no build step.
// Every piece of data goes into the page as text (textContent / DOM nodes), never as HTML.
"use strict";

const K = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Call the JSON admin API with the session cookie; state-changing calls carry the CSRF token. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      location.assign("/console/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new ApiError(401, "unauthorized", "the session has ended: log in again");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      throw new ApiError(response.status, "bad_response", `HTTP ${response.status} without a JSON body`);
    }
    if (!response.ok) throw new ApiError(response.status, data.error, data.message || `HTTP ${response.status}`);
    return data;
  }

  /** el("td", {class: "num"}, "text", otherNode): a DOM element; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const statusBox = () => document.getElementById("status");

  function say(message, isError) {
    const box = statusBox();
    box.classList.toggle("error", Boolean(isError));
    box.textContent = message;
  }

  function fail(err) {
    say(err instanceof Error ? err.message : String(err), true);
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  /** "2026-05-01 13:04 UTC": one time zone for everyone reading the same audit trail. */
  function time(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
  }

  function age(iso) {
    const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function badge(value) {
    const word = String(value || "").split(":")[0];
    return el("span", { class: `badge ${word}` }, value || "—");
  }

  /** A table in a scrollable wrapper: columns [{title, cell(row) -> node|string, num}]. */
  function table(caption, columns, rows, emptyText) {
    const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null }, c.title)));
    const body = rows.map((row) => el("tr", {}, columns.map((c) =>
      el("td", { class: c.num ? "num" : null }, c.cell(row)))));
    const t = el("table", {}, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body));
    const wrap = el("div", { class: "table-wrap" }, t);
    if (!rows.length) wrap.append(el("p", { class: "empty" }, emptyText || "Nothing to show."));
    return wrap;
  }

  function fields(pairs) {
    return el("dl", { class: "fields" }, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
  }

  /** Query string from a form's named, non-empty controls. */
  function params(form, extra) {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") q.set(k, String(v).trim());
    for (const [k, v] of Object.entries(extra || {})) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    return q;
  }

  /** A yyyy-mm-dd date input as the ISO instant at the start of that UTC day. */
  function dayStart(value) {
    return value ? `${value}T00:00:00Z` : "";
  }

  /** A datetime-local input (the browser's local time) as an ISO instant. */
  function localInstant(value) {
    return value ? new Date(value).toISOString() : "";
  }

  function download(filename, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  /** Fill a <select> with the EST labels; the unlabeled path is "-" (an EST label never is). */
  async function labelOptions(select, anyText) {
    const { items } = await api("GET", "/admin/labels");
    select.replaceChildren(el("option", { value: "" }, anyText));
    for (const label of items) {
      select.append(el("option", { value: label.name || "-" }, label.name || "(unlabeled path)"));
    }
    return items;
  }

  async function caOptions(select, anyText) {
    const { items } = await api("GET", "/admin/ca");
    select.replaceChildren(el("option", { value: "" }, anyText), ...items.map((ca) => el("option", { value: ca.id }, ca.id)));
    return items;
  }

  /** The label query parameter from a select filled by labelOptions. */
  function labelParam(q) {
    if (q.get("label") === "-") q.set("label", "");
    return q;
  }

  /** Mark the page loaded (body[data-ready]) once its first data arrived or failed: tests wait on it. */
  function ready(promise) {
    Promise.resolve(promise).finally(() => { document.body.dataset.ready = "true"; });
  }

  function busy(button, on) {
    if (button) button.disabled = on;
  }

  return {
    api, ApiError, el, say, fail, time, age, badge, table, fields, params, dayStart, localInstant, download,
    labelOptions, caOptions, labelParam, busy, ready,
  };
})();
