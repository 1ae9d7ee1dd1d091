// Pending requests: the queue, keyset-paged; approve or reject one or a selection, each after a confirmation.
"use strict";
(() => {
  const { api, el, fail, time, age, badge, table, labelOptions, pager, fillForm, picker } = K;
  const form = document.getElementById("filters");
  const list = document.getElementById("list");
  const show = K.listLoads(list);
  const pages = document.getElementById("pages");
  const reason = document.getElementById("reason");
  const pick = picker(list, (r) => r.id);

  function render(page) {
    const back = encodeURIComponent(location.search);
    const columns = [
      { title: pick.head, cell: (r) => pick.cell(r, `Select request ${r.id}`, r.status !== "pending") },
      { title: "Request", cell: (r) => el("a", { href: `/console/requests/${r.id}?from=${back}`, "aria-label": `Open request ${r.id}` }, `#${r.id}`) },
      { title: "Subject", cell: (r) => r.subject || "—" },
      { title: "SANs", cell: (r) => r.sans || "—" },
      { title: "Key", cell: (r) => r.key },
      { title: "Requester", cell: (r) => el("span", {}, r.entity, el("br"), el("small", {}, `${r.op} · ${r.auth} · ${r.client_addr || "?"}`)) },
      { title: "Label", cell: (r) => r.label || "(unlabeled)" },
      { title: "Age", cell: (r) => el("span", { title: time(r.created_at) }, age(r.created_at)) },
      { title: "Status", cell: (r) => el("span", {}, badge(r.status), r.reason && r.status !== "pending" ? el("br") : null,
          r.status !== "pending" ? el("small", {}, r.reason || "") : null,
          r.serial ? el("span", {}, " ", el("a", { class: "mono", href: `/console/certs/${encodeURIComponent(r.serial)}`,
            "aria-label": `Certificate ${r.serial}` }, r.serial)) : null) },
      { title: "Actions", cell: (r) => r.status !== "pending" ? "—" : el("span", { class: "actions" },
          el("button", { type: "button", class: "primary", "aria-label": `Approve request ${r.id}`,
                         onclick: () => act("approve", [r.id]) }, "Approve"),
          el("button", { type: "button", class: "danger", "aria-label": `Reject request ${r.id}`,
                         onclick: () => act("reject", [r.id]) }, "Reject")) },
    ];
    list.replaceChildren(table(`Requests on this page: ${page.items.length}`, columns, page.items, "No requests match."));
    pager(pages, page, go);
  }

  async function load() {
    const state = new URLSearchParams(location.search);
    const q = new URLSearchParams({ status: state.get("status") || "pending", order: state.get("order") || "asc",
                                    limit: state.get("limit") || "50" });
    if (state.get("label")) q.set("label", state.get("label") === "-" ? "" : state.get("label"));
    for (const name of ["entity", "after", "before"]) if (state.get(name)) q.set(name, state.get(name));
    await show(api("GET", `/admin/requests?${q}`), render);
  }

  function go(position) {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") q.set(k, String(v).trim());
    for (const [k, v] of Object.entries(position || {})) if (v) q.set(k, v);
    history.pushState(null, "", `/console/requests?${q}`);
    return load();
  }

  async function act(action, ids) {
    if (await Decide.decide(action, ids.map(Number), reason.value.trim())) {
      const message = document.getElementById("status").textContent;
      const isError = document.getElementById("status").classList.contains("error");
      await load();
      K.say(message, isError);
    }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); go({}); });
  window.addEventListener("popstate", () => { fillForm(form, new URLSearchParams(location.search)); load(); });
  document.getElementById("approve-selected").addEventListener("click", () => act("approve", pick.selected()));
  document.getElementById("reject-selected").addEventListener("click", () => act("reject", pick.selected()));
  document.getElementById("decide").addEventListener("submit", (e) => e.preventDefault());
  K.ready(labelOptions(document.getElementById("f-label"), "Any label").catch(fail).then(() => {
    fillForm(form, new URLSearchParams(location.search));
    return load();
  }));
})();
