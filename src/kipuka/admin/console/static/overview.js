// Overview: health of the database, each CA and replica; issuance per hour; pending queue; failures.
"use strict";
(() => {
  const { api, el, fail, time, badge, table } = K;
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(n) {
    if (n <= 5) return 5;
    const step = Math.pow(10, Math.floor(Math.log10(n)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= n) return m * step;
    return 10 * step;
  }

  /** A bar chart drawn as SVG: one pair of bars (issued, failed) per hour. */
  function chart(items) {
    const W = 760, H = 260, left = 48, right = 10, top = 12, bottom = 34;
    const plotW = W - left - right, plotH = H - top - bottom;
    const max = niceMax(Math.max(1, ...items.map((i) => Math.max(i.issued, i.failed))));
    const issued = items.reduce((a, i) => a + i.issued, 0);
    const failed = items.reduce((a, i) => a + i.failed, 0);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title" });
    root.append(svg("title", { id: "chart-title" },
      `Bar chart: ${issued} certificates issued and ${failed} failed requests over the last ${items.length} hours`));
    for (let t = 0; t <= 4; t++) {
      const value = (max * t) / 4;
      const y = top + plotH - (plotH * t) / 4;
      root.append(svg("line", { x1: left, x2: W - right, y1: y, y2: y, class: "grid-line" }));
      root.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, Number.isInteger(value) ? value : value.toFixed(1)));
    }
    const slot = plotW / items.length;
    const barW = Math.max(2, slot * 0.38);
    items.forEach((item, i) => {
      const x = left + i * slot + slot * 0.1;
      const hIssued = (plotH * item.issued) / max;
      const hFailed = (plotH * item.failed) / max;
      const hour = new Date(item.start).getUTCHours();
      const bar1 = svg("rect", { x, y: top + plotH - hIssued, width: barW, height: hIssued, class: "bar-issued" });
      bar1.append(svg("title", {}, `${String(hour).padStart(2, "0")}:00 UTC: ${item.issued} issued`));
      const bar2 = svg("rect", { x: x + barW, y: top + plotH - hFailed, width: barW, height: hFailed, class: "bar-failed" });
      bar2.append(svg("title", {}, `${String(hour).padStart(2, "0")}:00 UTC: ${item.failed} failed`));
      root.append(bar1, bar2);
      if (i % 3 === 0 || i === items.length - 1) {
        root.append(svg("text", { x: left + i * slot + slot / 2, y: H - bottom + 16, "text-anchor": "middle" },
          `${String(hour).padStart(2, "0")}:00`));
      }
    });
    root.append(svg("line", { x1: left, x2: W - right, y1: top + plotH, y2: top + plotH, class: "axis" }));
    root.append(svg("line", { x1: left, x2: left, y1: top, y2: top + plotH, class: "axis" }));
    root.append(svg("text", { x: left + plotW / 2, y: H - 4, "text-anchor": "middle" }, "hour (UTC)"));
    return { root, issued, failed };
  }

  async function health() {
    const [report, cas] = await Promise.all([api("GET", "/admin/health"), api("GET", "/admin/ca")]);
    document.getElementById("overall").replaceChildren(badge(report.status));
    const byId = Object.fromEntries(cas.items.map((ca) => [ca.id, ca]));
    const rows = [];
    for (const [name, c] of Object.entries(report.components)) {
      rows.push({ name: name === "database" ? "Database" : `CA ${name.slice(3)}`, status: c.status, detail: c.detail });
      const ca = byId[name.slice(3)];
      for (const r of (name.startsWith("ca:") && ca ? ca.replicas : [])) {
        rows.push({ name: `  ↳ ${r.name}`, status: r.status, detail: r.detail });
      }
    }
    document.getElementById("health").replaceChildren(table("Components", [
      { title: "Component", cell: (r) => r.name },
      { title: "Status", cell: (r) => badge(r.status) },
      { title: "Detail", cell: (r) => r.detail || "" },
    ], rows));
  }

  async function stats() {
    const s = await api("GET", "/admin/stats/issuance?hours=24");
    document.getElementById("pending-count").textContent = String(s.pending);
    const drawn = chart(s.items);
    document.getElementById("chart").replaceChildren(drawn.root);
    document.getElementById("chart-summary").textContent =
      `${drawn.issued} certificates issued and ${drawn.failed} failed requests between ${time(s.since)} and ${time(s.until)}.`;
    document.getElementById("chart-table").replaceChildren(table("Per hour (UTC)", [
      { title: "Hour starting", cell: (i) => time(i.start) },
      { title: "Issued", cell: (i) => String(i.issued), num: true },
      { title: "Failed", cell: (i) => String(i.failed), num: true },
    ], s.items));
  }

  async function failures() {
    const [rejected, errors] = await Promise.all([
      api("GET", "/admin/audit?outcome=rejected&limit=10"), api("GET", "/admin/audit?outcome=error&limit=10")]);
    const rows = [...rejected.items, ...errors.items].sort((a, b) => b.id - a.id).slice(0, 10);
    document.getElementById("failures").replaceChildren(table("The ten newest failed events", [
      { title: "When", cell: (e) => time(e.at) },
      { title: "Event", cell: (e) => e.event },
      { title: "Outcome", cell: (e) => badge(e.outcome) },
      { title: "Entity", cell: (e) => e.entity || "—" },
      { title: "Label", cell: (e) => e.label || "—" },
      { title: "Client", cell: (e) => e.client_addr || "—" },
      { title: "Reason", cell: (e) => e.reason },
    ], rows, "No failures recorded."));
  }

  /** The dashboard's figures; each links to the filtered list behind it. */
  async function attention() {
    const d = await api("GET", "/admin/dashboard");
    const figure = (label, value, href, id) => el("div", { class: "figure" },
      el("a", { href, id, "aria-label": `${label}: ${value}` }, String(value)), el("div", {}, label));
    document.getElementById("rates").replaceChildren(
      figure("issued in the last hour", d.rates.issued_hour, "/console/certs?sort=issued&order=desc", "issued-hour"),
      figure("issued in the last 24 hours", d.rates.issued_day, "/console/certs?sort=issued&order=desc", "issued-day"),
      figure("failed in the last hour", d.rates.failed_hour, "/console/audit?outcome=rejected", "failed-hour"),
      figure("failed in the last 24 hours", d.rates.failed_day, "/console/audit?outcome=rejected", "failed-day"));
    const within = (row, days) => {
      const q = new URLSearchParams({ label: row.label || "-", status: "valid", within: String(days), sort: "expires", order: "asc" });
      return el("a", { href: `/console/certs?${q}`, "aria-label": `${row[`days_${days}`]} certificates of ${row.label || "the unlabeled path"} expiring within ${days} days` },
        String(row[`days_${days}`]));
    };
    document.getElementById("expiring").replaceChildren(table("Valid certificates expiring within 7, 30 and 90 days", [
      { title: "Label", cell: (r) => r.label || "(unlabeled)" },
      { title: "7 days", cell: (r) => within(r, 7), num: true },
      { title: "30 days", cell: (r) => within(r, 30), num: true },
      { title: "90 days", cell: (r) => within(r, 90), num: true },
    ], d.expiring, "No certificate expires within 90 days."));
    const rows = d.cas.flatMap((ca) => ca.certificates.map((c, i) => ({ ca, c, first: i === 0 })));
    document.getElementById("ca-status").replaceChildren(table("Each CA's certificates, CRL and OCSP responder", [
      { title: "CA", cell: (r) => r.first ? el("a", { href: "/console/cas" }, r.ca.id) : "" },
      { title: "Certificate", cell: (r) => r.c.subject },
      { title: "Expires", cell: (r) => el("span", { class: "when" }, `${time(r.c.not_after)} (${r.c.days_left} d)`) },
      { title: "CRL next update", cell: (r) => !r.first ? "" : r.ca.crl
          ? el("span", {}, badge(r.ca.crl.fresh ? "ok" : "expired"), ` ${time(r.ca.crl.next_update)}`) : "—" },
      { title: "OCSP", cell: (r) => !r.first ? "" : r.ca.ocsp ? el("span", {}, badge(r.ca.ocsp.status), r.ca.ocsp.detail ? ` ${r.ca.ocsp.detail}` : "") : "—" },
    ], rows));
  }

  async function load() {
    try {
      await Promise.all([health(), stats(), failures(), attention()]);
      document.getElementById("updated").textContent = `Updated ${time(new Date().toISOString())}`;
    } catch (err) {
      fail(err);
    }
  }

  document.getElementById("refresh").addEventListener("click", load);
  K.ready(load());
})();
