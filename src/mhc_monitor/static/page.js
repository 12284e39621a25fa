// mhc-monitor live page: polls the sidecar's read-only JSON endpoints once a second.
//
// Every string that comes from outside (labels, alert messages, receiver names,
// reasons) reaches the DOM as a text node or through textContent, never as HTML,
// and none of it is passed to the chart library (which reads some HTML in text).
"use strict";

(function () {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 5000;
  const STALE_MS = 4000;
  const HISTORY_SHOWN = 25;
  const BAND_LEVELS = ["warning", "critical", "emergency"];
  const LEVEL_TEXT = {
    info: "OK",
    warning: "WARNING",
    critical: "CRITICAL",
    emergency: "EMERGENCY",
  };
  const BAND_FILL = {
    warning: "rgba(236, 178, 0, 0.20)",
    critical: "rgba(236, 110, 0, 0.22)",
    emergency: "rgba(205, 30, 30, 0.22)",
  };
  const BAND_EDGE = { warning: "#b58100", critical: "#c25400", emergency: "#b71c1c" };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    after: 0,
    meta: null,
    series: {},
    charts: {},
    view: null,
    summary: null,
    alerts: null,
    lastOk: 0,
    chartsDirty: false,
  };

  // --- small DOM helpers: text only -------------------------------------------------

  function el(tag, cls, ...children) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  // A distinct shape per level, so a level reads without colour: circle with a tick,
  // triangle with a bar, diamond, octagon with a cross.
  function shape(level) {
    const icon = svg("svg", { viewBox: "0 0 16 16", class: "shape", "aria-hidden": "true" });
    const line = { fill: "none", stroke: "currentColor", "stroke-width": "2" };
    if (level === "warning") {
      icon.append(svg("path", { d: "M8 1.5 15 14.5H1Z", ...line, "stroke-linejoin": "round" }));
      icon.append(svg("path", { d: "M8 6v4M8 11.5v1.2", ...line }));
    } else if (level === "critical") {
      icon.append(svg("path", { d: "M8 1 15 8 8 15 1 8Z", ...line, "stroke-linejoin": "round" }));
      icon.append(svg("path", { d: "M8 5v4M8 10.5v1.2", ...line }));
    } else if (level === "emergency") {
      icon.append(svg("path", { d: "M5 1h6l4 4v6l-4 4H5l-4-4V5Z", fill: "currentColor" }));
      icon.append(
        svg("path", { d: "M5.5 5.5l5 5M10.5 5.5l-5 5", ...line, stroke: "#b71c1c" }),
      );
    } else {
      icon.append(svg("circle", { cx: "8", cy: "8", r: "6.5", ...line }));
      icon.append(svg("path", { d: "M5 8.3 7.1 10.4 11 6", ...line }));
    }
    return icon;
  }

  function badge(level, id) {
    const known = Object.prototype.hasOwnProperty.call(LEVEL_TEXT, level) ? level : "info";
    const node = el("span", "badge level-" + known, shape(known), el("span", "text", LEVEL_TEXT[known]));
    node.dataset.level = known;
    node.setAttribute("aria-label", "level " + LEVEL_TEXT[known]);
    if (id) node.id = id;
    return node;
  }

  // --- formatting ---------------------------------------------------------------------

  function num(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  function withUnit(v, unit) {
    const text = num(v);
    return unit && text !== "–" ? text + " " + unit : text;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    if (s < 86400) {
      return Math.floor(s / 3600) + " h " + String(Math.floor(s / 60) % 60).padStart(2, "0") + " min";
    }
    return Math.floor(s / 86400) + " d " + (Math.floor(s / 3600) % 24) + " h";
  }

  function clock(date) {
    return date.toISOString().slice(11, 19) + " UTC";
  }

  function rate(perSecond) {
    if (!Number.isFinite(perSecond)) return "–";
    return Math.round(perSecond).toLocaleString("en-US") + " samples/s";
  }

  function describeThresholds(m) {
    const parts = [];
    for (const level of BAND_LEVELS) {
      const t = m.thresholds[level];
      if (t === undefined || t === null) continue;
      const unit = m.unit ? " " + m.unit : "";
      if (m.direction === "lower") parts.push(level + " < " + num(t) + unit);
      else if (m.direction === "magnitude") parts.push(level + " |x| > " + num(t) + unit);
      else parts.push(level + " > " + num(t) + unit);
    }
    if (!parts.length) return "no thresholds configured: never alerts";
    const worse = { lower: "lower", higher: "higher", magnitude: "larger in magnitude" };
    return "worse when " + worse[m.direction] + " · " + parts.join(" · ");
  }

  // --- fetching -----------------------------------------------------------------------

  async function getJSON(url) {
    const control = new AbortController();
    const timer = setTimeout(() => control.abort(), TIMEOUT_MS);
    try {
      const r = await fetch(url, {
        cache: "no-store",
        signal: control.signal,
        headers: { accept: "application/json" },
      });
      if (!r.ok) throw new Error(url + " answered HTTP " + r.status);
      return await r.json();
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    const [series, summary, alerts] = await Promise.allSettled([
      getJSON("v1/series?after=" + state.after),
      getJSON("v1/summary"),
      getJSON("v1/alerts"),
    ]);
    if (series.status === "rejected" || summary.status === "rejected") {
      showStatus(series.reason || summary.reason);
    } else {
      // Alerts that cannot be read leave the charts and levels live.
      const view =
        alerts.status === "fulfilled" ? alerts.value : { error: String(alerts.reason.message) };
      try {
        update(series.value, summary.value, view);
      } catch (err) {
        console.error("mhc-monitor page: could not draw the update", err);
      }
    }
    setTimeout(poll, POLL_MS);
  }

  async function loadVersion() {
    try {
      const health = await getJSON("healthz");
      document.getElementById("version").textContent = String(health.version);
    } catch (err) {
      // The version is a nicety; the next polls report a sidecar that is down.
    }
  }

  // --- state --------------------------------------------------------------------------

  function update(view, summary, alerts) {
    if (view.seq < state.after) {
      // The sidecar restarted: its sequence numbers began again.
      state.series = {};
      state.after = 0;
    }
    if (state.meta === null) buildCharts(view.metrics);
    state.meta = view;
    state.view = view;
    state.summary = summary;
    state.alerts = alerts;
    state.lastOk = Date.now();
    if (view.ticks.length) {
      merge(view);
      state.after = view.seq;
      state.chartsDirty = true;
    }
    render();
  }

  function merge(view) {
    const cutoff = (view.now - view.keep_seconds) * 1000;
    for (const name of Object.keys(view.metrics)) {
      const s = state.series[name] || (state.series[name] = { t: [], v: [], st: [], sv: [] });
      for (const tick of view.ticks) {
        const m = tick.metrics[name];
        if (!m) continue;
        s.st.push(tick.t * 1000);
        s.sv.push(m.value);
        for (let i = 0; i < m.t.length; i++) {
          s.t.push(m.t[i] * 1000);
          s.v.push(m.v[i]);
        }
        s.rate = m.rate;
      }
      trim(s.t, s.v, cutoff);
      trim(s.st, s.sv, cutoff);
    }
  }

  function trim(times, values, cutoff) {
    let drop = 0;
    while (drop < times.length && times[drop] < cutoff) drop++;
    if (drop) {
      times.splice(0, drop);
      values.splice(0, drop);
    }
  }

  // --- rendering ----------------------------------------------------------------------

  function render() {
    renderHeader();
    renderLevels();
    // A hidden tab skips the charts (the costly part) and draws them when shown again.
    if (state.chartsDirty && !document.hidden) {
      for (const name of Object.keys(state.charts)) renderChart(name);
      state.chartsDirty = false;
    }
    renderActive();
    renderHistory();
    renderRejected();
    renderReceivers();
    showStatus(null);
  }

  function renderHeader() {
    const { summary, view } = state;
    const overall = worse(summary.level, noDataLevel(null));
    replace(document.getElementById("overall"), badge(overall, "badge-overall"));
    const labels = Object.entries(summary.labels || {}).map(([k, v]) => {
      const item = el("li", null, k + "=" + v);
      item.title = k + "=" + v;
      return item;
    });
    if (!labels.length) labels.push(el("li", null, "no labels"));
    replace(document.getElementById("labels"), ...labels);
    document.getElementById("uptime").textContent = duration(summary.uptime_seconds);
    document.getElementById("rate").textContent = rate(view.samples_per_second);
  }

  function levelOf(name) {
    const m = state.summary.metrics[name];
    return worse(m ? m.level : state.meta.metrics[name].level, noDataLevel(name));
  }

  const LEVEL_ORDER = ["info", "warning", "critical", "emergency"];

  function worse(a, b) {
    return LEVEL_ORDER.indexOf(b) > LEVEL_ORDER.indexOf(a) ? b : a;
  }

  // A metric that stopped receiving samples has an empty or stale window that reads
  // healthy: its firing no-data alert sets the level, so a dead engine does not look OK.
  function noDataLevel(name) {
    let level = "info";
    for (const a of state.alerts.active || []) {
      if (a.kind === "no_data" && a.state === "firing" && (name === null || a.metric === name)) {
        level = worse(level, a.level);
      }
    }
    return level;
  }

  function renderLevels() {
    const items = Object.entries(state.meta.metrics).map(([name, meta]) => {
      const m = state.summary.metrics[name] || {};
      const item = el(
        "li",
        null,
        el("span", "name", meta.title + " · " + (m.statistic || meta.statistic)),
        el("span", "value", withUnit(m.value, meta.unit)),
        badge(levelOf(name), "badge-" + name),
      );
      item.dataset.metric = name;
      return item;
    });
    replace(document.getElementById("levels"), ...items);
  }

  function buildCharts(metrics) {
    const root = document.getElementById("charts");
    for (const [name, meta] of Object.entries(metrics)) {
      const plot = el("div", "plot");
      plot.id = "chart-" + name;
      plot.setAttribute("role", "img");
      plot.setAttribute("aria-label", meta.title + " over the last minutes");
      const head = el("header", null, el("h3", null, meta.title), el("span", "slot"));
      const card = el("article", "chart", head, el("p", "thresholds"), plot);
      card.dataset.metric = name;
      root.append(card);
      state.charts[name] = { card, plot, head };
      if (!window.Plotly) {
        plot.append(el("p", "missing", "The chart library (plotly) is not installed."));
      }
    }
  }

  function renderChart(name) {
    const chart = state.charts[name];
    const meta = state.meta.metrics[name];
    const m = state.summary.metrics[name] || {};
    const s = state.series[name] || { t: [], v: [], st: [], sv: [], rate: 0 };
    replace(
      chart.head,
      el("h3", null, meta.title),
      badge(levelOf(name)),
      el("span", "stat", (m.statistic || meta.statistic) + " " + withUnit(m.value, meta.unit)),
      el("span", "rate", rate(s.rate)),
    );
    chart.card.querySelector(".thresholds").textContent = describeThresholds(meta);
    if (!window.Plotly) return;

    const now = state.view.now * 1000;
    const first = Math.min(s.t.length ? s.t[0] : now, s.st.length ? s.st[0] : now);
    const x0 = Math.max(first, now - state.view.keep_seconds * 1000);
    const y = yRange(meta, s);
    const unit = meta.unit ? " " + meta.unit : "";
    const traces = [
      {
        type: "scatter",
        mode: "markers",
        name: "samples",
        x: s.t,
        y: s.v,
        marker: { size: 4, color: "rgba(52, 93, 150, 0.45)" },
        hovertemplate: "%{y:.4g}" + unit + "<extra>sample</extra>",
      },
      {
        type: "scatter",
        mode: "lines",
        name: meta.statistic,
        x: s.st,
        y: s.sv,
        line: { color: "#111827", width: 2.2 },
        hovertemplate: "%{y:.4g}" + unit + "<extra>" + meta.statistic + "</extra>",
      },
    ];
    const { shapes, annotations } = bandShapes(meta, y);
    const layout = {
      height: 210,
      margin: { l: 50, r: 10, t: 6, b: 28 },
      showlegend: false,
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      font: { family: "system-ui, DejaVu Sans, sans-serif", size: 11, color: "#3e4c59" },
      xaxis: {
        type: "date",
        range: [x0, Math.max(now, x0 + 10000)],
        tickformat: "%H:%M:%S",
        gridcolor: "#edf0f3",
        linecolor: "#c5ccd3",
      },
      yaxis: {
        type: meta.scale === "log" ? "log" : "linear",
        range: y.axis,
        gridcolor: "#edf0f3",
        linecolor: "#c5ccd3",
        zeroline: meta.direction === "magnitude",
        zerolinecolor: "#c5ccd3",
        ticksuffix: unit,
        exponentformat: "SI",
        dtick: meta.scale === "log" ? 1 : undefined,
      },
      shapes,
      annotations,
      hovermode: "closest",
      // The series arrays grow in place: a new revision tells plotly to redraw them.
      datarevision: state.after,
    };
    window.Plotly.react(chart.plot, traces, layout, {
      displayModeBar: false,
      responsive: true,
      scrollZoom: false,
    });
  }

  function finite(values) {
    return values.filter((v) => v !== null && Number.isFinite(v));
  }

  function thresholdValues(meta) {
    return BAND_LEVELS.map((l) => meta.thresholds[l]).filter((t) => t !== undefined && t !== null);
  }

  // The y range: the data, and enough of the bands to see the nearest one.
  function yRange(meta, s) {
    const data = finite(s.v).concat(finite(s.sv));
    const th = thresholdValues(meta);
    if (meta.scale === "log") {
      // TODO: a log axis cannot place a sample of exactly 0 (latency, energy): such dots
      // are not drawn, though the statistic line still counts them.
      const positive = data.filter((v) => v > 0);
      let lo = positive.length ? Math.min(...positive) : th.length ? th[0] / 100 : 0.1;
      let hi = Math.max(lo * 10, ...positive, ...th);
      lo /= 2;
      hi *= 2;
      return { lo, hi, axis: [Math.log10(lo), Math.log10(hi)] };
    }
    if (meta.direction === "magnitude") {
      const reach = th.length ? th[0] * 1.5 : 1;
      const mag = Math.max(reach, ...data.map(Math.abs)) * 1.1;
      return { lo: -mag, hi: mag, axis: [-mag, mag] };
    }
    let lo = Math.min(meta.lower === null ? 0 : meta.lower, ...data);
    let hi;
    if (meta.direction === "lower") {
      hi = Math.max(lo + 1, ...data, ...th);
    } else {
      hi = Math.max(th.length ? th[0] * 1.25 : 0, ...data) || 1;
    }
    const pad = (hi - lo) * 0.05;
    lo -= meta.lower === null || lo < meta.lower ? pad : pad / 2;
    hi += pad;
    return { lo, hi, axis: [lo, hi] };
  }

  // Each level's band, from its threshold to the next level's (or the axis edge):
  // below the thresholds for lower-is-worse metrics, above for the others, and
  // mirrored below zero for a metric judged by magnitude.
  function bandShapes(meta, y) {
    const levels = BAND_LEVELS.filter((l) => meta.thresholds[l] !== undefined && meta.thresholds[l] !== null);
    const bands = [];
    levels.forEach((level, i) => {
      const t = meta.thresholds[level];
      const next = i + 1 < levels.length ? meta.thresholds[levels[i + 1]] : null;
      if (meta.direction === "lower") {
        bands.push({ level, from: next === null ? y.lo : next, to: t, edge: t });
      } else {
        bands.push({ level, from: t, to: next === null ? y.hi : next, edge: t });
        if (meta.direction === "magnitude") {
          bands.push({ level, from: next === null ? y.lo : -next, to: -t, edge: -t });
        }
      }
    });
    const shapes = [];
    const annotations = [];
    const log = meta.scale === "log";
    for (const b of bands) {
      const y0 = Math.max(Math.min(b.from, b.to), y.lo);
      const y1 = Math.min(Math.max(b.from, b.to), y.hi);
      if (!(y1 > y0)) continue;
      shapes.push({
        type: "rect",
        xref: "paper",
        yref: "y",
        x0: 0,
        x1: 1,
        y0,
        y1,
        fillcolor: BAND_FILL[b.level],
        line: { width: 0 },
        layer: "below",
      });
      if (b.edge >= y.lo && b.edge <= y.hi) {
        shapes.push({
          type: "line",
          xref: "paper",
          yref: "y",
          x0: 0,
          x1: 1,
          y0: b.edge,
          y1: b.edge,
          line: { color: BAND_EDGE[b.level], width: 1, dash: "dot" },
          layer: "below",
        });
      }
      const mid = log ? (Math.log10(y0) + Math.log10(y1)) / 2 : (y0 + y1) / 2;
      annotations.push({
        xref: "paper",
        yref: "y",
        x: 1,
        y: mid,
        xanchor: "right",
        text: b.level,
        showarrow: false,
        font: { size: 10, color: BAND_EDGE[b.level] },
      });
    }
    return { shapes, annotations };
  }

  function table(head, rows) {
    const tr = el("tr", null, ...head.map((h) => el("th", null, h)));
    return el("table", null, el("thead", null, tr), el("tbody", null, ...rows));
  }

  function cell(content, cls) {
    return el("td", cls || null, content);
  }

  function renderActive() {
    const root = document.getElementById("active");
    if (state.alerts.error) {
      replace(root, el("p", "empty", "Alerts are unavailable: " + state.alerts.error));
      return;
    }
    const active = state.alerts.active || [];
    if (!active.length) {
      replace(root, el("p", "empty", "No active alerts: every metric is within its thresholds."));
      return;
    }
    const meta = state.meta.metrics;
    const rows = active.map((a) => {
      const m = meta[a.metric] || { unit: "", level_since: null };
      let age = a.age_seconds;
      if ((age === undefined || age === null) && m.level_since !== null) {
        age = state.view.now - m.level_since;
      }
      const row = el(
        "tr",
        null,
        cell(badge(a.level)),
        cell(a.metric),
        cell(a.message, "message"),
        // A no-data alert's value and threshold are seconds without samples.
        cell(withUnit(a.value, a.kind === "no_data" ? "s" : m.unit), "num"),
        cell(withUnit(a.threshold, a.kind === "no_data" ? "s" : m.unit), "num"),
        cell(a.state || "firing"),
        cell(duration(age), "num"),
      );
      row.dataset.metric = String(a.metric);
      row.dataset.level = String(a.level);
      return row;
    });
    replace(root, table(["level", "metric", "message", "value", "threshold", "state", "age"], rows));
  }

  function renderHistory() {
    const root = document.getElementById("history");
    const alerts = state.alerts;
    if (alerts.error) {
      replace(root, el("p", "empty", "History is unavailable: " + alerts.error));
      return;
    }
    const history = alerts.history || [];
    if (!history.length) {
      const text = alerts.receivers
        ? "No alert transitions yet."
        : "Alert delivery is not configured on this sidecar: no history or notifications.";
      replace(root, el("p", "empty", text));
      return;
    }
    const rows = history.slice(0, HISTORY_SHOWN).map((h) => {
      const notes = (h.notifications || []).map((n) => {
        const outcome = n.status === "delivered" ? "ok" : n.status === "pending" ? null : "bad";
        const attempts = n.attempts === 1 ? "1 attempt" : n.attempts + " attempts";
        const reason = n.reason ? " (" + n.reason + ")" : "";
        const text = n.receiver + " " + n.action + ": " + n.status + ", " + attempts + reason;
        return el("li", outcome, text);
      });
      const when = h.at ? clock(new Date(h.at)) : "–";
      const change = (h.previous || "?") + " → " + (h.state || "?");
      return el(
        "tr",
        null,
        cell(when, "num"),
        cell(badge(h.level)),
        cell(h.metric),
        cell(change + (h.event ? " (" + h.event + ")" : "")),
        cell(
          el("div", null, el("span", null, h.message || ""), notes.length ? el("ul", "notes", ...notes) : null),
          "message",
        ),
      );
    });
    replace(root, table(["at", "level", "metric", "transition", "message and notifications"], rows));
  }

  function renderRejected() {
    const root = document.getElementById("rejected");
    const rows = [];
    for (const [name, m] of Object.entries(state.summary.metrics)) {
      for (const [reason, count] of Object.entries(m.rejected || {})) {
        if (count > 0) {
          rows.push(el("tr", null, cell(name), cell(reason), cell(count.toLocaleString("en-US"), "num")));
        }
      }
    }
    if (!rows.length) {
      replace(root, el("p", "empty", "No samples rejected."));
      return;
    }
    replace(root, table(["metric", "reason", "samples"], rows));
  }

  function renderReceivers() {
    const root = document.getElementById("receivers");
    const receivers = state.alerts.receivers;
    if (state.alerts.error) {
      replace(root, el("p", "empty", "Receivers are unavailable: " + state.alerts.error));
      return;
    }
    if (!receivers) {
      replace(root, el("p", "empty", "Alert delivery is not configured on this sidecar."));
      return;
    }
    const entries = Object.entries(receivers);
    if (!entries.length) {
      replace(root, el("p", "empty", "No receivers configured."));
      return;
    }
    const rows = entries.map(([name, r]) => {
      const outcomes = Object.entries(r.outcomes || {})
        .map(([k, v]) => k + " " + v)
        .join(", ");
      const row = el(
        "tr",
        null,
        cell(name),
        cell(r.kind),
        cell(String(r.queued), "num"),
        cell(r.queued ? duration(r.oldest_undelivered_seconds) : "–", "num"),
        cell(outcomes || "none yet"),
      );
      row.dataset.receiver = name;
      return row;
    });
    replace(root, table(["receiver", "kind", "queued", "oldest undelivered", "outcomes"], rows));
  }

  function showStatus(err) {
    const status = document.getElementById("status");
    const since = state.lastOk ? Date.now() - state.lastOk : Infinity;
    if (err === null && since < STALE_MS) {
      status.classList.remove("stale");
      status.textContent = "● live, updated " + clock(new Date(state.lastOk));
      return;
    }
    status.classList.add("stale");
    status.textContent = state.lastOk
      ? "○ stale: no answer for " + duration(since / 1000) + ", retrying"
      : "○ cannot reach the sidecar, retrying";
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.view !== null && state.chartsDirty) render();
  });
  loadVersion();
  poll();
})();
