// Pending requests: approve, or reject with a reason, one or many at once.
"use strict";
(() => {
  const { api, el, say, fail, time, age, badge, table, params, labelOptions, labelParam, busy } = K;
  const form = document.getElementById("filters");
  const list = document.getElementById("list");
  const more = document.getElementById("more");
  const reason = document.getElementById("reason");
  let rows = [];
  let cursor = null;

  function selected() {
    return [...list.querySelectorAll("input.pick:checked")].map((box) => Number(box.value));
  }

  function render() {
    const pickAll = el("input", { type: "checkbox", id: "pick-all", onchange: (e) => {
      for (const box of list.querySelectorAll("input.pick:not(:disabled)")) box.checked = e.target.checked;
    } });
    const columns = [
      { title: el("span", {}, pickAll, el("label", { for: "pick-all", class: "inline" }, " All")),
        cell: (r) => el("span", {},
          el("input", { type: "checkbox", class: "pick", id: `pick-${r.id}`, value: r.id, disabled: r.status !== "pending" }),
          el("label", { for: `pick-${r.id}` }, ` #${r.id}`)) },
      { title: "Subject", cell: (r) => r.subject || "—" },
      { title: "SANs", cell: (r) => r.sans || "—" },
      { title: "Key", cell: (r) => r.key },
      { title: "Requester", cell: (r) => el("span", {}, r.entity, el("br"), el("small", {}, `${r.op} · ${r.auth} · ${r.client_addr || "?"}`)) },
      { title: "Label", cell: (r) => r.label || "(unlabeled)" },
      { title: "Age", cell: (r) => el("span", { title: time(r.created_at) }, age(r.created_at)) },
      { title: "Status", cell: (r) => el("span", {}, badge(r.status), r.reason && r.status !== "pending" ? el("br") : null,
          r.status !== "pending" ? el("small", {}, r.reason || "") : null,
          r.serial ? el("span", {}, " ", el("a", { href: `/console/certs?serial=${encodeURIComponent(r.serial)}` }, "certificate")) : null) },
      { title: "Actions", cell: (r) => r.status !== "pending" ? "—" : el("span", { class: "actions" },
          el("button", { type: "button", class: "primary", "aria-label": `Approve request ${r.id}`,
                         onclick: () => decide("approve", [r.id]) }, "Approve"),
          el("button", { type: "button", class: "danger", "aria-label": `Reject request ${r.id}`,
                         onclick: () => decide("reject", [r.id]) }, "Reject")) },
    ];
    list.replaceChildren(table(`${rows.length} request(s)`, columns, rows, "No requests match."));
    more.hidden = !cursor;
  }

  async function load(append) {
    try {
      const q = labelParam(params(form, { cursor: append ? cursor : null }));
      const page = await api("GET", `/admin/requests?${q}`);
      rows = append ? rows.concat(page.items) : page.items;
      cursor = page.next_cursor;
      render();
    } catch (err) {
      fail(err);
    }
  }

  /** Approve or reject each id in turn; every decision is its own audited admin API call. */
  async function decide(action, ids) {
    if (!ids.length) {
      say("Select at least one request first.", true);
      return;
    }
    const why = reason.value.trim();
    if (action === "reject" && !why) {
      say("Write a reason for the rejection first.", true);
      reason.focus();
      return;
    }
    const buttons = [...document.querySelectorAll("button")];
    buttons.forEach((b) => busy(b, true));
    const done = [], failed = [];
    for (const id of ids) {
      try {
        const result = await api("POST", `/admin/requests/${id}/${action}`, action === "reject" ? { reason: why } : {});
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
    await load(false);
    const verb = action === "approve" ? "Approved" : "Rejected";
    say([done.length ? `${verb}: ${done.join("; ")}.` : "", failed.length ? `Failed: ${failed.join("; ")}.` : ""]
      .filter(Boolean).join(" "), failed.length > 0);
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  document.getElementById("approve-selected").addEventListener("click", () => decide("approve", selected()));
  document.getElementById("reject-selected").addEventListener("click", () => decide("reject", selected()));
  document.getElementById("decide").addEventListener("submit", (e) => e.preventDefault());
  K.ready(labelOptions(document.getElementById("f-label"), "Any label").catch(fail).then(() => load(false)));
})();
