// Audit: the filterable trail, and whether its hash chain verifies.
"use strict";
(() => {
  const { api, el, fail, time, badge, table, params, localInstant, labelOptions, labelParam, busy } = K;
  const form = document.getElementById("filters");
  const trail = document.getElementById("trail");
  const more = document.getElementById("more");
  let rows = [];
  let cursor = null;

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

  function render() {
    trail.replaceChildren(table(`${rows.length} event(s)`, [
      { title: "When", cell: (e) => time(e.at) },
      { title: "Event", cell: (e) => e.event },
      { title: "Outcome", cell: (e) => badge(e.outcome) },
      { title: "Entity", cell: (e) => e.entity || "—" },
      { title: "Label", cell: (e) => e.label || "—" },
      { title: "CA", cell: (e) => e.ca || "—" },
      { title: "Serial", cell: (e) => e.serial && !e.serial.includes(",")
          ? el("a", { href: `/console/certs?serial=${encodeURIComponent(e.serial)}`, class: "mono" }, e.serial) : (e.serial || "—") },
      { title: "By", cell: (e) => e.auth || "—" },
      { title: "Client", cell: (e) => e.client_addr || "—" },
      { title: "Reason", cell: (e) => e.reason || "—" },
      { title: "Chain #", cell: (e) => (e.chain_seq === null ? "pending" : String(e.chain_seq)), num: true },
    ], rows, "No events match."));
    more.hidden = !cursor;
  }

  async function load(append) {
    try {
      const q = labelParam(params(form, { cursor: append ? cursor : null,
        since: localInstant(document.getElementById("f-since").value),
        until: localInstant(document.getElementById("f-until").value) }));
      const page = await api("GET", `/admin/audit?${q}`);
      rows = append ? rows.concat(page.items) : page.items;
      cursor = page.next_cursor;
      render();
    } catch (err) {
      fail(err);
    }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  document.getElementById("verify").addEventListener("click", verify);
  const wanted = new URLSearchParams(location.search);
  for (const name of ["event", "outcome", "entity"]) if (wanted.get(name)) form.elements[name].value = wanted.get(name);
  K.ready(Promise.all([verify(),
    labelOptions(document.getElementById("f-label"), "Any label").catch(fail).then(() => load(false))]));
})();
