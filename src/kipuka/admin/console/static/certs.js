// Certificates: search and filter, detail with decoded fields and PEM download, revoke with a reason.
"use strict";
(() => {
  const { api, el, say, fail, time, badge, table, fields, params, dayStart, download, labelOptions, caOptions,
          labelParam, busy } = K;
  const form = document.getElementById("filters");
  const results = document.getElementById("results");
  const more = document.getElementById("more");
  const detail = document.getElementById("detail");
  let rows = [];
  let cursor = null;
  let current = null;

  function query(append) {
    const q = labelParam(params(form, { cursor: append ? cursor : null }));
    const days = document.getElementById("f-window").value;
    if (days) {
      q.set("expires_after", new Date().toISOString());
      q.set("expires_before", new Date(Date.now() + Number(days) * 86400000).toISOString());
    }
    const after = document.getElementById("f-after").value;
    const before = document.getElementById("f-before").value;
    if (after) q.set("expires_after", dayStart(after));
    if (before) q.set("expires_before", dayStart(before));
    let subject = q.get("subject_prefix");
    if (subject && !subject.includes("=")) q.set("subject_prefix", `CN=${subject}`);
    return q;
  }

  function render() {
    results.replaceChildren(table(`${rows.length} certificate(s)`, [
      { title: "Serial", cell: (c) => el("button", { type: "button", class: "mono", "aria-label": `Show certificate ${c.serial}`,
          onclick: () => show(c.serial) }, c.serial) },
      { title: "Subject", cell: (c) => c.subject },
      { title: "Entity", cell: (c) => c.entity },
      { title: "Label", cell: (c) => c.label || "(unlabeled)" },
      { title: "CA", cell: (c) => c.ca },
      { title: "Status", cell: (c) => badge(c.status) },
      { title: "Expires", cell: (c) => time(c.not_after) },
    ], rows, "No certificates match."));
    more.hidden = !cursor;
  }

  async function search(append) {
    try {
      const page = await api("GET", `/admin/certs?${query(append)}`);
      rows = append ? rows.concat(page.items) : page.items;
      cursor = page.next_cursor;
      render();
    } catch (err) {
      fail(err);
    }
  }

  async function show(serial) {
    try {
      current = await api("GET", `/admin/certs/${encodeURIComponent(serial)}`);
    } catch (err) {
      fail(err);
      return;
    }
    const c = current, d = c.decoded;
    document.getElementById("detail-h").textContent = `Certificate ${c.serial}`;
    document.getElementById("detail-fields").replaceChildren(fields([
      ["Status", el("span", {}, badge(c.status), c.revoked_at ? ` since ${time(c.revoked_at)} (${c.revocation_reason})` : "")],
      ["Subject", d.subject],
      ["Subject alternative names", c.sans || "—"],
      ["Issuer", d.issuer],
      ["Serial", el("span", { class: "mono" }, d.serial_hex)],
      ["Valid from", time(d.not_before)],
      ["Valid until", time(d.not_after)],
      ["Public key", d.public_key],
      ["Signature", d.signature_algorithm],
      ["SHA-256 fingerprint", el("span", { class: "mono" }, d.sha256)],
      ["SHA-1 fingerprint", el("span", { class: "mono" }, d.sha1)],
      ["Entity", c.entity],
      ["EST label", c.label || "(unlabeled)"],
      ["CA", c.ca],
      ["Enrolled with", c.auth],
      // BRSKI (RFC 8995): the pledge's factory IDevID this LDevID was issued to
      ...(c.idevid ? [["IDevID", `${c.idevid.manufacturer} serial ${c.idevid.serial_number}: ${c.idevid.idevid_subject}`]] : []),
      ["Issued", time(c.issued_at)],
    ]));
    document.getElementById("detail-ext").replaceChildren(table("X.509 v3 extensions", [
      { title: "Extension", cell: (e) => e.name },
      { title: "Critical", cell: (e) => (e.critical ? "yes" : "no") },
      { title: "Value", cell: (e) => e.value },
    ], d.extensions, "No extensions."));
    document.getElementById("pem").textContent = c.pem;
    document.getElementById("revoke").hidden = c.status === "revoked";
    detail.hidden = false;
    history.replaceState(null, "", `/console/certs?serial=${encodeURIComponent(c.serial)}`);
    detail.focus();
  }

  document.getElementById("download").addEventListener("click", () => {
    if (current) download(`${current.serial}.pem`, current.pem, "application/x-pem-file");
  });

  document.getElementById("revoke").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!current) return;
    const why = document.getElementById("revoke-reason").value;
    if (!confirm(`Revoke certificate ${current.serial} (${current.subject}) for ${why}? This cannot be undone.`)) return;
    const button = document.getElementById("revoke-button");
    busy(button, true);
    try {
      const updated = await api("POST", `/admin/certs/${encodeURIComponent(current.serial)}/revoke`, { reason: why });
      await show(updated.serial);
      await search(false);
      say(`Certificate ${updated.serial} revoked (${updated.revocation_reason}); the CRL has been re-signed.`);
    } catch (err) {
      fail(err);
    } finally {
      busy(button, false);
    }
  });

  form.addEventListener("submit", (e) => { e.preventDefault(); search(false); });
  more.addEventListener("click", () => search(true));

  const wanted = new URLSearchParams(location.search);
  for (const name of ["entity", "ca", "status"]) if (wanted.get(name)) form.elements[name].value = wanted.get(name);
  K.ready(Promise.all([labelOptions(document.getElementById("f-label"), "Any label"),
                       caOptions(document.getElementById("f-ca"), "Any CA")])
    .catch(fail)
    .then(() => {
      if (wanted.get("ca")) form.elements.ca.value = wanted.get("ca");
      return Promise.all([search(false), wanted.get("serial") ? show(wanted.get("serial")) : null]);
    }));
})();
