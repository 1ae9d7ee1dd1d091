// One-time passwords: create one or a batch (CSV for provisioning), list, revoke.
"use strict";
(() => {
  const { api, el, say, fail, time, badge, table, params, download, busy } = K;
  const create = document.getElementById("create");
  const filters = document.getElementById("filters");
  const list = document.getElementById("list");
  const more = document.getElementById("more");
  let fresh = [];
  let rows = [];
  let cursor = null;

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
        { title: "Label", cell: (i) => i.label || "any" },
        { title: "Uses", cell: (i) => String(i.uses), num: true },
        { title: "Expires", cell: (i) => time(i.expires_at) },
      ], fresh));
      const section = document.getElementById("created");
      section.hidden = false;
      section.focus();
      document.getElementById("entities").value = "";
      await load(false);
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

  function render() {
    list.replaceChildren(table(`${rows.length} one-time password(s)`, [
      { title: "ID", cell: (o) => String(o.id), num: true },
      { title: "Entity", cell: (o) => o.entity },
      { title: "Label", cell: (o) => o.label === "" ? "(unlabeled)" : o.label },
      { title: "Status", cell: (o) => badge(o.status) },
      { title: "Uses left", cell: (o) => `${o.uses_left} of ${o.uses_total}`, num: true },
      { title: "Created", cell: (o) => time(o.created_at) },
      { title: "Expires", cell: (o) => time(o.expires_at) },
      { title: "Actions", cell: (o) => o.status !== "active" ? "—" : el("button", {
          type: "button", class: "danger", "aria-label": `Revoke one-time password ${o.id} of ${o.entity}`,
          onclick: () => revoke(o) }, "Revoke") },
    ], rows, "No one-time passwords match."));
    more.hidden = !cursor;
  }

  async function load(append) {
    try {
      const page = await api("GET", `/admin/otp?${params(filters, { cursor: append ? cursor : null })}`);
      rows = append ? rows.concat(page.items) : page.items;
      cursor = page.next_cursor;
      render();
    } catch (err) {
      fail(err);
    }
  }

  async function revoke(otp) {
    try {
      await api("DELETE", `/admin/otp/${otp.id}`);
      await load(false);
      say(`One-time password ${otp.id} of ${otp.entity} revoked.`);
    } catch (err) {
      fail(err);
    }
  }

  filters.addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  // OTPs are valid on the unlabeled path (""), on one label, or on "any" label.
  K.ready(Promise.all([api("GET", "/admin/labels").then(({ items }) => {
    const select = document.getElementById("otp-label");
    for (const l of items) if (l.name) select.append(el("option", { value: l.name }, l.name));
  }).catch(fail), load(false)]));
})();
