// Certificates: a keyset-paged, sortable search; bulk revocation of a selection or a search; CSV export.
// The list's filters and position live in the URL, so a certificate's page and Back return here.
"use strict";
(() => {
  const { api, el, say, fail, time, badge, table, labelOptions, caOptions, busy, confirmAct, pager, fillForm,
          picker, dayStart } = K;
  const form = document.getElementById("filters");
  const results = document.getElementById("results");
  const show = K.listLoads(results);
  const pages = document.getElementById("pages");
  const pick = picker(results, (c) => c.serial);
  let total = null;

  /** The admin API's query for the form (and an optional page position). */
  function apiQuery(state) {
    const q = new URLSearchParams();
    const text = (state.get("q") || "").trim();
    if (text) q.set(state.get("in") && state.get("in") !== "q" ? state.get("in") : "q", text);
    for (const name of ["entity", "ca", "status", "otp"]) if (state.get(name)) q.set(name, state.get(name));
    if (state.has("label") && state.get("label") !== "") q.set("label", state.get("label") === "-" ? "" : state.get("label"));
    for (const name of ["issued_after", "issued_before", "expires_after", "expires_before"]) {
      if (state.get(name)) q.set(name, dayStart(state.get(name)));
    }
    const days = state.get("within");
    if (days) {
      q.set("expires_after", new Date().toISOString());
      q.set("expires_before", new Date(Date.now() + Number(days) * 86400000).toISOString());
    }
    return q;
  }

  function formState(extra) {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") q.set(k, String(v).trim());
    for (const [k, v] of Object.entries(extra || {})) if (v) q.set(k, v);
    return q;
  }

  function sortHeader(title, key) {
    const state = new URLSearchParams(location.search);
    const current = (state.get("sort") || "issued") === key;
    const order = state.get("order") || "desc";
    const next = current && order === "desc" ? "asc" : "desc";
    return el("button", { type: "button", class: "sort", dataset: current ? { sorted: order === "desc" ? "descending" : "ascending" } : null, "aria-label": `Sort by ${title.toLowerCase()}, ${next === "desc" ? "descending" : "ascending"}`,
      onclick: () => { form.elements.sort.value = key; form.elements.order.value = next; go({}); } },
      title, current ? (order === "desc" ? " ▼" : " ▲") : "");
  }

  function render(page) {
    const back = encodeURIComponent(location.search);
    const rows = page.items;
    results.replaceChildren(table(`Certificates ${rows.length ? "on this page: " + rows.length : ""}`, [
      { title: pick.head, cell: (c) => pick.cell(c, `Select certificate ${c.serial}`, c.status === "revoked") },
      { title: "Serial", cell: (c) => el("a", { class: "mono", href: `/console/certs/${encodeURIComponent(c.serial)}?from=${back}`,
          "aria-label": `Show certificate ${c.serial}` }, c.serial) },
      { title: sortHeader("Subject", "subject"), cell: (c) => c.subject },
      { title: "SANs", cell: (c) => c.sans || "—" },
      { title: "Entity", cell: (c) => c.entity },
      { title: "Label", cell: (c) => c.label || "(unlabeled)" },
      { title: "Status", cell: (c) => el("span", {}, badge(c.status), c.superseded ? [" ", badge("superseded")] : null) },
      { title: sortHeader("Issued", "issued"), cell: (c) => el("span", { class: "when" }, time(c.issued_at)) },
      { title: sortHeader("Expires", "expires"), cell: (c) => el("span", { class: "when" }, time(c.not_after)) },
    ], rows, "No certificates match."));
    for (const button of results.querySelectorAll("button.sort[data-sorted]")) {
      button.closest("th").setAttribute("aria-sort", button.dataset.sorted);
    }
    pager(pages, page, go);
    const exportQ = apiQuery(new URLSearchParams(location.search));
    exportQ.set("sort", form.elements.sort.value);
    exportQ.set("order", form.elements.order.value);
    document.getElementById("export").href = `/admin/certs/export?${exportQ}`;
  }

  async function load() {
    const state = new URLSearchParams(location.search);
    const q = apiQuery(state);
    q.set("sort", state.get("sort") || "issued");
    q.set("order", state.get("order") || "desc");
    q.set("limit", state.get("limit") || "50");
    for (const name of ["after", "before"]) if (state.get(name)) q.set(name, state.get(name));
    await show(api("GET", `/admin/certs?${q}`), render);
  }

  function go(position) {
    history.pushState(null, "", `/console/certs?${formState(position)}`);
    return load();
  }

  async function revoke(body, count, what) {
    const reason = body.reason;
    if (!await confirmAct(`Revoke ${count} ${count === 1 ? "certificate" : "certificates"} (${what}) for ${reason}? ` +
                          "This cannot be undone; the CRLs are re-signed at once.", `Revoke ${count}`)) {
      say("Nothing was revoked.");
      return;
    }
    try {
      const done = await api("POST", "/admin/bulk/revoke-certs", body);
      await load();
      say(`Revoked ${done.revoked} certificate(s) (${reason}); the CRLs have been re-signed.`);
    } catch (err) {
      fail(err);
    }
  }

  document.getElementById("revoke-selected").addEventListener("click", () => {
    const serials = pick.selected();
    if (!serials.length) { say("Select at least one certificate first.", true); return; }
    revoke({ serials, reason: document.getElementById("bulk-reason").value }, serials.length, "the selection");
  });

  document.getElementById("revoke-all").addEventListener("click", async (e) => {
    const filter = Object.fromEntries(apiQuery(new URLSearchParams(location.search)));
    busy(e.target, true);
    try {
      const { count } = await api("GET", `/admin/certs/count?${new URLSearchParams(filter)}`);
      if (!count) { say("The search matches no certificate.", true); return; }
      await revoke({ filter, count, reason: document.getElementById("bulk-reason").value }, count, "every match of this search");
    } catch (err) {
      fail(err);
    } finally {
      busy(e.target, false);
    }
  });

  form.addEventListener("submit", (e) => { e.preventDefault(); go({}); });
  window.addEventListener("popstate", () => { fillForm(form, new URLSearchParams(location.search)); load(); });

  const wanted = new URLSearchParams(location.search);
  if (wanted.get("serial")) {  // the old ?serial= links: the certificate's own page
    location.replace(`/console/certs/${encodeURIComponent(wanted.get("serial"))}`);
    return;
  }
  K.ready(Promise.all([labelOptions(document.getElementById("f-label"), "Any label"),
                       caOptions(document.getElementById("f-ca"), "Any CA")])
    .catch(fail)
    .then(() => {
      form.elements.order.value = "desc";
      fillForm(form, wanted);
      return load();
    }));
})();
