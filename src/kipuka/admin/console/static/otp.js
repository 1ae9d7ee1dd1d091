// One-time passwords: create one or a batch (CSV for provisioning), list, revoke.
"use strict";
(() => {
  const { api, el, say, fail, time, badge, table, download, busy, confirmAct, pager, fillForm, picker } = K;
  const create = document.getElementById("create");
  const filters = document.getElementById("filters");
  const list = document.getElementById("list");
  const show = K.listLoads(list);
  const pages = document.getElementById("pages");
  const pick = picker(list, (o) => o.id);
  let fresh = [];

  /** One CSV field, quoted as RFC 4180 says. */
  function csvField(value) {
    const text = value === null || value === undefined ? "" : String(value);
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  }

  function csv(items) {
    const header = ["entity", "otp", "label", "uses", "expires_at", "id"];
    const lines = items.map((i) => [i.entity, i.otp, i.label || "", i.uses, i.expires_at, i.id].map(csvField).join(","));
    return [header.join(","), ...lines].join("\r\n") + "\r\n";
  }

  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    const entities = [...new Set(document.getElementById("entities").value.split(/\r?\n/).map((s) => s.trim()).filter(Boolean))];
    if (!entities.length) {
      say("Enter at least one entity ID.", true);
      return;
    }
    const label = document.getElementById("otp-label").value || null;
    const ttl = document.getElementById("ttl").value.trim();
    const uses = Number(document.getElementById("uses").value);
    const button = document.getElementById("create-button");
    busy(button, true);
    try {
      const result = await api("POST", "/admin/otp", { items: entities.map((entity) => ({ entity, label, ttl, uses })) });
      fresh = result.items;
      document.getElementById("created-list").replaceChildren(table(`${fresh.length} one-time password(s)`, [
        { title: "Entity", cell: (i) => i.entity },
        { title: "One-time password", cell: (i) => el("span", { class: "secret" }, i.otp) },
        { title: "Label", cell: (i) => i.label === "" ? "(unlabeled)" : i.label },
        { title: "Uses", cell: (i) => String(i.uses), num: true },
        { title: "Expires", cell: (i) => time(i.expires_at) },
      ], fresh));
      const section = document.getElementById("created");
      section.hidden = false;
      section.focus();
      document.getElementById("entities").value = "";
      await load();
      say(`Created ${fresh.length} one-time password(s).`);
    } catch (err) {
      fail(err);
    } finally {
      busy(button, false);
    }
  });

  document.getElementById("csv").addEventListener("click", () => {
    const stamp = new Date().toISOString().replaceAll(":", "").slice(0, 15);
    download(`kipuka-otps-${stamp}.csv`, csv(fresh), "text/csv");
  });

  function render(page) {
    list.replaceChildren(table(`One-time passwords on this page: ${page.items.length}`, [
      { title: pick.head, cell: (o) => pick.cell(o, `Select one-time password ${o.id}`, o.status === "revoked") },
      { title: "ID", cell: (o) => String(o.id), num: true },
      { title: "Entity", cell: (o) => o.entity },
      { title: "Label", cell: (o) => o.label === "" ? "(unlabeled)" : o.label },
      { title: "Status", cell: (o) => badge(o.status) },
      { title: "Uses left", cell: (o) => `${o.uses_left} of ${o.uses_total}`, num: true },
      { title: "Certificates", cell: (o) => o.certificates ? el("a", { href: `/console/certs?otp=${o.id}`,
          "aria-label": `Certificates of one-time password ${o.id}` }, String(o.certificates)) : "0", num: true },
      { title: "Created", cell: (o) => el("span", { class: "when" }, time(o.created_at)) },
      { title: "Expires", cell: (o) => el("span", { class: "when" }, time(o.expires_at)) },
      { title: "Actions", cell: (o) => o.status === "revoked" ? "—" : el("button", {
          type: "button", class: "danger", "aria-label": `Revoke one-time password ${o.id} of ${o.entity}`,
          onclick: () => revoke([o.id], `one-time password ${o.id} of ${o.entity}`) }, "Revoke") },
    ], page.items, "No one-time passwords match."));
    pager(pages, page, go);
  }

  async function load() {
    const state = new URLSearchParams(location.search);
    const q = new URLSearchParams({ order: "desc", limit: state.get("limit") || "50" });
    for (const name of ["entity", "status", "after", "before"]) if (state.get(name)) q.set(name, state.get(name));
    await show(api("GET", `/admin/otp?${q}`), render);
  }

  function go(position) {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(filters)) if (String(v).trim() !== "") q.set(k, String(v).trim());
    for (const [k, v] of Object.entries(position || {})) if (v) q.set(k, v);
    history.pushState(null, "", `/console/otp?${q}`);
    return load();
  }

  async function revoke(ids, what) {
    if (!ids.length) { say("Select at least one one-time password first.", true); return; }
    if (!await confirmAct(`Revoke ${what}? ${ids.length === 1 ? "It" : "They"} can no longer enroll a device.`,
                          `Revoke ${ids.length}`)) {
      say("Nothing was revoked.");
      return;
    }
    try {
      const done = await api("POST", "/admin/bulk/revoke-otps", { ids: ids.map(Number) });
      await load();
      say(ids.length === 1 ? `One-time password ${ids[0]} revoked.` : `Revoked ${done.revoked} one-time password(s).`);
    } catch (err) {
      fail(err);
    }
  }

  document.getElementById("revoke-selected").addEventListener("click", () => {
    const ids = pick.selected();
    revoke(ids, `${ids.length} one-time password(s)`);
  });
  window.addEventListener("popstate", () => { fillForm(filters, new URLSearchParams(location.search)); load(); });
  filters.addEventListener("submit", (e) => { e.preventDefault(); go({}); });
  fillForm(filters, new URLSearchParams(location.search));
  // OTPs are valid on the unlabeled path (""), on one label, on a list of labels, or on "any" label.
  K.ready(Promise.all([api("GET", "/admin/labels").then(({ items }) => {
    const select = document.getElementById("otp-label");
    for (const l of items) if (l.name) select.append(el("option", { value: l.name }, l.name));
  }).catch(fail), load()]));
})();
