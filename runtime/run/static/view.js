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
  $("status").textContent = `${st.viewers} viewer(s) · updated ${new Date().toLocaleTimeString()}`;
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
