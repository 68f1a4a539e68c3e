// The sparsity dashboard: polls /v1/stats (only the samples it has not seen) and draws
// with uPlot. Exact figures are written as text, with the raw number in data-value, so a
// reader (or a test) can compare them with /v1/model and /v1/variants.
"use strict";

const KEY_STORE = "ctr-dashboard-api-key";
const MAX_POINTS = 5000;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                "#ca8a04", "#db2777"];

const $ = (id) => document.getElementById(id);
const state = { boot: null, seq: 0, latest: null, selected: 0, charts: {}, names: [],
                hist: null, timer: null,
                // the join's polls (/v1/join): recent samples for the rates; off once the
                // service said it has no join (501), until it restarts
                join: { samples: [], off: false } };
// rates of the join's counters are taken over this many seconds of polls: /v1/join has
// counters only, and a rate from the last two polls alone drops to 0 between bursts
const JOIN_RATE_SECONDS = 30;

function emptyHistory(names) {
  const models = {};
  for (const n of names) models[n] = { nnz: [], l1_norm: [], logloss: [], auc: [] };
  return { t: [], events: [], p50: [], p99: [], models };
}

// -- formatting ------------------------------------------------------------------------------

const fmtInt = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));
const fmtNum = (v, digits = 6) => (v === null || v === undefined ? "–" : Number(v).toPrecision(digits));
const fmtRate = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));
const fmtMs = (v) => (v === null || v === undefined ? "–" : `${Number(v).toPrecision(3)} ms`);

function setFigure(el, text, raw) {
  el.textContent = text;
  if (raw === null || raw === undefined) el.removeAttribute("data-value");
  else el.setAttribute("data-value", String(raw));
}

// -- the key and the status line ---------------------------------------------------------------

function authHeaders() {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function showAlert(text) {
  const el = $("auth-message");
  if (text) { el.textContent = text; el.hidden = false; } else { el.hidden = true; el.textContent = ""; }
}

function setStatus(text) { $("status").textContent = text; }

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
  $("api-key").value = "";
  poll();
});
$("forget-key").addEventListener("click", () => { localStorage.removeItem(KEY_STORE); poll(); });
$("model-select").addEventListener("change", (ev) => {
  state.selected = Number(ev.target.value);
  renderDetails();
});

// -- polling -----------------------------------------------------------------------------------

async function poll() {
  clearTimeout(state.timer);
  let interval = 2;
  try {
    const since = state.boot === null ? 0 : state.seq;
    const r = await fetch(`v1/stats?since=${since}`, { headers: authHeaders(), cache: "no-store" });
    if (r.status === 401 || r.status === 403) {
      const hasKey = Boolean(localStorage.getItem(KEY_STORE));
      showAlert(r.status === 401
        ? "Refused (401): this service needs an API key to show its figures. Enter a key above."
        : `Refused (403): the API key ${hasKey ? "you entered " : ""}was not accepted. Enter another key above.`);
      setStatus("no data: the stats feed refused the request");
    } else if (r.status === 503) {
      showAlert(null);
      setStatus("the service is starting (loading the model, compiling the kernels)…");
    } else if (!r.ok) {
      showAlert(`The stats feed answered ${r.status}.`);
    } else {
      showAlert(null);
      const data = await r.json();
      interval = data.interval || 2;
      ingest(data);
      render();
      await pollJoin();
    }
  } catch (err) {
    setStatus(`the service did not answer (${err.message}); retrying`);
  }
  state.timer = setTimeout(poll, Math.min(Math.max(interval, 1), 10) * 1000);
}

function ingest(data) {
  const names = data.models.map((m) => m.name);
  if (data.boot !== state.boot || names.join("\n") !== state.names.join("\n")) {
    state.boot = data.boot; state.seq = 0; state.names = names;
    state.join = { samples: [], off: false };  // a restart: the join's counters restart too
    state.hist = emptyHistory(names);
    destroyCharts();
  }
  const h = data.history, H = state.hist;
  for (let i = 0; i < h.seq.length; i++) {
    if (h.seq[i] <= state.seq) continue;
    H.t.push(h.t[i]); H.events.push(h.events_per_s[i]);
    H.p50.push(h.predict_p50_ms[i]); H.p99.push(h.predict_p99_ms[i]);
    for (const n of names) {
      const src = h.models[n] || {};
      for (const k of ["nnz", "l1_norm", "logloss", "auc"]) H.models[n][k].push(src[k] ? src[k][i] : null);
    }
    state.seq = h.seq[i];
  }
  if (H.t.length > MAX_POINTS) {
    const cut = H.t.length - MAX_POINTS;
    for (const arr of [H.t, H.events, H.p50, H.p99]) arr.splice(0, cut);
    for (const n of names) for (const k in H.models[n]) H.models[n][k].splice(0, cut);
  }
  if (data.models.length) state.latest = data;
}

// -- the join panel ----------------------------------------------------------------------------

async function pollJoin() {
  const panel = $("join-panel");
  if (state.join.off) return;
  let r;
  try {
    r = await fetch("v1/join", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    return;  // the stats feed's next poll reports a service that does not answer
  }
  if (r.status === 501 || r.status === 404) {
    // no join here (a Redis state store, --workers above 1): nothing to show, ever
    state.join.off = true;
    panel.hidden = true;
    return;
  }
  if (!r.ok) { panel.hidden = true; return; }
  const status = await r.json();
  const samples = state.join.samples;
  const now = performance.now() / 1000;
  const last = samples[samples.length - 1];
  // counters that went down: another process answers (a restart the stats boot missed)
  if (last && (status.joined < last.joined || status.expired < last.expired)) samples.length = 0;
  samples.push({ t: now, joined: status.joined, expired: status.expired });
  while (samples.length > 2 && now - samples[1].t >= JOIN_RATE_SECONDS) samples.shift();
  renderJoin(status);
  panel.hidden = false;
}

function joinRate(key) {
  const s = state.join.samples;
  if (s.length < 2) return null;
  const first = s[0], last = s[s.length - 1];
  return (last[key] - first[key]) / (last.t - first.t);
}

function delayLabel(le) {
  if (le === "+Inf") return "longer";
  const v = Number(le);
  return v >= 3600 ? `≤ ${v / 3600} h` : v >= 60 ? `≤ ${v / 60} min` : `≤ ${v} s`;
}

function renderJoin(status) {
  $("join-policy").textContent = `--join-policy ${status.policy}, window ${status.window_seconds} s` +
    (status.negative_rate < 1 ? `, negatives kept at rate ${status.negative_rate}` : "");
  setFigure($("join-pending"), fmtInt(status.pending), status.pending);
  const joins = joinRate("joined"), expiries = joinRate("expired");
  setFigure($("join-joins-per-s"), fmtNum(joins, 3), joins);
  setFigure($("join-expiries-per-s"), fmtNum(expiries, 3), expiries);
  setFigure($("join-late"), fmtInt(status.late), status.late);
  setFigure($("join-joined"), fmtInt(status.joined), status.joined);
  setFigure($("join-expired"), fmtInt(status.expired), status.expired);
  setFigure($("join-unknown"), fmtInt(status.unknown), status.unknown);
  setFigure($("join-negatives-dropped"), fmtInt(status.negatives_dropped), status.negatives_dropped);
  const h = status.click_delay_seconds;
  const total = h.counts.reduce((a, b) => a + b, 0) || 1;
  $("join-delays-body").replaceChildren(...h.le.map((le, i) => {
    const tr = document.createElement("tr");
    tr.dataset.testid = `join-delay-${i}`;
    const name = document.createElement("td");
    name.textContent = delayLabel(le);
    const count = document.createElement("td");
    count.className = "n";
    setFigure(count, fmtInt(h.counts[i]), h.counts[i]);
    count.dataset.testid = `join-delay-${i}-count`;
    const bar = document.createElement("td");
    bar.className = "bar";
    const span = document.createElement("span");
    span.style.width = `${(100 * h.counts[i]) / total}%`;
    bar.append(span);
    tr.append(name, count, bar);
    return tr;
  }));
}

// -- rendering ---------------------------------------------------------------------------------

function render() {
  const d = state.latest;
  if (!d) { setStatus("waiting for the first sample…"); return; }
  const when = d.sampled_at ? new Date(d.sampled_at * 1000).toLocaleTimeString() : "–";
  setStatus(`live · ${d.models.length - 1} variant(s) · sampled every ${d.interval} s · last sample ${when}`);
  setFigure($("model-version"), fmtInt(d.model_version), d.model_version);
  const H = state.hist, last = H.t.length - 1;
  setFigure($("events-per-s"), fmtRate(H.events[last]), H.events[last]);
  const preds = d.history.predictions_per_s;
  const lastPred = preds.length ? preds[preds.length - 1] : null;
  setFigure($("predictions-per-s"), fmtRate(lastPred), lastPred);
  setFigure($("predict-p50"), fmtMs(H.p50[last]), H.p50[last]);
  setFigure($("predict-p99"), fmtMs(H.p99[last]), H.p99[last]);
  renderSummary(d.models);
  renderScatter(d.models);
  renderTimeCharts();
  renderSelect(d.models);
  renderDetails();
}

const SUMMARY_COLUMNS = [
  ["rows", fmtInt], ["nnz", fmtInt], ["coordinates", fmtInt], ["l1_norm", fmtNum],
  ["logloss", fmtNum], ["auc", fmtNum], ["calibration", (v) => fmtNum(v, 4)],
];

function renderSummary(models) {
  const body = $("summary-body");
  if (body.rows.length !== models.length) {
    body.replaceChildren(...models.map((m, i) => {
      const tr = document.createElement("tr");
      tr.dataset.testid = `m-${i}`;
      tr.innerHTML = `<td data-testid="m-${i}-name"></td><td class="learner" data-testid="m-${i}-optimizer"></td>` +
        SUMMARY_COLUMNS.map(([k]) => `<td class="n" data-testid="m-${i}-${k}"></td>`).join("");
      return tr;
    }));
  }
  models.forEach((m, i) => {
    const row = body.rows[i];
    const name = row.cells[0];
    name.innerHTML = `<span class="swatch" style="background:${COLORS[i % COLORS.length]}"></span>`;
    name.append(m.primary ? `${m.name} (answers predictions)` : m.name);
    name.dataset.value = m.name;
    const params = Object.entries(m.params).map(([k, v]) => `${k}=${v}`).join(" ");
    row.cells[1].textContent = `${m.optimizer} ${params}`;
    SUMMARY_COLUMNS.forEach(([k, f], j) => setFigure(row.cells[2 + j], f(m[k]), m[k]));
  });
}

function renderScatter(models) {
  const pts = models.filter((m) => m.logloss !== null);
  const el = $("scatter");
  if (!pts.length) { el.textContent = ""; return; }
  const W = 640, Hh = 220, L = 70, R = 16, T = 12, B = 36;
  const xs = pts.map((m) => m.nnz), ys = pts.map((m) => m.logloss);
  const pad = (lo, hi) => (hi > lo ? [lo - (hi - lo) * 0.08, hi + (hi - lo) * 0.08] : [lo * 0.95 - 1e-9, hi * 1.05 + 1e-9]);
  const [xlo, x1] = pad(Math.min(...xs), Math.max(...xs));
  const x0 = Math.max(0, xlo);  // counts: the axis never goes below 0
  const [y0, y1] = pad(Math.min(...ys), Math.max(...ys));
  const X = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (Hh - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${Hh}" role="img"><title>non-zeros against logloss</title>`;
  svg += `<line class="axis" x1="${L}" y1="${Hh - B}" x2="${W - R}" y2="${Hh - B}"/>`;
  svg += `<line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${Hh - B}"/>`;
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4, yv = y0 + ((y1 - y0) * i) / 4;
    const xa = i === 0 ? "start" : i === 4 ? "end" : "middle";
    svg += `<text class="tick" x="${X(xv)}" y="${Hh - B + 14}" text-anchor="${xa}">${fmtInt(xv)}</text>`;
    svg += `<text class="tick" x="${L - 6}" y="${Y(yv) + 4}" text-anchor="end">${yv.toPrecision(4)}</text>`;
  }
  svg += `<text class="tick" x="${(W + L) / 2}" y="${Hh - 4}" text-anchor="middle">non-zero weights</text>`;
  svg += `<text class="tick" x="12" y="${(Hh - B) / 2}" transform="rotate(-90 12 ${(Hh - B) / 2})" text-anchor="middle">logloss</text>`;
  models.forEach((m, i) => {
    if (m.logloss === null) return;
    const c = COLORS[i % COLORS.length], x = X(m.nnz), y = Y(m.logloss);
    const anchor = x > W * 0.7 ? "end" : "start", dx = anchor === "end" ? -8 : 8;
    svg += `<circle cx="${x}" cy="${y}" r="5" fill="${c}"/>`;
    svg += `<text x="${x + dx}" y="${y - 6}" text-anchor="${anchor}"></text>`;
  });
  el.innerHTML = svg + "</svg>";
  // names go in as text, never as markup
  const labels = el.querySelectorAll("svg > text:not(.tick)");
  pts.forEach((m, i) => { labels[i].textContent = m.name; });
}

function renderSelect(models) {
  const sel = $("model-select");
  if (sel.options.length !== models.length) {
    sel.replaceChildren(...models.map((m, i) => new Option(m.name, String(i))));
    sel.value = String(Math.min(state.selected, models.length - 1));
  }
}

function renderDetails() {
  const d = state.latest;
  if (!d) return;
  const m = d.models[Math.min(state.selected, d.models.length - 1)];
  renderFields(m);
  renderBounded(m.bounded_fields);
  const centres = d.abs_w_edges.slice(0, -1).map((e, i) => (Math.log10(e) + Math.log10(d.abs_w_edges[i + 1])) / 2);
  chart("hist", () => barOptions(), [centres, m.abs_w_counts]);
  const b = m.calibration_buckets;
  chart("calibration", () => calibrationOptions(), [b.map((x) => x.mean_p), b.map((x) => x.ctr), b.map((x) => x.mean_p)]);
}

const OVERFLOW = "(overflow)";

function renderFieldIds(ids, m) {
  const note = $("fields-note");
  if (!ids) { note.textContent = ""; return; }
  let text = `${fmtInt(ids.in_use)} of ${fmtInt(ids.capacity)} field ids in use`;
  const over = m.fields[OVERFLOW];
  if (ids.overflow_features || over) {
    text += ` · the ids are used up: later fields share the ${OVERFLOW} field ` +
      `(${fmtInt(ids.overflow_features)} feature occurrences learned there since the start, ` +
      `${fmtInt(over ? over.coordinates : 0)} coordinates)`;
    note.className = "note warn";
  } else {
    note.className = "note";
  }
  note.textContent = text;
}

function renderFields(m) {
  renderFieldIds(state.latest.field_ids, m);
  const entries = Object.entries(m.fields);
  const total = entries.reduce((s, [, f]) => s + f.l1, 0) || 1;
  const body = $("fields-body");
  body.replaceChildren(...entries.map(([name, f]) => {
    const tr = document.createElement("tr");
    if (f.nnz === 0) tr.className = "dropped";
    if (name === OVERFLOW) tr.className += " overflow";
    const kept = f.coordinates ? (100 * f.nnz) / f.coordinates : 0;
    const cells = [name, fmtInt(f.coordinates), fmtInt(f.nnz), `${kept.toFixed(1)} %`, fmtNum(f.l1, 4)];
    cells.forEach((text, j) => {
      const td = document.createElement("td");
      if (j) td.className = "n";
      td.textContent = text;
      tr.append(td);
    });
    const bar = document.createElement("td");
    bar.className = "bar";
    const span = document.createElement("span");
    span.style.width = `${(100 * f.l1) / total}%`;
    bar.append(span);
    tr.append(bar);
    tr.dataset.field = name;
    return tr;
  }));
}

const BOUNDED_COLUMNS = ["admitted", "refused", "evicted", "live"];

// Only a learner with memory bounds has these counters: the card stays hidden otherwise.
function renderBounded(perField) {
  const card = $("bounded-card");
  card.hidden = !perField;
  if (!perField) { $("bounded-body").replaceChildren(); return; }
  $("bounded-body").replaceChildren(...Object.entries(perField).map(([name, f]) => {
    const tr = document.createElement("tr");
    tr.dataset.field = name;
    const first = document.createElement("td");
    first.textContent = name;  // names go in as text, never as markup
    tr.append(first);
    for (const k of BOUNDED_COLUMNS) {
      const td = document.createElement("td");
      td.className = "n";
      td.dataset.col = k;
      setFigure(td, fmtInt(f[k]), f[k]);
      tr.append(td);
    }
    return tr;
  }));
}

// -- charts ------------------------------------------------------------------------------------

function size(el) { return { width: Math.max(el.clientWidth, 200), height: 220 }; }

function chart(id, makeOptions, data) {
  const el = $(`chart-${id}`);
  let c = state.charts[id];
  if (!c) {
    c = state.charts[id] = new uPlot({ ...size(el), ...makeOptions() }, data, el);
    new ResizeObserver(() => c.setSize(size(el))).observe(el);
  } else {
    c.setData(data);
  }
}

function destroyCharts() {
  for (const id in state.charts) state.charts[id].destroy();
  state.charts = {};
}

function seriesOf(names, extra = {}) {
  return [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, ...extra }))];
}

function timeOptions(names, axisFmt) {
  return {
    series: seriesOf(names),
    scales: { x: { time: true } },
    axes: [{}, { size: 64, values: (u, vals) => vals.map(axisFmt) }],
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
  };
}

const compact = (v) => (v === null ? "" : Math.abs(v) >= 1e6 ? `${(v / 1e6).toPrecision(3)}M`
  : Math.abs(v) >= 1e3 ? `${(v / 1e3).toPrecision(3)}k` : Number(v.toPrecision(4)).toString());

function renderTimeCharts() {
  const H = state.hist, names = state.names;
  const per = (k) => [H.t, ...names.map((n) => H.models[n][k])];
  chart("nnz", () => timeOptions(names, compact), per("nnz"));
  chart("l1", () => timeOptions(names, compact), per("l1_norm"));
  chart("logloss", () => timeOptions(names, (v) => v.toPrecision(4)), per("logloss"));
  chart("auc", () => timeOptions(names, (v) => v.toPrecision(4)), per("auc"));
  chart("events", () => ({ ...timeOptions(["events/s"], compact), series: seriesOf(["events/s"]) }), [H.t, H.events]);
  chart("latency", () => ({
    ...timeOptions(["p50", "p99"], (v) => v.toPrecision(3)),
    series: [{}, { label: "p50", stroke: COLORS[0], width: 2, spanGaps: false },
             { label: "p99", stroke: COLORS[1], width: 2, spanGaps: false }],
  }), [H.t, H.p50, H.p99]);
}

function barOptions() {
  return {
    series: [{ label: "|w|", value: (u, v) => (v === null ? "" : `1e${v.toFixed(2)}`) },
             { label: "weights", fill: "rgba(37,99,235,0.35)", stroke: COLORS[0],
               paths: uPlot.paths.bars({ size: [0.9, 60] }), points: { show: false } }],
    scales: { x: { time: false } },
    axes: [{ values: (u, vals) => vals.map((v) => `1e${Math.round(v)}`), space: 40 },
           { size: 56, values: (u, vals) => vals.map(compact) }],
    legend: { live: true },
  };
}

function calibrationOptions() {
  return {
    series: [{ label: "predicted", value: (u, v) => (v === null ? "" : v.toPrecision(3)) },
             { label: "observed CTR", stroke: COLORS[1], width: 2, points: { show: true, size: 7 } },
             { label: "ideal", stroke: "#98a2b3", width: 1, dash: [4, 4], points: { show: false } }],
    scales: { x: { time: false } },
    axes: [{ values: (u, vals) => vals.map((v) => v.toPrecision(2)) },
           { size: 56, values: (u, vals) => vals.map((v) => v.toPrecision(2)) }],
    legend: { live: true },
  };
}

poll();
