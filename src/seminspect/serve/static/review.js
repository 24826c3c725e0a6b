// Keyboard review of one site: 1-3 take a suggestion, N normal, T type picker, Enter confirms (saved at once),
// arrows previous/next, U undoes your last decision, H toggles the anomaly map. Images: click to zoom 1x/2x/4x, scroll to pan.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("task-data").textContent);
  const q = D.query ? "?" + D.query : "";
  const msg = document.getElementById("message");
  const picker = document.getElementById("picker");
  const search = document.getElementById("picker-search");
  const list = document.getElementById("picker-list");
  let pending = null;
  let pickIndex = 0;
  let busy = false;

  function say(text) { msg.textContent = text; }
  function go(id) { if (id) { window.location.href = "/review/task/" + id + q; } }

  function choose(label) {
    pending = label;
    document.getElementById("pending").textContent = label;
    document.querySelectorAll("#suggestions li").forEach(function (li) {
      li.classList.toggle("chosen", li.dataset.label === label);
    });
    say("press Enter to confirm " + label);
  }

  async function post(url, body) {
    const resp = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                   body: JSON.stringify(body || {}), credentials: "same-origin"});
    let data = {};
    try { data = await resp.json(); } catch (e) { data = {}; }
    return {ok: resp.ok, status: resp.status, data: data};
  }

  async function confirmChoice() {
    if (!pending) { say("choose first: 1-3, N or T"); return; }
    if (busy) { return; }
    busy = true;
    const r = await post("/review/api/task/" + D.task + "/decision" + q, {label: pending});
    busy = false;
    if (!r.ok) { say("not saved: " + ((r.data.error || {}).problem || r.status)); return; }
    say("saved: " + pending);
    document.body.dataset.saved = pending;
    if (r.data.next_open) { go(r.data.next_open); } else { window.location.href = "/review" + q; }
  }

  async function undo() {
    const r = await post("/review/api/undo");
    if (!r.ok) { say((r.data.error || {}).problem || "nothing to undo"); return; }
    say("undone");
    go(r.data.task_id);
  }

  function toggleHeatmap() {
    const box = document.getElementById("heatmap");
    const img = box.querySelector("img");
    if (!img.src) { img.src = img.dataset.src; }
    box.hidden = !box.hidden;
  }

  function renderPicker() {
    const needle = search.value.trim().toLowerCase();
    const hits = D.types.map(function (t, i) { return [t, D.paths[i]]; })
      .filter(function (tp) { return tp[1].toLowerCase().indexOf(needle) >= 0; });
    pickIndex = Math.min(pickIndex, Math.max(hits.length - 1, 0));
    list.innerHTML = "";
    hits.forEach(function (tp, i) {
      const li = document.createElement("li");
      li.textContent = tp[0] + "  (" + tp[1] + ")";
      li.dataset.label = tp[0];
      if (i === pickIndex) { li.className = "sel"; }
      li.addEventListener("click", function () { closePicker(tp[0]); });
      list.appendChild(li);
    });
  }
  function openPicker() { picker.hidden = false; search.value = ""; pickIndex = 0; renderPicker(); search.focus(); }
  function closePicker(label) { picker.hidden = true; search.blur(); if (label) { choose(label); } }
  search.addEventListener("input", function () { pickIndex = 0; renderPicker(); });
  search.addEventListener("keydown", function (e) {
    const items = list.querySelectorAll("li");
    if (e.key === "ArrowDown") { pickIndex = Math.min(pickIndex + 1, items.length - 1); renderPicker(); }
    else if (e.key === "ArrowUp") { pickIndex = Math.max(pickIndex - 1, 0); renderPicker(); }
    else if (e.key === "Enter") { closePicker(items[pickIndex] ? items[pickIndex].dataset.label : null); }
    else if (e.key === "Escape") { closePicker(null); }
    else { return; }
    e.preventDefault();
    e.stopPropagation();
  });

  document.addEventListener("keydown", function (e) {
    if (!picker.hidden || e.ctrlKey || e.metaKey || e.altKey) { return; }
    const k = e.key;
    if (k >= "1" && k <= "3") {
      const s = D.suggestions[Number(k) - 1];
      if (s) { choose(s); }
    } else if (k === "n" || k === "N") { choose("normal"); }
    else if (k === "t" || k === "T") { openPicker(); }
    else if (k === "Enter") { confirmChoice(); }
    else if (k === "ArrowLeft") { go(D.nav.prev); }
    else if (k === "ArrowRight") { go(D.nav.next); }
    else if (k === "u" || k === "U") { undo(); }
    else if ((k === "h" || k === "H") && document.getElementById("heatmap")) { toggleHeatmap(); }
    else { return; }
    e.preventDefault();
  });

  // Small views start at the integer scale that makes them about 256 px wide (pixels stay sharp).
  document.querySelectorAll(".zoombox img").forEach(function (img) {
    let base = 1;
    let scale = 1;
    function show() { img.style.width = (img.naturalWidth * base * scale) + "px"; }
    function init() { base = Math.max(1, Math.floor(256 / Math.max(img.naturalWidth, 1))); show(); }
    if (img.complete && img.naturalWidth) { init(); } else { img.addEventListener("load", init); }
    img.addEventListener("click", function () { scale = scale >= 4 ? 1 : scale * 2; show(); });
  });
  document.body.dataset.ready = "1";
})();
