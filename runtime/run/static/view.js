// edgecls run --view: polls /state.json; the stream is an <img> on /stream.mjpg (MJPEG, no library).
"use strict";
const $ = (id) => document.getElementById(id);
const STAGES = { decode: "decode", preprocess: "preprocess", infer_batch: "infer (per batch)",
                 infer_per_image: "infer (per image)", latency_live: "capture → result (live)" };
if (location.search.includes("token=")) history.replaceState(null, "", location.pathname);  // the cookie keeps it

function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function duration(s) { const m = Math.floor(s / 60); return m ? `${m} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`; }

function render(st) {
  $("fps").textContent = st.frames_per_s.toFixed(1);
  $("frames").textContent = st.frames;
  $("errors").textContent = st.errors;
  $("elapsed").textContent = duration(st.elapsed_s);
  $("threshold").textContent = (st.positive ? `p(${st.positive}) ≥ ` : "confidence ≥ ") + st.threshold.toFixed(2);
  $("backend").textContent = st.backend;
  if (st.model) $("model").textContent = `${st.model.name} v${st.model.version} · ${st.model.sha256}`;
  $("sources").textContent = "sources: " + st.sources.map((s) => s.split("/").pop()).join(", ");
  const drift = $("drift");  // one banner per source whose frames no longer look like the calibration images
  const firing = Object.entries(st.drift || {});
  drift.hidden = firing.length === 0;
  drift.replaceChildren(...firing.map(([src, kinds]) => {
    const d = document.createElement("div");
    d.className = "banner"; d.dataset.source = src;
    d.textContent = `drift on ${src.split("/").pop()}: ${kinds.join(", ")} — the stated confidence may not hold`;
    return d;
  }));
  const counts = $("counts");
  counts.replaceChildren(...Object.entries(st.decisions).map(([name, n]) => {
    const d = document.createElement("div");
    d.className = `count d-${name}`; d.dataset.decision = name;
    d.innerHTML = "<span></span><b></b>";
    d.firstChild.textContent = name; d.lastChild.textContent = n;
    return d;
  }));
  const stages = $("stages").tBodies[0];
  stages.replaceChildren(...Object.entries(st.latency_ms).map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.append(cell(STAGES[k] || k), cell(v.p50.toFixed(2)), cell(v.p95.toFixed(2)));
    return tr;
  }));
  const recent = $("recent").tBodies[0];
  recent.replaceChildren(...st.recent.map((r) => {
    const tr = document.createElement("tr");
    const dec = document.createElement("td");
    const tag = document.createElement("span"); tag.className = `tag d-${r.decision}`; tag.textContent = r.decision;
    dec.append(tag);
    tr.append(cell((r.path || r.source).split("/").pop()), cell(r.frame ?? ""), dec, cell(r.label),
              cell(r.confidence.toFixed(3), "n"));
    return tr;
  }));
  renderCameras(st.per_source || []);
  $("status").textContent = `${st.viewers} viewer(s) · updated ${new Date().toLocaleTimeString()}`;
}

// Two or more sources: a grid, each camera's newest frame (/frame.jpg?source=ID, refreshed with each poll) and
// its own numbers. Cards are kept by source id, so images do not flicker.
const cards = new Map();
function num(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
function camCard(id) {
  const c = document.createElement("div");
  c.className = "cam"; c.dataset.source = id;
  c.innerHTML = '<div class="name"></div><img alt=""><div class="nums"></div><div class="last"></div>';
  c.querySelector(".name").textContent = id; c.querySelector(".name").title = id;
  c.querySelector("img").alt = "newest frame of " + id;
  $("grid").append(c); cards.set(id, c);
  return c;
}
function renderCameras(list) {
  $("cameras").hidden = list.length < 2;
  if (list.length < 2) return;
  $("ncameras").textContent = `${list.filter((s) => !s.removed).length} running`;
  for (const s of list) {
    const c = cards.get(s.source) || camCard(s.source);
    c.classList.toggle("removed", !!s.removed);
    const cells = [["frames/s", num(s.frames_per_s, 1)], ["frames", s.frames], ["dropped", s.dropped ?? "–"],
                   ["p50 ms", num(s.latency_p50_ms, 1)], ["p99 ms", num(s.latency_p99_ms, 1)],
                   ["reconnects", s.reconnects ?? "–"]];
    c.querySelector(".nums").replaceChildren(...cells.map(([k, v]) => {
      const d = document.createElement("div"); d.innerHTML = "<span></span><br><b></b>";
      d.firstChild.textContent = k; d.lastChild.textContent = v; return d;
    }));
    const last = c.querySelector(".last");
    last.replaceChildren();
    if (s.last) {
      const tag = document.createElement("span"); tag.className = `tag d-${s.last.decision}`;
      tag.textContent = `${s.last.decision} · ${s.last.label} ${s.last.confidence.toFixed(2)}`;
      last.append(tag); c.className = `cam d-${s.last.decision}` + (s.removed ? " removed" : "");
      if (!s.removed) c.querySelector("img").src = "frame.jpg?source=" + encodeURIComponent(s.source) + "&t=" + s.frames;
    }
  }
}

async function poll() {
  try {
    const r = await fetch("state.json", { cache: "no-store" });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    render(await r.json());
  } catch (e) {
    $("status").textContent = "the run has ended or cannot be reached (" + e.message + ")";
  }
  setTimeout(poll, 500);
}
$("stream").addEventListener("error", () => setTimeout(() => { $("stream").src = "stream.mjpg?" + Date.now(); }, 1000));
poll();
