// edgecls serve: one photo -> POST /predict (the API itself) -> the record, shown as it is.
"use strict";
const $ = (id) => document.getElementById(id);
let info = null;
if (location.search.includes("token=")) history.replaceState(null, "", location.pathname);  // the cookie keeps it

const pct = (p) => (100 * p).toFixed(1) + " %";
const bytes = (n) => n >= 1048576 ? (n / 1048576).toFixed(0) + " MiB" : (n / 1024).toFixed(0) + " KiB";

async function loadInfo() {
  try {
    const r = await fetch("page.json", { cache: "no-store" });
    info = await r.json();
    if (!r.ok) throw new Error(info.error || r.status);
    if (!info.ready) { $("model").textContent = info.error; setTimeout(loadInfo, 1000); return; }
    const id = info.identity ? ` v${info.identity.version} (${info.identity.sha256})` : "";
    $("model").textContent = `model “${info.model}”${id}: ${info.classes.join(" / ")} · threshold ${info.threshold.toFixed(2)}` +
      ` · ${info.backend}`;
    $("limits").textContent = `Up to ${bytes(info.max_bytes)} and ${(info.max_pixels / 1e6).toFixed(0)} megapixels per photo.`;
  } catch (e) { $("model").textContent = "cannot reach the server: " + e.message; setTimeout(loadInfo, 2000); }
}

function showError(msg) { $("error").textContent = msg; $("error").hidden = false; }

async function classify(blob, name) {
  $("error").hidden = true;
  $("preview").src = URL.createObjectURL(blob); $("preview").hidden = false; $("hint").hidden = true;
  if (info && blob.size > info.max_bytes) return showError(`the photo is ${bytes(blob.size)}; this server takes ${bytes(info.max_bytes)} at most`);
  const form = new FormData();
  form.append("file", blob, name || "photo.jpg");
  const t0 = performance.now();
  try {
    const r = await fetch("predict", { method: "POST", body: form });
    const rec = await r.json();
    if (!r.ok) return showError(`${r.status}: ${rec.error || JSON.stringify(rec)}`);
    render(rec, performance.now() - t0);
  } catch (e) { showError("the request failed: " + e.message); }
}

function render(rec, roundTrip) {
  $("empty").hidden = true; $("answer").hidden = false;
  const dec = $("decision");
  dec.textContent = rec.decision; dec.className = `decision d-${rec.decision}`;
  $("label").textContent = rec.label;
  $("answered-by").textContent = rec.model ? `answered by ${rec.model.name} v${rec.model.version} (${rec.model.sha256})` : "";
  const t0 = info && info.threshold != null ? info.threshold : null;
  const thr = t0 == null ? "?" : t0.toFixed(2);
  $("versus").textContent = rec.positive
    ? `p(${rec.positive}) = ${rec.p_positive.toFixed(3)} vs threshold ${thr}` + (t0 == null ? "" :
      `: yes at or above it, no below ${Math.min(t0, 1 - t0).toFixed(2)}, uncertain between`)
    : `confidence ${rec.confidence.toFixed(3)} vs threshold ${thr}`;
  $("confidence").textContent = pct(rec.confidence);
  $("topk").replaceChildren(...rec.topk.map((t) => {
    const row = document.createElement("div"); row.className = "bar";
    const name = document.createElement("span"); name.textContent = t.label;
    const track = document.createElement("div"); track.className = "track";
    const fill = document.createElement("div"); fill.className = "fill"; fill.style.width = (100 * t.p).toFixed(1) + "%";
    track.append(fill);
    const p = document.createElement("span"); p.className = "p"; p.textContent = pct(t.p);
    row.append(name, track, p);
    return row;
  }));
  $("set").textContent = rec.set ? (rec.set.length ? "{" + rec.set.join(", ") + "}" : "{} (empty)") +
    (info && info.coverage ? ` at ${pct(info.coverage)} coverage` : "") : "— (the model carries no conformal calibration)";
  $("unknown").textContent = rec.unknown === undefined ? "— (the model carries no OOD threshold)"
    : (rec.unknown ? "YES" : "no") + ` (OOD score ${rec.ood_score.toFixed(3)})`;
  const t = rec.timings_ms || {};
  $("latency").textContent = `${(t.latency ?? 0).toFixed(1)} ms on the server (decode ${t.decode}, preprocess ${t.preprocess}, ` +
    `queue ${t.queue}, infer ${t.infer}) · ${roundTrip.toFixed(0)} ms round trip`;
  $("json").textContent = JSON.stringify(rec, null, 2);
}

function pick(input) { input.addEventListener("change", () => { if (input.files[0]) classify(input.files[0], input.files[0].name); }); }
pick($("file")); pick($("capture"));
const drop = $("drop");
["dragenter", "dragover"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (ev) => { const f = ev.dataTransfer.files[0]; if (f) classify(f, f.name); });

// The live camera where the browser allows it (a secure context: localhost or https)
if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.isSecureContext) {
  $("camera").hidden = false;
  $("camera").addEventListener("click", async () => {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      $("video").srcObject = stream; $("video").hidden = false; $("snap").hidden = false;
    } catch (e) { showError("no camera: " + e.message); }
  });
  $("snap").addEventListener("click", () => {
    const v = $("video"), c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    c.getContext("2d").drawImage(v, 0, 0);
    c.toBlob((b) => classify(b, "camera.jpg"), "image/jpeg", 0.92);
  });
}
loadInfo();
