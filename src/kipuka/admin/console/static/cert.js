// One certificate: decoded fields, lineage (renewed from / superseded by), revocation state, chain, PEM, revoke.
"use strict";
(() => {
  const { api, el, say, fail, time, badge, table, fields, download, busy, confirmAct } = K;
  const serial = decodeURIComponent(location.pathname.split("/").pop());
  const from = new URLSearchParams(location.search).get("from");
  let current = null;

  // Back returns to the list exactly where it was (its filters, sort and page are its URL).
  if (from !== null && from.startsWith("?")) document.getElementById("back").href = `/console/certs${from}`;

  const link = (c) => el("a", { class: "mono", href: `/console/certs/${encodeURIComponent(c.serial)}` }, c.serial);

  async function show() {
    try {
      current = await api("GET", `/admin/certs/${encodeURIComponent(serial)}`);
    } catch (err) {
      fail(err);
      return;
    }
    const c = current, d = c.decoded;
    document.getElementById("detail-h").textContent = `Certificate ${c.serial}`;
    document.title = `Certificate ${c.serial} · kipuka console`;
    document.getElementById("detail-fields").replaceChildren(fields([
      ["Status", el("span", {}, badge(c.status), c.superseded ? [" ", badge("superseded")] : null)],
      ["Subject", d.subject],
      ["Subject alternative names", c.sans || "—"],
      ["Issuer", d.issuer],
      ["Serial", el("span", { class: "mono" }, d.serial_hex)],
      ["Version", d.version],
      ["Valid from", time(d.not_before)],
      ["Valid until", time(d.not_after)],
      ["Public key", d.public_key],
      ["Signature", d.signature_algorithm],
      ["SHA-256 fingerprint", el("span", { class: "mono" }, d.sha256)],
      ["SHA-1 fingerprint", el("span", { class: "mono" }, d.sha1)],
      ["Entity", el("a", { href: `/console/certs?entity=${encodeURIComponent(c.entity)}` }, c.entity)],
      ["EST label", c.label || "(unlabeled)"],
      ["CA", c.ca],
      ["Enrolled with", c.auth],
      ...(c.idevid ? [["IDevID", `${c.idevid.manufacturer} serial ${c.idevid.serial_number}: ${c.idevid.idevid_subject}`]] : []),
      ["Issued", time(c.issued_at)],
    ]));
    document.getElementById("lineage").replaceChildren(fields([
      ["Renewed from", c.renewed_from ? el("span", {}, link(c.renewed_from), ` (issued ${time(c.renewed_from.issued_at)})`)
        : (c.replaces_serial ? el("span", { class: "mono" }, c.replaces_serial) : "— (a first enrollment)")],
      ["Superseded by", c.superseded_by.length
        ? el("span", {}, c.superseded_by.map((s, i) => [i ? ", " : "", link(s), ` (issued ${time(s.issued_at)})`]))
        : "— (the newest of its line)"],
    ]));
    document.getElementById("revocation").replaceChildren(fields([
      ["State", c.revoked_at ? `revoked ${time(c.revoked_at)} (${c.revocation_reason})` : "not revoked"],
      ["CRL", c.crl ? `number ${c.crl.number}, issued ${time(c.crl.this_update)}, next update ${time(c.crl.next_update)}`
        : "none published by kipuka for this CA"],
    ]));
    document.getElementById("chain").replaceChildren(table("The issuing CA up to the root", [
      { title: "Subject", cell: (x) => x.subject },
      { title: "Issuer", cell: (x) => x.issuer },
      { title: "Expires", cell: (x) => time(x.not_after) },
      { title: "SHA-256", cell: (x) => el("span", { class: "mono" }, x.sha256) },
    ], c.chain, "The CA is not configured on this server."));
    document.getElementById("detail-ext").replaceChildren(table("X.509 v3 extensions", [
      { title: "Extension", cell: (e) => e.name },
      { title: "Critical", cell: (e) => (e.critical ? "yes" : "no") },
      { title: "Value", cell: (e) => e.value },
    ], d.extensions, "No extensions."));
    document.getElementById("pem").textContent = c.pem;
    document.getElementById("revoke").hidden = c.status === "revoked";
  }

  document.getElementById("download").addEventListener("click", () => {
    if (current) download(`${current.serial}.pem`, current.pem, "application/x-pem-file");
  });

  document.getElementById("revoke").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!current) return;
    const why = document.getElementById("revoke-reason").value;
    if (!await confirmAct(`Revoke certificate ${current.serial} (${current.subject}) for ${why}? This cannot be undone.`,
                          "Revoke 1")) {
      say("Nothing was revoked.");
      return;
    }
    const button = document.getElementById("revoke-button");
    busy(button, true);
    try {
      const updated = await api("POST", `/admin/certs/${encodeURIComponent(current.serial)}/revoke`, { reason: why });
      await show();
      say(`Certificate ${updated.serial} revoked (${updated.revocation_reason}); the CRL has been re-signed.`);
    } catch (err) {
      fail(err);
    } finally {
      busy(button, false);
    }
  });

  K.ready(show());
})();
