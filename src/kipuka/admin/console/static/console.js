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

  /** "2026-05-01 13:04:05 UTC" on one line (the audit trail's time column). */
  function fullTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  }

  /** A yyyy-mm-ddThh:mm input read as UTC (the filters are labelled UTC), as an ISO instant. */
  function utcInstant(value) {
    return value ? `${value}:00Z` : "";
  }

  /** A modal confirmation step: resolves true when the officer confirms; Cancel or Esc: false. */
  function confirmAct(message, action) {
    return new Promise((resolve) => {
      const text = el("p", { id: "confirm-text" }, message);
      const cancel = el("button", { type: "button", id: "confirm-cancel" }, "Cancel");
      const ok = el("button", { type: "button", id: "confirm-ok", class: "danger primary" }, action);
      const dialog = el("dialog", { class: "confirm", "aria-labelledby": "confirm-text" }, text,
        el("div", { class: "actions" }, cancel, ok));
      const opener = document.activeElement;
      document.body.append(dialog);
      const done = (value) => {
        dialog.close();
        dialog.remove();
        if (opener && opener.focus) opener.focus();
        resolve(value);
      };
      cancel.addEventListener("click", () => done(false));
      ok.addEventListener("click", () => done(true));
      dialog.addEventListener("cancel", (e) => { e.preventDefault(); done(false); });
      dialog.showModal();
      cancel.focus();
    });
  }

  /** First / previous / next buttons of a keyset page; `go` gets {after} or {before} or {}. */
  function pager(container, page, go) {
    const button = (text, enabled, where) => el("button", { type: "button", disabled: !enabled,
      onclick: () => go(where) }, text);
    // Keep the keyboard where it was: the button that was used, or the other one at a list's end.
    const had = container.contains(document.activeElement) ? document.activeElement.textContent : null;
    const buttons = [button("First page", Boolean(page.prev), {}),
      button("Previous page", Boolean(page.prev), { before: page.prev }),
      button("Next page", Boolean(page.next), { after: page.next })];
    container.replaceChildren(el("nav", { class: "pager", "aria-label": "Pages" }, buttons));
    if (had) {
      const same = buttons.find((b) => b.textContent === had && !b.disabled);
      (same || buttons.find((b) => !b.disabled) || document.getElementById("main")).focus();
    }
  }

  /** Set a form's named controls from a query string (the list's position lives in the URL). */
  function fillForm(form, q) {
    for (const control of form.elements) {
      if (!control.name || !q.has(control.name)) continue;
      const value = q.get(control.name);
      if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === value)) {
        control.append(el("option", { value }, value));  // a value from a link, such as ?limit=10
      }
      control.value = value;
    }
  }

  /** Check boxes for a table's rows: a "select all on this page" box and one box per row. */
  function picker(container, idOf) {
    const all = el("input", { type: "checkbox", id: "pick-all", "aria-label": "Select all on this page",
      onchange: (e) => { for (const box of container.querySelectorAll("input.pick:not(:disabled)")) box.checked = e.target.checked; } });
    return {
      head: all,
      cell: (row, label, disabled) => el("input", { type: "checkbox", class: "pick", value: idOf(row),
        "aria-label": label, disabled: Boolean(disabled) }),
      selected: () => [...container.querySelectorAll("input.pick:checked")].map((box) => box.value),
    };
  }

  /** The loads of one list region: only the newest answer renders (a slow earlier page must not
      overwrite the one a filter asked for since), and the region is aria-busy while one runs. */
  function listLoads(region) {
    let newest = 0;
    return async (request, render) => {
      const mine = ++newest;
      region.setAttribute("aria-busy", "true");
      try {
        const page = await request;
        if (mine === newest) render(page);
      } catch (err) {
        if (mine === newest) fail(err);
      } finally {
        if (mine === newest) region.setAttribute("aria-busy", "false");
      }
    };
  }

  return {
    api, ApiError, el, say, fail, time, age, badge, table, fields, params, dayStart, localInstant, download,
    labelOptions, caOptions, labelParam, busy, ready, fullTime, utcInstant, confirmAct, pager, fillForm, picker,
    listLoads,
  };
})();

// Approving and rejecting held requests, shared by the queue and a request's own page.
const Decide = (() => {
  const { api, say, busy, confirmAct } = K;

  /** Approve or reject each id in turn after one confirmation; each decision is its own audited API call. */
  async function decide(action, ids, reason) {
    if (!ids.length) {
      say("Select at least one request first.", true);
      return false;
    }
    if (action === "reject" && !reason) {
      say("Write a reason for the rejection first.", true);
      document.getElementById("reason").focus();
      return false;
    }
    const what = ids.length === 1 ? `request #${ids[0]}` : `${ids.length} requests`;
    const question = action === "approve" ? `Approve ${what} and issue ${ids.length === 1 ? "its certificate" : "their certificates"}?`
      : `Reject ${what} with the reason "${reason}"?`;
    if (!await confirmAct(question, `${action === "approve" ? "Approve" : "Reject"} ${ids.length}`)) {
      say("Nothing was decided.");
      return false;
    }
    const buttons = [...document.querySelectorAll("main button")];
    buttons.forEach((b) => busy(b, true));
    const done = [], failed = [];
    for (const [n, id] of ids.entries()) {
      if (ids.length > 1) say(`${action === "approve" ? "Approving" : "Rejecting"} ${n + 1} of ${ids.length}…`);
      try {
        const result = await api("POST", `/admin/requests/${id}/${action}`, action === "reject" ? { reason } : {});
        if (action === "approve") {
          done.push(result.certificate ? `#${id} issued ${result.certificate.serial}` : `#${id} passed to the CA (${result.ca_ref})`);
        } else {
          done.push(`#${id} rejected`);
        }
      } catch (err) {
        failed.push(`#${id}: ${err.message}`);
      }
    }
    buttons.forEach((b) => busy(b, false));
    const verb = action === "approve" ? "Approved" : "Rejected";
    say([done.length ? `${verb}: ${done.join("; ")}.` : "", failed.length ? `Failed: ${failed.join("; ")}.` : ""]
      .filter(Boolean).join(" "), failed.length > 0);
    return true;
  }

  return { decide };
})();
