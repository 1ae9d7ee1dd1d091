// CAs and labels: each CA's back end, health, replicas, chain, CRL and OCSP; each label's policy.
"use strict";
(() => {
  const { api, el, fail, time, badge, table, fields } = K;

  function links(urls) {
    if (!urls.length) return "none published by kipuka";
    return el("span", {}, urls.map((u, i) => [i ? ", " : "", el("a", { href: u }, u)]));
  }

  function caCard(ca) {
    const health = ca.health === "ok" ? "ok" : ca.health.split(":")[0];
    const crl = !ca.publishes_revocation ? "published by the remote CA itself"
      : ca.crl ? el("span", {}, badge(ca.crl.fresh ? "ok" : "expired"),
          ` number ${ca.crl.number}, ${ca.crl.entries} revoked entr${ca.crl.entries === 1 ? "y" : "ies"}, ` +
          `signed ${time(ca.crl.this_update)}, next update ${time(ca.crl.next_update)}`)
      : "not signed yet (made on the first request or revocation)";
    const section = el("section", { class: "card", "aria-labelledby": `ca-${ca.id}` },
      el("h2", { id: `ca-${ca.id}` }, `CA ${ca.id}`),
      fields([
        ["Back end", ca.type],
        ["Health", el("span", {}, badge(health), ca.health === "ok" ? "" : ` ${ca.health}`)],
        ["Subject", ca.subject],
        ["Expires", time(ca.not_after)],
        ["EST labels", ca.labels.length ? ca.labels.join(", ") : "none"],
        ["CRL", crl],
        ["CRL URLs", links(ca.crl_urls)],
        ["OCSP", ca.publishes_revocation ? el("span", {}, links(ca.ocsp_urls), ca.ocsp_responder ? ` (signed by ${ca.ocsp_responder})` : "")
          : "answered by the remote CA itself"],
      ]));
    if (ca.replicas.length) {
      section.append(el("h3", {}, "Replicas"), table(`Replicas of ${ca.id}`, [
        { title: "Replica", cell: (r) => r.name },
        { title: "Status", cell: (r) => badge(r.status) },
        { title: "Detail", cell: (r) => r.detail || "" },
      ], ca.replicas));
    }
    section.append(el("h3", {}, "Chain"), table(`Chain of ${ca.id}, issuing CA first`, [
      { title: "Subject", cell: (c) => c.subject },
      { title: "Issuer", cell: (c) => c.issuer },
      { title: "Expires", cell: (c) => time(c.not_after) },
      { title: "SHA-256", cell: (c) => el("span", { class: "mono" }, c.sha256) },
    ], ca.chain_info));
    section.append(el("details", {}, el("summary", {}, "Chain as PEM"), el("pre", {}, ca.chain.join(""))));
    section.append(el("p", {}, el("a", { href: `/console/certs?ca=${encodeURIComponent(ca.id)}` }, `Certificates issued by ${ca.id}`)));
    return section;
  }

  function yesNo(v) { return v ? "yes" : "no"; }

  function policyDetails(label) {
    const pairs = Object.entries(label.policy).map(([k, v]) =>
      [k, Array.isArray(v) ? (v.length ? v.join(", ") : "—") : v === null ? "—" : String(v)]);
    return el("details", {}, el("summary", {}, "Whole policy"), fields(pairs));
  }

  async function load() {
    try {
      const [cas, labels] = await Promise.all([api("GET", "/admin/ca"), api("GET", "/admin/labels")]);
      document.getElementById("cas").replaceChildren(...cas.items.map(caCard));
      document.getElementById("labels").replaceChildren(table(`${labels.items.length} label(s)`, [
        { title: "Label", cell: (l) => el("span", {}, l.name || "(unlabeled)", el("br"), el("code", {}, l.path)) },
        { title: "CA", cell: (l) => l.ca },
        { title: "Back end", cell: (l) => l.ca_type },
        { title: "Key types", cell: (l) => l.policy.key_types.join(", ") },
        { title: "Validity", cell: (l) => `${l.policy.validity_days} d` },
        { title: "Extended key usage", cell: (l) => l.policy.ekus.join(", ") },
        { title: "Names", cell: (l) => l.policy.otp_name_rule },
        { title: "Approval", cell: (l) => `enroll: ${yesNo(l.policy.require_approval)}, reenroll: ${yesNo(l.policy.reenroll_requires_approval)}` },
        { title: "Also", cell: (l) => [l.policy.serverkeygen ? "serverkeygen" : "", l.policy.fullcmc ? "fullcmc" : "",
            l.policy.require_linking ? "linking required" : ""].filter(Boolean).join(", ") || "—" },
        { title: "Policy", cell: policyDetails },
      ], labels.items));
    } catch (err) {
      fail(err);
    }
  }

  K.ready(load());
})();
