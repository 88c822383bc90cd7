"use strict";
// edgecls label: the page over GET /api/state and POST /api/{assign,discard,reset} (docs/field-loop.md).
let state = null;          // the last GET /api/state
let shown = [];            // items on the page, in order
let focus = 0;             // index into shown
let anchor = null;         // where a range selection starts
const selected = new Set(); // ids
const $ = (id) => document.getElementById(id);

function message(text, error) {
  const m = $("message");
  m.textContent = text || "";
  m.className = error ? "error" : "";
}

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(body)};
  const r = await fetch(path, Object.assign({credentials: "same-origin"}, opts));
  const data = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

async function load() {
  state = await api("/api/state");
  render();
}

function render() {
  const showDone = $("show-done").checked;
  const keepId = shown[focus] && shown[focus].id;
  shown = state.items.filter((it) => showDone || it.status === "pending");
  const c = state.counts;
  $("counts").textContent = `${c.pending} to label · ${c.labelled} labelled · ${c.discarded} discarded`;
  const bar = $("classes");
  bar.replaceChildren();
  state.classes.forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.cls = name;
    if (!state.model_classes.includes(name)) b.className = "new";
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = i < 9 ? String(i + 1) : "";
    b.append(key, `${name} (${state.per_class[name] || 0})`);
    b.addEventListener("click", () => act("assign", name));
    bar.append(b);
  });
  const main = $("groups");
  main.replaceChildren();
  let section = null, grid = null, last = null;
  shown.forEach((it, idx) => {
    if (it.group !== last) {
      last = it.group;
      section = document.createElement("section");
      section.className = "group";
      const h = document.createElement("h2");
      const n = shown.filter((x) => x.group === it.group).length;
      h.textContent = `model said: ${it.group} (${n})`;
      grid = document.createElement("div");
      grid.className = "grid";
      section.append(h, grid);
      main.append(section);
    }
    const d = document.createElement("div");
    d.className = `item ${it.status}`;
    d.dataset.id = it.id;
    d.dataset.idx = idx;
    d.tabIndex = -1;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.src = it.url;
    img.alt = it.path || it.source || it.id;
    const cap = document.createElement("div");
    cap.className = "cap";
    cap.textContent = `${it.label} ${Number(it.confidence).toFixed(2)} · ${(it.reasons || []).join(",")}`;
    cap.title = `${it.source || ""} ${it.path || ""} ${it.time_utc || ""}`;
    const st = document.createElement("div");
    st.className = "cap status";
    st.textContent = it.status === "labelled" ? `→ ${it.class}` : it.status === "discarded" ? "discarded" : "";
    d.append(img, cap, st);
    d.addEventListener("click", (ev) => clickItem(idx, ev.shiftKey));
    grid.append(d);
  });
  if (!shown.length) main.textContent = "Nothing to label.";
  const keep = shown.findIndex((it) => it.id === keepId);
  focus = Math.max(0, Math.min(keep >= 0 ? keep : focus, shown.length - 1));
  for (const id of [...selected]) if (!shown.some((it) => it.id === id)) selected.delete(id);
  paint();
}

function paint() {
  document.querySelectorAll(".item").forEach((el) => {
    const idx = Number(el.dataset.idx);
    el.classList.toggle("focused", idx === focus);
    el.classList.toggle("selected", selected.has(el.dataset.id));
  });
  $("selected").textContent = selected.size ? `${selected.size} selected` : "";
  const f = document.querySelector(`.item[data-idx="${focus}"]`);
  if (f && document.activeElement !== $("new-class")) f.focus({preventScroll: true});
  if (f) f.scrollIntoView({block: "nearest"});
}

function selectRange(a, b) {
  const [lo, hi] = a < b ? [a, b] : [b, a];
  for (let i = lo; i <= hi; i++) selected.add(shown[i].id);
}

function clickItem(idx, shift) {
  if (shift && anchor !== null) {
    selectRange(anchor, idx);
  } else {
    const id = shown[idx].id;
    selected.has(id) ? selected.delete(id) : selected.add(id);
    anchor = idx;
  }
  focus = idx;
  paint();
}

function vertical(dir) {
  // the item in the next/previous row nearest the focused one horizontally
  const els = [...document.querySelectorAll(".item")];
  const cur = els[focus];
  if (!cur) return focus;
  const r0 = cur.getBoundingClientRect();
  let best = focus, bestScore = Infinity;
  for (const el of els) {
    const r = el.getBoundingClientRect();
    const dy = (r.top - r0.top) * dir;
    if (dy <= 1) continue;
    const score = dy * 10000 + Math.abs(r.left - r0.left);
    if (score < bestScore) { bestScore = score; best = Number(el.dataset.idx); }
  }
  return best;
}

function targets() {
  if (selected.size) return [...selected];
  return shown[focus] ? [shown[focus].id] : [];
}

async function act(action, cls) {
  const ids = targets();
  if (!ids.length) { message("select images first (Space, or click)", true); return; }
  try {
    const body = action === "assign" ? {ids, class: cls} : {ids};
    const out = await api(`/api/${action}`, body);
    message(action === "assign" ? `${out.assigned} → ${out.class}${out.new_class ? " (new class)" : ""}`
                                : `${ids.length} ${action === "discard" ? "discarded" : "back to pending"}`);
    selected.clear();
    anchor = null;
    await load();
  } catch (e) {
    message(e.message, true);
  }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target === $("new-class")) {
    if (ev.key === "Escape") { $("new-class").blur(); paint(); }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const n = shown.length;
  let moved = null;
  switch (ev.key) {
    case "ArrowRight": moved = Math.min(n - 1, focus + 1); break;
    case "ArrowLeft": moved = Math.max(0, focus - 1); break;
    case "ArrowDown": moved = vertical(1); break;
    case "ArrowUp": moved = vertical(-1); break;
    case " ": {
      const id = shown[focus] && shown[focus].id;
      if (id) { selected.has(id) ? selected.delete(id) : selected.add(id); anchor = focus; }
      break;
    }
    case "Escape": selected.clear(); anchor = null; break;
    case "a": shown.forEach((it) => { if (shown[focus] && it.group === shown[focus].group) selected.add(it.id); }); break;
    case "n": ev.preventDefault(); $("new-class").focus(); return;
    case "x": case "Delete": act("discard"); break;
    case "u": act("reset"); break;
    default:
      if (/^[1-9]$/.test(ev.key) && state && state.classes[Number(ev.key) - 1] !== undefined) {
        act("assign", state.classes[Number(ev.key) - 1]);
      } else {
        return;
      }
  }
  ev.preventDefault();
  if (moved !== null) {
    if (ev.shiftKey) {
      if (anchor === null) anchor = focus;
      selectRange(anchor, moved);
    }
    focus = moved;
  }
  paint();
});

$("new-class-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("new-class").value;
  act("assign", name).then(() => {
    if (!$("message").classList.contains("error")) { $("new-class").value = ""; $("new-class").blur(); paint(); }
  });
});
$("discard").addEventListener("click", () => act("discard"));
$("reset").addEventListener("click", () => act("reset"));
$("show-done").addEventListener("change", render);
load().catch((e) => message(`cannot load the collection: ${e.message}`, true));
