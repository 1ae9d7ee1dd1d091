// One held request: the whole CSR, the requester's other certificates, approve or reject with a confirmation.
"use strict";
(() => {
  const { api, el, fail, time, badge, table, fields } = K;
  const id = Number(location.pathname.split("/").pop());
  const from = new URLSearchParams(location.search).get("from");
  if (from !== null && from.startsWith("?")) document.getElementById("back").href = `/console/requests${from}`;

  async function show() {
    let r;
    try {
      r = await api("GET", `/admin/requests/${id}`);
    } catch (err) {
      fail(err);
      return;
    }
    const c = r.csr;
    document.getElementById("req-h").textContent = `Request #${r.id}`;
    document.getElementById("req-fields").replaceChildren(fields([
      ["Status", el("span", {}, badge(r.status), r.reason ? ` ${r.reason}` : "")],
      ["Issued certificate", r.serial ? el("a", { class: "mono", href: `/console/certs/${encodeURIComponent(r.serial)}` }, r.serial) : "—"],
      ["Operation", r.op],
      ["Entity", r.entity],
      ["Authenticated with", r.auth],
      ["Requester", r.requester],
      ["Client address", r.client_addr || "—"],
      ["EST label", r.label || "(unlabeled)"],
      ["CA", r.ca],
      ["Received", time(r.created_at)],
      ["Expires unless decided", time(r.expires_at)],
      ["Decided", r.decided_at ? `${time(r.decided_at)} by ${r.decided_by}` : "—"],
    ]));
    document.getElementById("csr-fields").replaceChildren(fields([
      ["Subject", c.subject || "—"],
      ["Subject alternative names", c.sans.length ? c.sans.join(", ") : "—"],
      ["Public key", c.public_key],
      ["Signature algorithm", c.signature_algorithm || "—"],
      ["Signature", c.readable ? (c.signature_valid ? "valid (the requester holds the key)" : "INVALID") : "not a PKCS#10 CSR"],
      ["Linked to the TLS session", c.linked ? "yes: the challengePassword carries the channel binding (RFC 7030 §3.5)" : "no"],
      ["Attributes", c.attributes.length ? c.attributes.join(", ") : "—"],
    ]));
    document.getElementById("csr-ext").replaceChildren(table("Requested extensions", [
      { title: "Extension", cell: (e) => e.name },
      { title: "Critical", cell: (e) => (e.critical ? "yes" : "no") },
      { title: "Value", cell: (e) => e.value },
    ], c.extensions, "The CSR requests no extensions."));
    document.getElementById("decide").hidden = r.status !== "pending";
    document.getElementById("others-all").href = `/console/certs?entity=${encodeURIComponent(r.entity)}`;
    try {
      const others = await api("GET", `/admin/certs?${new URLSearchParams({ entity: r.entity, sort: "issued", order: "desc", limit: "20" })}`);
      document.getElementById("others").replaceChildren(table(`Newest certificates of ${r.entity}`, [
        { title: "Serial", cell: (x) => el("a", { class: "mono", href: `/console/certs/${encodeURIComponent(x.serial)}` }, x.serial) },
        { title: "Subject", cell: (x) => x.subject },
        { title: "Status", cell: (x) => el("span", {}, badge(x.status), x.superseded ? [" ", badge("superseded")] : null) },
        { title: "Issued", cell: (x) => time(x.issued_at) },
        { title: "Expires", cell: (x) => time(x.not_after) },
      ], others.items, "This requester has no certificate yet."));
    } catch (err) {
      fail(err);
    }
  }

  async function act(action) {
    if (await Decide.decide(action, [id], document.getElementById("reason").value.trim())) {
      const box = document.getElementById("status");
      const message = box.textContent, isError = box.classList.contains("error");
      await show();
      K.say(message, isError);
    }
  }

  document.getElementById("approve").addEventListener("click", () => act("approve"));
  document.getElementById("reject").addEventListener("click", () => act("reject"));
  document.getElementById("decide").addEventListener("submit", (e) => e.preventDefault());
  K.ready(show());
})();
