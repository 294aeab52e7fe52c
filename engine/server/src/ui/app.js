// neutral's status page: reads the control plane's JSON read API with the
// token the user gave (kept in sessionStorage, sent as a bearer token) and
// draws regions, domains, nodes, runs and the audit timeline. It listens to
// GET /events (server-sent events, read with fetch so the token goes in a
// header) and redraws as soon as something changes; between changes it
// refreshes every 5 s (node metrics, ages) — domain details only when an
// event names them, after a commit or a reconnect, and once a minute — and
// reads everything every second while the event stream is down. The
// page carries no data itself. DOM is built with textContent only (no HTML
// from the server is ever parsed), so hostile names cannot inject markup.
"use strict";
(() => {
  const KEY = "neutral.token";
  const POLL_MS = 5000; // with the event stream up
  const FALLBACK_POLL_MS = 1000; // without it
  const STREAM_RETRY_MS = 2000;
  const EVENT_DEBOUNCE_MS = 100;
  const ALL_DOMAINS_MS = 60000; // every domain re-read at least this often
  const TIMEOUT_MS = 5000;
  const HISTORY = 60; // samples kept per node for the sparklines
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(KEY) || "";
  let generation = 0; // bumped whenever the token changes
  let timer = null;
  let streamUp = false;
  let stream = null; // the AbortController of the open event stream
  // Domain details are the bulk of a refresh (each lists its answers): with
  // the stream up they are read again only when an event names them (or
  // after a commit, a lag, a reconnect, and once a minute).
  const domainCache = new Map(); // domain -> GET /domains/{d}
  const staleDomains = new Set();
  let allDomainsStale = true;
  let lastAllDomains = 0;
  let lastOk = 0;
  let lastAudit = [];
  const history = new Map(); // node id -> {cpu: [], rtt: [], err: []}

  class HttpError extends Error {
    constructor(status, path, body) {
      super(`GET ${path}: HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }
  const refused = (e) => e instanceof HttpError && (e.status === 401 || e.status === 403);

  // h("td", {class: "x"}, "text", child, ...) builds an element.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const badge = (state) => h("span", { class: `badge s-${String(state).replace(/[^a-z_]/g, "")}` }, state);

  async function get(path, signal) {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      signal,
    });
    if (!response.ok) throw new HttpError(response.status, path, await response.text());
    return response.json();
  }

  function ago(iso) {
    const t = Date.parse(iso);
    if (!iso || Number.isNaN(t)) return "–";
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
  }
  const clock = (ms) => new Date(ms).toISOString().slice(11, 19);
  const short = (commit) => (commit ? String(commit).slice(0, 10) : "–");

  // --- token handling -------------------------------------------------------

  function clearData() {
    history.clear();
    domainCache.clear();
    staleDomains.clear();
    allDomainsStale = true;
    lastAudit = [];
    for (const id of ["alerts", "regions", "domains", "timeline"]) $(id).replaceChildren();
    for (const id of ["nodes", "runs"]) $(id).tBodies[0].replaceChildren();
    $("nodes-count").textContent = "";
    $("runs-note").textContent = "";
    $("timeline-note").textContent = "";
    $("runlog").hidden = true;
    $("main").hidden = true;
  }

  function needToken(why) {
    generation += 1;
    closeStream();
    token = "";
    sessionStorage.removeItem(KEY);
    clearData();
    $("login").hidden = false;
    $("forget").hidden = true;
    $("login-why").textContent = why;
    $("live").textContent = "no data: token needed";
    $("live").classList.remove("stale");
  }

  function useToken(value) {
    generation += 1;
    token = value;
    sessionStorage.setItem(KEY, value);
    $("login").hidden = true;
    $("forget").hidden = false;
    $("live").textContent = "loading…";
    schedule(0);
    openStream();
  }

  // --- the event stream -----------------------------------------------------

  function closeStream() {
    if (stream) stream.abort();
    stream = null;
    streamUp = false;
  }

  // Reads GET /events until it ends; every event asks for a redraw. Reopens
  // after STREAM_RETRY_MS while the token stays the same.
  async function openStream() {
    closeStream();
    const gen = generation;
    const abort = new AbortController();
    stream = abort;
    try {
      const response = await fetch("/events", {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal,
      });
      if (response.status === 401 || response.status === 403) return; // the polls say why
      if (!response.ok || !response.body) throw new Error(`GET /events: HTTP ${response.status}`);
      streamUp = true;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== generation) break;
        pending += value;
        // Events end with a blank line; comments (keep-alives) start with ':'.
        let end;
        while ((end = pending.indexOf("\n\n")) >= 0) {
          const block = pending.slice(0, end);
          pending = pending.slice(end + 2);
          const kind = /^event: (.*)$/m.exec(block);
          if (!kind) continue;
          if (kind[1] === "domain") {
            const data = /^data: (.*)$/m.exec(block);
            try {
              const name = data && JSON.parse(data[1]).domain;
              if (typeof name === "string") staleDomains.add(name);
              else allDomainsStale = true;
            } catch (e) {
              allDomainsStale = true;
            }
          } else if (kind[1] !== "node_status" && kind[1] !== "autoscale") {
            allDomainsStale = true; // open, declarations, lagged
          }
          schedule(EVENT_DEBOUNCE_MS);
        }
      }
    } catch (e) {
      // Aborted or broken: fall back to polling until it reopens.
    } finally {
      if (stream === abort) {
        streamUp = false;
        stream = null;
        if (gen === generation && token) setTimeout(() => { if (gen === generation && token && !stream) openStream(); }, STREAM_RETRY_MS);
      }
    }
  }

  // --- polling --------------------------------------------------------------

  let ticking = false;
  let again = false;

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  }

  async function tick() {
    if (!token) return;
    // One read at a time: an event during a read asks for one more after it.
    if (ticking) { again = true; return; }
    ticking = true;
    const gen = generation;
    const began = performance.now();
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const s = abort.signal;
      let auditNote = "";
      const audit = get("/audit?limit=40&newest_first=true", s).catch((e) => {
        if (!refused(e)) throw e;
        auditNote = "The timeline needs a token allowed to read the audit log (GET /audit).";
        return null;
      });
      // Which domain details to read: all without the stream, after a
      // commit, a lag or a reconnect, and once a minute; else those an
      // event named and any not read yet.
      const all = !streamUp || allDomainsStale || Date.now() - lastAllDomains > ALL_DOMAINS_MS;
      const named = new Set(staleDomains);
      staleDomains.clear();
      if (all) allDomainsStale = false;
      const domains = get("/domains", s).then(async (names) => {
        const wanted = names.filter((name) => all || named.has(name) || !domainCache.has(name));
        const read = await Promise.all(wanted.map((name) =>
          get(`/domains/${encodeURIComponent(name)}`, s).catch((e) => {
            if (e instanceof HttpError && e.status === 404) return null; // removed meanwhile
            throw e;
          })));
        wanted.forEach((name, i) => {
          if (read[i]) domainCache.set(name, read[i]);
          else domainCache.delete(name);
        });
        const listed = new Set(names);
        for (const name of [...domainCache.keys()]) if (!listed.has(name)) domainCache.delete(name);
        if (all) lastAllDomains = Date.now();
        return names.map((name) => domainCache.get(name));
      }).catch((e) => {
        // Not read this time: ask again next time.
        if (all) allDomainsStale = true;
        for (const name of named) staleDomains.add(name);
        throw e;
      });
      const [status, regions, nodes, runs, autoscale, details, events] = await Promise.all([
        get("/status", s), get("/regions", s), get("/nodes", s),
        get("/runs?limit=10", s), get("/autoscale", s), domains, audit,
      ]);
      if (gen !== generation) return; // the token changed while we were asking
      render({ status, regions, domains: details.filter(Boolean), nodes, runs, autoscale, audit: events, auditNote });
      lastOk = Date.now();
      $("live").classList.remove("stale");
      $("live").textContent = `live · updated ${clock(lastOk)} UTC · commit ${short(status.commit)}${streamUp ? "" : " · polling"}`;
    } catch (e) {
      if (gen !== generation) return;
      if (refused(e)) {
        needToken(`The control plane refused this token (HTTP ${e.status}). Enter a viewer or admin token.`);
        return;
      }
      const why = e.name === "AbortError" ? "no answer within 5 s" : e.message;
      $("live").classList.add("stale");
      $("live").textContent = lastOk
        ? `STALE: ${why}; last update ${clock(lastOk)} UTC`
        : `cannot read the control plane: ${why}`;
    } finally {
      clearTimeout(timeout);
      abort.abort(); // a failed request's siblings stop too
      ticking = false;
      // The next refresh: at once when an event came in meanwhile, else one
      // period from this one's start.
      const period = streamUp ? POLL_MS : FALLBACK_POLL_MS;
      if (gen === generation && token) schedule(again ? 0 : Math.max(100, period - (performance.now() - began)));
      again = false;
    }
  }

  // --- rendering ------------------------------------------------------------

  function render(d) {
    const start = performance.now();
    $("main").hidden = false;
    if (d.audit) lastAudit = d.audit;
    renderAlerts(d);
    renderRegions(d);
    renderDomains(d);
    renderNodes(d.nodes);
    renderRuns(d.runs);
    renderTimeline(d.audit, d.auditNote);
    // User Timing marks for figures (docs/operations.md): when data was first
    // drawn, and how long the latest redraw took.
    if (!performance.getEntriesByName("neutral:first-render").length) performance.mark("neutral:first-render");
    performance.clearMeasures("neutral:render");
    performance.measure("neutral:render", { start });
  }

  function renderAlerts({ status }) {
    const out = [];
    const sync = status.sync || {};
    if (status.split_brain) out.push(h("p", { class: "bad" }, `Split-brain hold: ${status.split_brain}`));
    if (sync.failing) {
      out.push(h("p", { class: "warn" },
        `Configuration invalid at ${short(sync.failing.commit)} (${sync.failing.errors} error(s)); the last good commit ${short(sync.last_good && sync.last_good.commit)} stays in force.`,
        h("pre", {}, (sync.failing.diagnostics || []).join("\n"))));
    }
    if (sync.last_error) out.push(h("p", { class: "warn" }, `Sync failing: ${sync.last_error}`));
    for (const degraded of status.dns_degraded || []) {
      out.push(h("p", { class: "warn" }, `DNS degraded: ${typeof degraded === "string" ? degraded : JSON.stringify(degraded)}`));
    }
    $("alerts").replaceChildren(...out);
  }

  function renderRegions({ regions, domains, autoscale }) {
    const decisions = (autoscale && autoscale.decisions) || {};
    const cards = regions.map((r) => {
      const decision = decisions[r.name];
      const weights = domains.map((d) => {
        const w = (d.regions || []).find((x) => x.region === r.name);
        return w && h("li", {}, `${d.domain}: ${w.effective} of ${w.base}`,
          h("div", { class: "reason" }, w.reason));
      }).filter(Boolean);
      return h("article", { class: "card", "data-region": r.name, "aria-label": `Region ${r.name}` },
        h("h3", {}, `${r.name} `, badge(r.health), r.state === "down" ? [" ", h("span", { class: "sub" }, "declared down")] : null),
        h("p", { class: "reason" }, r.health_reason),
        h("dl", { class: "kv" },
          h("dt", {}, "Ready / desired"), h("dd", {}, `${r.ready} / ${r.desired_nodes ?? "–"}`),
          h("dt", {}, "Draining, down"), h("dd", {}, `${r.draining}, ${r.down}`),
          h("dt", {}, "Failover to"), h("dd", {}, (r.failover || []).join(", ") || "none"),
          h("dt", {}, "Autoscale"), h("dd", {}, decision ? `${decision.action && decision.action.kind}: ${decision.reason}` : "–")),
        weights.length ? h("details", {}, h("summary", {}, "Effective weight per domain"), h("ul", {}, weights)) : null);
    });
    $("regions").replaceChildren(...(cards.length ? cards : [h("p", { class: "note" }, "No regions declared.")]));
  }

  const MAX_ANSWERS = 8; // per domain card; the rest are counted

  function renderDomains({ domains }) {
    const cards = domains.map((d) => {
      const answers = [...(d.answers || [])].sort((a, b) => b.weight - a.weight || (a.address < b.address ? -1 : 1));
      const total = answers.reduce((sum, a) => sum + a.weight, 0);
      const share = (w) => (total ? Math.round((w * 1000) / total) / 10 : 0);
      const regions = (d.regions || []).filter((r) => r.effective > 0);
      const regionTotal = regions.reduce((sum, r) => sum + r.effective, 0);
      const changes = lastAudit.filter((e) => e.kind === "gtm.weights" && e.subject === d.domain).slice(0, 3);
      const shown = answers.slice(0, MAX_ANSWERS);
      return h("article", { class: "card", "data-domain": d.domain, "aria-label": `Domain ${d.domain}` },
        h("h3", {}, `${d.domain} `, badge(d.mode)),
        h("p", { class: "sub" }, `${d.record_type} · ttl ${d.ttl} · ${d.dns} · view ${d.view} · computed ${ago(d.computed_at)} ago`),
        (d.reasons || []).map((reason) => h("p", { class: "reason" }, reason)),
        d.split_brain ? h("p", { class: "reason" }, `Split-brain hold: ${d.split_brain}`) : null,
        regions.length > 1
          ? h("ul", { class: "answers", "aria-label": `Traffic share by region of ${d.domain}` }, regions.map((r) => {
            const pct = Math.round((r.effective * 1000) / regionTotal) / 10;
            return h("li", { "data-share-region": r.region },
              h("div", { class: "answer-head" }, h("span", {}, `region ${r.region}`), h("span", {}, `weight ${r.effective} · ${pct}%`)),
              bar(pct, `${pct}% of ${d.domain}'s traffic to region ${r.region}`));
          }))
          : null,
        answers.length
          ? h("ul", { class: "answers", "aria-label": `Answers of ${d.domain}` }, shown.map((a) => h("li", { "data-answer": a.address },
            h("div", { class: "answer-head" },
              h("span", {}, `${a.address} · ${a.node_id} (${a.region})`),
              h("span", {}, `weight ${a.weight} · ${share(a.weight)}%`)),
            bar(share(a.weight), `${share(a.weight)}% of ${d.domain}'s answers`),
            h("div", { class: "reason" }, a.reason))))
          : h("p", { class: "reason" }, "No answers."),
        answers.length > shown.length
          ? h("p", { class: "reason" }, `…and ${answers.length - shown.length} more answers (neutral status or GET /domains/${d.domain} lists them all).`)
          : null,
        h("details", {}, h("summary", {}, "Regions and recent changes"),
          (d.regions || []).map((r) => h("p", { class: "reason" }, r.reason)),
          changes.map((e) => h("p", { class: "reason" }, `${clock(e.at)} ${e.message}`))));
    });
    $("domains").replaceChildren(...(cards.length ? cards : [h("p", { class: "note" }, "No domains declared.")]));
  }

  function bar(percent, label) {
    const fill = h("span", {});
    fill.style.width = `${Math.max(0, Math.min(100, percent))}%`;
    return h("div", { class: "bar", role: "img", "aria-label": label }, fill);
  }

  function remember(node) {
    let samples = history.get(node.id);
    if (!samples) {
      samples = { cpu: [], rtt: [], err: [] };
      history.set(node.id, samples);
    }
    const m = node.metrics;
    for (const [key, value] of [["cpu", m && m.cpu], ["rtt", m && m.rtt_ms], ["err", m && m.error_rate]]) {
      samples[key].push(typeof value === "number" ? value : null);
      if (samples[key].length > HISTORY) samples[key].shift();
    }
    return samples;
  }

  function spark(values, floor, label) {
    const known = values.filter((v) => v !== null);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", "60");
    svg.setAttribute("height", "16");
    svg.setAttribute("viewBox", "0 0 60 16");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    if (known.length) {
      const max = Math.max(floor, ...known);
      const step = 60 / Math.max(1, HISTORY - 1);
      const offset = HISTORY - values.length;
      const points = values
        .map((v, i) => (v === null ? null : `${((offset + i) * step).toFixed(1)},${(15 - (v / max) * 14).toFixed(1)}`))
        .filter(Boolean);
      if (points.length === 1) points.push(points[0].replace(/^[^,]+/, "60"));
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points.join(" "));
      svg.append(line);
    }
    return svg;
  }

  function renderNodes(nodes) {
    const seen = new Set(nodes.map((n) => n.id));
    for (const id of history.keys()) if (!seen.has(id)) history.delete(id);
    const rows = nodes.map((n) => {
      const s = remember(n);
      const m = n.metrics || {};
      const pct = (v, digits) => (typeof v === "number" ? `${(v * 100).toFixed(digits)}%` : "–");
      const reason = n.status !== "up" && n.health_detail && n.health_detail !== n.status_reason
        ? `${n.status_reason}; health: ${n.health_detail}`
        : n.status_reason;
      // Among replicas: what each vantage point sees (health.quorum counts them).
      const vantage = (n.vantage_points || []).map((v) =>
        h("span", { class: `vantage ${v.ready ? "seen-ready" : "seen-down"}`, "data-replica": v.replica, "data-ready": String(v.ready), title: v.detail },
          `${v.replica}: ${v.ready ? "ready" : "not ready"}`));
      return h("tr", { "data-node": n.id, "data-status": n.status },
        h("th", { scope: "row" }, n.id),
        h("td", {}, n.region),
        h("td", {}, n.address),
        h("td", {}, badge(n.status)),
        h("td", {}, ago(n.status_since)),
        h("td", {}, spark(s.cpu, 1, `CPU of ${n.id}, last ${s.cpu.length} s`), pct(m.cpu, 0)),
        h("td", {}, spark(s.rtt, 1, `round-trip time of ${n.id}, last ${s.rtt.length} s`), typeof m.rtt_ms === "number" ? `${m.rtt_ms.toFixed(1)} ms` : "–"),
        h("td", {}, spark(s.err, 0.01, `error rate of ${n.id}, last ${s.err.length} s`), pct(m.error_rate, 1)),
        h("td", {}, n.last_heartbeat ? `${ago(n.last_heartbeat)} ago` : "never"),
        h("td", { class: "wrap" }, reason,
          vantage.length ? h("div", { class: "vantage-points" }, "Seen by ", vantage) : null));
    });
    const counts = {};
    for (const n of nodes) counts[n.status] = (counts[n.status] || 0) + 1;
    $("nodes-count").textContent = Object.keys(counts).length
      ? `(${Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ")})`
      : "(none registered)";
    $("nodes").tBodies[0].replaceChildren(...rows);
  }

  function renderRuns(body) {
    $("runs-note").textContent = body.scheduler
      ? [(body.pending || []).map((p) => `queued: ${p.key.root} [${p.key.workspace}]`).join("; "),
        (body.drift || []).filter((x) => x.drift).map((x) => `drift in ${x.root} [${x.workspace}] (not applied)`).join("; ")]
        .filter(Boolean).join(" · ")
      : "The scheduler is off (neutral serve without --run-terraform): runs happen in external CI.";
    const plan = (r) => (r.adds === null || r.adds === undefined ? "–" : `+${r.adds} ~${r.changes} -${r.destroys}`);
    const rows = (body.runs || []).map((r) => h("tr", { "data-run": r.id },
      h("th", { scope: "row" }, r.id), h("td", {}, r.root), h("td", {}, r.workspace), h("td", {}, r.trigger),
      h("td", {}, short(r.commit)), h("td", {}, badge(r.status)), h("td", {}, plan(r)),
      h("td", {}, r.exit_code ?? "–"),
      h("td", {}, typeof r.duration_ms === "number" ? `${(r.duration_ms / 1000).toFixed(1)} s` : "–"),
      h("td", {}, h("button", { type: "button", class: "quiet", "data-log": r.id, "aria-label": `Log of run ${r.id}` }, "log"))));
    $("runs").tBodies[0].replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 10 }, "No runs yet."))]));
  }

  async function showLog(id) {
    $("runlog").hidden = false;
    $("runlog-title").textContent = `Log of run ${id}`;
    $("runlog-text").textContent = "loading…";
    try {
      const run = await get(`/runs/${encodeURIComponent(id)}`);
      $("runlog-text").textContent = run.log || "(empty log)";
    } catch (e) {
      $("runlog-text").textContent = refused(e) ? "Run logs need the admin token." : e.message;
    }
    $("runlog-text").focus();
  }

  function renderTimeline(audit, note) {
    $("timeline-note").textContent = note || "";
    if (!audit) return;
    const items = audit.map((e) => {
      const run = /^run:(\d+)$/.exec(e.subject || "");
      return h("li", { "data-kind": e.kind },
        h("time", { datetime: new Date(e.at).toISOString() }, clock(e.at)),
        h("span", { class: "kind" }, e.kind),
        h("span", {}, e.subject),
        run ? [" ", h("button", { type: "button", class: "quiet", "data-log": run[1], "aria-label": `Log of run ${run[1]}` }, "log")] : null,
        h("span", { class: "msg" }, e.message));
    });
    $("timeline").replaceChildren(...(items.length ? items : [h("li", {}, "No events yet.")]));
  }

  // --- wiring ---------------------------------------------------------------

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (value) useToken(value);
  });
  $("forget").addEventListener("click", () => needToken("Token forgotten. Enter a viewer or admin token."));
  for (const id of ["runs", "timeline"]) {
    $(id).addEventListener("click", (event) => {
      const button = event.target.closest("button[data-log]");
      if (button) showLog(button.getAttribute("data-log"));
    });
  }
  $("runlog-close").addEventListener("click", () => { $("runlog").hidden = true; });

  if (token) useToken(token);
  else needToken("This page shows data only to a viewer or admin token. It is kept in this tab only (sessionStorage) and sent as Authorization: Bearer to this control plane.");
})();
