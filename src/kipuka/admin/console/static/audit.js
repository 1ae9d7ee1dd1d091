// Audit: the filterable trail (every time in UTC), keyset-paged, and whether its hash chain verifies.
"use strict";
(() => {
  const { api, el, fail, badge, table, labelOptions, busy, fullTime, utcInstant, pager, fillForm } = K;
  const form = document.getElementById("filters");
  const trail = document.getElementById("trail");
  const show = K.listLoads(trail);
  const pages = document.getElementById("pages");

  async function verify() {
    const button = document.getElementById("verify");
    const out = document.getElementById("chain");
    busy(button, true);
    try {
      const c = await api("GET", "/admin/audit/verify");
      out.replaceChildren(c.ok
        ? el("span", {}, badge("ok"), ` The chain verifies: ${c.checked} event(s) checked, ${c.unchained} not yet linked.`)
        : el("span", {}, badge("broken"), ` The chain is broken at event ${c.broken_id ?? "?"} (sequence ${c.broken_seq ?? "?"}): ` +
            `${c.problem}. ${c.checked} event(s) verified before it.`));
    } catch (err) {
      fail(err);
    } finally {
      busy(button, false);
    }
  }

  function render(page) {
    trail.replaceChildren(table(`Events on this page: ${page.items.length}`, [
      { title: "When (UTC)", cell: (e) => el("span", { class: "when" }, fullTime(e.at)) },
      { title: "Event", cell: (e) => e.event },
      { title: "Outcome", cell: (e) => badge(e.outcome) },
      { title: "Entity", cell: (e) => e.entity || "—" },
      { title: "Label", cell: (e) => e.label || "—" },
      { title: "CA", cell: (e) => e.ca || "—" },
      { title: "Serial", cell: (e) => e.serial && !e.serial.includes(",")
          ? el("a", { href: `/console/certs/${encodeURIComponent(e.serial)}`, class: "mono" }, e.serial) : (e.serial || "—") },
      { title: "By", cell: (e) => e.auth || "—" },
      { title: "Client", cell: (e) => e.client_addr || "—" },
      { title: "Reason", cell: (e) => e.reason || "—" },
      { title: "Chain #", cell: (e) => (e.chain_seq === null ? "pending" : String(e.chain_seq)), num: true },
    ], page.items, "No events match."));
    for (const cell of trail.querySelectorAll("tbody tr td:first-child, thead th:first-child")) cell.classList.add("when");
    pager(pages, page, go);
  }

  async function load() {
    const state = new URLSearchParams(location.search);
    const q = new URLSearchParams({ limit: state.get("limit") || "50" });
    for (const name of ["event", "outcome", "entity", "actor", "after", "before"]) if (state.get(name)) q.set(name, state.get(name));
    if (state.get("label")) q.set("label", state.get("label") === "-" ? "" : state.get("label"));
    if (state.get("since")) q.set("since", utcInstant(state.get("since")));
    if (state.get("until")) q.set("until", utcInstant(state.get("until")));
    await show(api("GET", `/admin/audit?${q}`), render);
  }

  function go(position) {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") q.set(k, String(v).trim());
    for (const [k, v] of Object.entries(position || {})) if (v) q.set(k, v);
    history.pushState(null, "", `/console/audit?${q}`);
    return load();
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); go({}); });
  window.addEventListener("popstate", () => { fillForm(form, new URLSearchParams(location.search)); load(); });
  document.getElementById("verify").addEventListener("click", verify);
  K.ready(Promise.all([verify(),
    labelOptions(document.getElementById("f-label"), "Any label").catch(fail).then(() => {
      fillForm(form, new URLSearchParams(location.search));
      return load();
    })]));
})();
