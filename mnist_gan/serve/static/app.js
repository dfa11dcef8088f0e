// mnist-gan serve: explore a generator (grid, sliders, interpolation, digits, D's scores, downloads) and
// follow a training run (newest grid, curves, warnings, progress). Talks only to this server's /api.
"use strict";

const $ = (id) => document.getElementById(id);
const ACCENT = ["#f59e0b", "#3b82f6"]; // the two picked samples: A, B
const GAP = 2; // pixels between tiles
const SIZES = [4, 9, 16, 25, 36, 49, 64];
const HINTS = {
  "flat-samples": "samples are flat single-tone images: G has collapsed to a constant picture",
  "mode-collapse": "samples barely change with z: mode collapse",
  "d-wins": "D rejects every fake with certainty: G's learning signal has vanished",
};

let info = null;
const view = { seed: 0, n: 16, digit: "all", shifts: [], nice: false, scores: true, pick: [] };
let grid = null; // the last grid reply
let walk = null; // the last walk reply
let walkTimer = null;

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(id, error) {
  const el = $(id);
  el.hidden = !error;
  el.textContent = error ? String(error.message || error) : "";
}

// ---------- view state <-> URL ----------

function shiftsParam() {
  let d = view.shifts.map((v) => Number(v.toFixed(2)));
  while (d.length && d[d.length - 1] === 0) d.pop();
  return d.join(",");
}

function viewParams() {
  const p = new URLSearchParams({ seed: view.seed, n: view.n });
  if (view.digit !== "all") p.set("digit", view.digit);
  if (view.nice) p.set("nice", "1");
  else if (shiftsParam()) p.set("d", shiftsParam());
  return p;
}

function shareURL() {
  const p = viewParams();
  if (view.pick.length === 2) { p.set("a", view.pick[0]); p.set("b", view.pick[1]); }
  return `${location.origin}/?${p}`;
}

function readURL() {
  const p = new URLSearchParams(location.search);
  const int = (name, lo, hi, fallback) => {
    const v = Number(p.get(name));
    return p.has(name) && Number.isInteger(v) && v >= lo && v <= hi ? v : fallback;
  };
  const L = info.limits;
  view.seed = int("seed", 0, L.max_seed, Math.floor(Math.random() * 10000));
  view.n = int("n", 1, L.max_samples, L.default_samples);
  const classes = info.model && info.model.conditional ? info.model.num_classes : 0;
  view.digit = p.get("digit") !== null && classes ? int("digit", 0, classes - 1, "all") : "all";
  view.nice = p.get("nice") === "1" && info.model && info.model.has_d;
  const count = info.model ? info.model.directions.length : 0;
  view.shifts = Array.from({ length: count }, (_, i) => {
    const v = Number((p.get("d") || "").split(",")[i]);
    return isFinite(v) ? Math.max(-L.slider, Math.min(L.slider, v)) : 0;
  });
  const a = int("a", 0, view.n - 1, -1), b = int("b", 0, view.n - 1, -1);
  view.pick = a >= 0 && b >= 0 && a !== b ? [a, b] : [];
}

function updateLinks() {
  history.replaceState(null, "", shareURL().slice(location.origin.length));
  const p = viewParams();
  p.set("format", "png");
  $("download-png").href = `/api/samples?${p}`;
  p.set("format", "npz");
  $("download-npz").href = `/api/samples?${p}`;
}

// ---------- drawing tiles ----------

const tile = document.createElement("canvas");
tile.width = tile.height = 28;

function decode(base64) {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

// Draw N 28x28 images (uint8; a colour image is its red, green and blue planes in turn) as a grid of `cols`
// columns filling the canvas' CSS width.
function drawTiles(canvas, reply, cols, options) {
  const pixels = decode(reply.images);
  const channels = reply.channels || 1;
  const dpr = window.devicePixelRatio || 1;
  const rows = Math.ceil(reply.n / cols);
  const available = options.width || canvas.parentElement.clientWidth;
  const cell = Math.max(8, Math.min(options.maxCell || 1e9, Math.floor((available - GAP) / cols) - GAP));
  const size = (c) => c * (cell + GAP) + GAP;
  canvas.style.width = `${size(cols)}px`;
  canvas.style.height = `${size(rows)}px`;
  canvas.width = size(cols) * dpr;
  canvas.height = size(rows) * dpr;
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.fillStyle = "#111827";
  ctx.fillRect(0, 0, size(cols), size(rows));
  ctx.imageSmoothingEnabled = false;
  const tctx = tile.getContext("2d");
  const image = tctx.createImageData(28, 28);
  for (let i = 0; i < reply.n; i++) {
    const start = i * channels * 784;
    for (let k = 0; k < 784; k++) {
      const r = pixels[start + k];
      const g = channels === 3 ? pixels[start + 784 + k] : r;
      const b = channels === 3 ? pixels[start + 1568 + k] : r;
      image.data.set([r, g, b, 255], 4 * k);
    }
    tctx.putImageData(image, 0, 0);
    const x = GAP + (i % cols) * (cell + GAP), y = GAP + Math.floor(i / cols) * (cell + GAP);
    ctx.drawImage(tile, x, y, cell, cell);
    if (options.scores && reply.scores) badge(ctx, x, y, cell, reply.scores[i]);
    const picked = (options.pick || []).indexOf(i);
    if (picked >= 0) outline(ctx, x, y, cell, picked);
  }
  canvas.dataset.cell = cell;
  canvas.dataset.cols = cols;
  canvas.dataset.renders = Number(canvas.dataset.renders || 0) + 1;
}

function badge(ctx, x, y, cell, score) {
  if (cell < 40) return;
  const text = score.toFixed(2);
  ctx.font = `600 ${cell >= 70 ? 11 : 10}px system-ui, sans-serif`;
  const w = ctx.measureText(text).width + 8, h = 15;
  const hue = Math.round(120 * Math.max(0, Math.min(1, score))); // red (0) .. green (1)
  ctx.fillStyle = `hsla(${hue}, 70%, 38%, 0.9)`;
  ctx.beginPath();
  ctx.roundRect(x + cell - w - 3, y + cell - h - 3, w, h, 4);
  ctx.fill();
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(text, x + cell - w + 1, y + cell - h / 2 - 3);
}

function outline(ctx, x, y, cell, which) {
  ctx.strokeStyle = ACCENT[which];
  ctx.lineWidth = 3;
  ctx.strokeRect(x + 1.5, y + 1.5, cell - 3, cell - 3);
  ctx.fillStyle = ACCENT[which];
  ctx.fillRect(x, y, 16, 16);
  ctx.fillStyle = "#111827";
  ctx.font = "700 11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillText("AB"[which], x + 4, y + 8.5);
}

// ---------- explore: requests, one at a time, the newest state winning ----------

let busy = false, dirty = false;

function refresh() {
  updateLinks();
  dirty = true;
  if (!busy) pump();
}

async function pump() {
  busy = true;
  while (dirty) {
    dirty = false;
    try {
      grid = await getJSON(`/api/samples?${viewParams()}`);
      view.pick = view.pick.filter((i) => i < grid.n);
      drawGrid();
      await refreshWalk();
      showError("explore-error", null);
    } catch (error) {
      showError("explore-error", error);
    }
  }
  busy = false;
}

const MAX_GRID_WIDTH = 520; // CSS pixels: a 4x4 grid of large tiles, an 8x8 one of readable tiles

function drawGrid() {
  const width = Math.min(MAX_GRID_WIDTH, $("grid").parentElement.clientWidth);
  drawTiles($("grid"), grid, grid.nrow, { scores: view.scores, pick: view.pick, width });
  const what = view.nice ? `the best ${grid.n} of ${grid.n * info.nice_factor} by D` : `${grid.n} samples`;
  const digit = view.digit === "all" ? "" : `, digit ${view.digit}`;
  $("grid-note").textContent = `${what}, seed ${view.seed}${digit} · rendered in ${grid.ms} ms` +
    (view.scores && grid.scores ? ` · D's score: ${info.model.score_note}` : "");
}

async function refreshWalk() {
  const hint = $("walk-hint");
  if (view.pick.length !== 2 || view.nice) {
    walk = null;
    clearInterval(walkTimer);
    $("walk").hidden = $("walk-frame").hidden = true;
    hint.hidden = false;
    hint.textContent = view.nice ? "The nice view shows ranked samples; turn it off to walk between two."
      : view.pick.length ? "Now click a second sample." : "Click two samples in the grid to walk from one to the other.";
    return;
  }
  const p = viewParams();
  p.set("a", view.pick[0]);
  p.set("b", view.pick[1]);
  p.set("steps", info.limits.default_steps);
  walk = await getJSON(`/api/walk?${p}`);
  hint.hidden = true;
  $("walk").hidden = $("walk-frame").hidden = false;
  drawWalk();
  animateWalk();
}

const FRAME = 112; // CSS pixels of the animated frame beside the strip

function drawWalk() {
  drawTiles($("walk"), walk, walk.n, { scores: view.scores, width: $("walk").parentElement.clientWidth - FRAME - 10 });
}

// Play the walk forth and back in the larger frame beside the strip.
function animateWalk() {
  clearInterval(walkTimer);
  const order = [...Array(walk.n).keys(), ...[...Array(walk.n).keys()].reverse().slice(1, -1)];
  let k = 0;
  const frame = $("walk-frame");
  const show = () => {
    const i = order[k++ % order.length];
    const size = (walk.channels || 1) * 784;
    const one = { n: 1, channels: walk.channels,
                  images: btoa(String.fromCharCode(...decode(walk.images).slice(i * size, (i + 1) * size))) };
    drawTiles(frame, one, 1, { width: FRAME });
  };
  show();
  walkTimer = setInterval(show, 140);
}

function pickAt(event) {
  if (!grid) return;
  const canvas = $("grid");
  const cell = Number(canvas.dataset.cell), cols = Number(canvas.dataset.cols);
  const rect = canvas.getBoundingClientRect();
  const col = Math.floor((event.clientX - rect.left - GAP / 2) / (cell + GAP));
  const row = Math.floor((event.clientY - rect.top - GAP / 2) / (cell + GAP));
  const index = row * cols + col;
  if (col < 0 || col >= cols || index < 0 || index >= grid.n || view.nice) return;
  view.pick = view.pick.includes(index) ? view.pick.filter((i) => i !== index) : [...view.pick, index].slice(-2);
  drawGrid();
  updateLinks();
  refreshWalk().catch((error) => showError("explore-error", error));
}

// ---------- explore: controls ----------

function buildControls() {
  const L = info.limits;
  $("count").replaceChildren(...SIZES.filter((s) => s <= L.max_samples).map((s) => new Option(s, s)));
  if (!SIZES.includes(view.n)) $("count").append(new Option(view.n, view.n));
  $("count").value = view.n;
  $("seed").max = L.max_seed;
  $("seed").value = view.seed;
  $("nice").checked = view.nice;
  $("nice").disabled = !info.model.has_d;
  $("nice-label").textContent = `Nice view (best of ${info.nice_factor}x)`;
  $("show-scores").disabled = !info.model.has_d;
  view.scores = info.model.has_d && $("show-scores").checked;
  $("walk-kind").textContent = info.model.z_distribution === "normal" ? "slerp, as interpolate walks Gaussian z"
    : "a straight line, as interpolate walks uniform z";
  buildDigits();
  buildSliders();
}

function buildDigits() {
  const box = $("digits");
  const classes = info.model.conditional ? info.model.num_classes : 0;
  box.hidden = !classes;
  const options = ["all", ...Array.from({ length: classes }, (_, i) => i)];
  box.replaceChildren(...options.map((d) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = d === "all" ? "All digits" : d;
    button.dataset.digit = d;
    button.className = String(view.digit) === String(d) ? "active" : "";
    button.addEventListener("click", () => {
      view.digit = d;
      for (const b of box.children) b.className = b.dataset.digit === String(d) ? "active" : "";
      refresh();
    });
    return button;
  }));
}

function buildSliders() {
  const L = info.limits;
  $("sliders").replaceChildren(...info.model.directions.map((share, i) => {
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `PC${i + 1}`;
    name.title = `${(100 * share).toFixed(1)}% of the variance of G's ${info.model.layer} output`;
    const bar = document.createElement("span");
    bar.className = "share";
    bar.textContent = `${(100 * share).toFixed(share < 0.1 ? 1 : 0)}%`;
    bar.title = name.title;
    const input = Object.assign(document.createElement("input"),
      { type: "range", min: -L.slider, max: L.slider, step: 0.1, value: view.shifts[i] });
    input.id = `slider-${i}`;
    input.disabled = view.nice;
    const value = document.createElement("output");
    value.textContent = view.shifts[i].toFixed(1);
    input.addEventListener("input", () => {
      view.shifts[i] = Number(input.value);
      value.textContent = view.shifts[i].toFixed(1);
      refresh();
    });
    row.append(name, bar, input, value);
    return row;
  }));
}

function wireControls() {
  $("seed").addEventListener("change", () => {
    const v = Number($("seed").value);
    if (Number.isInteger(v) && v >= 0 && v <= info.limits.max_seed) { view.seed = v; view.pick = []; refresh(); }
    else $("seed").value = view.seed;
  });
  $("reroll").addEventListener("click", () => {
    view.seed = Math.floor(Math.random() * 100000);
    $("seed").value = view.seed;
    view.pick = [];
    refresh();
  });
  $("count").addEventListener("change", () => { view.n = Number($("count").value); refresh(); });
  $("nice").addEventListener("change", () => {
    view.nice = $("nice").checked;
    for (const input of $("sliders").querySelectorAll("input")) input.disabled = view.nice;
    refresh();
  });
  $("show-scores").addEventListener("change", () => {
    view.scores = $("show-scores").checked;
    if (grid) drawGrid();
    if (walk) drawWalk();
  });
  $("reset").addEventListener("click", () => {
    view.shifts = view.shifts.map(() => 0);
    buildSliders();
    refresh();
  });
  $("grid").addEventListener("click", pickAt);
  $("copy-link").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(shareURL()); $("copy-link").textContent = "Copied"; }
    catch { $("copy-link").textContent = "Copy failed: use the address bar"; }
    setTimeout(() => { $("copy-link").textContent = "Copy link"; }, 1500);
  });
  window.addEventListener("resize", () => {
    if (grid) drawGrid();
    if (walk) drawWalk();
    if (info.run) drawCharts();
  });
}

// ---------- page header ----------

function showModel() {
  $("source").textContent = info.name;
  $("source").title = info.source;
  const m = info.model;
  const parts = m ? [m.architecture, m.conditional ? `conditional (${m.num_classes} classes)` : "unconditional",
    `z: ${m.z_dim}-d ${m.z_distribution}`, m.has_d ? "with D" : "G only"] : ["no generator yet"];
  if (info.iteration !== null) parts.push(`checkpoint at iteration ${info.iteration.toLocaleString()}`);
  $("model-summary").textContent = parts.join(" · ");
  $("explore-body").hidden = !m;
  $("explore-missing").hidden = !!m;
  $("explore-missing").textContent = "No checkpoint yet: the run writes its first one every --checkpoint-every " +
    "iterations. This page offers to load it when it appears.";
}

async function start() {
  try {
    info = await getJSON("/api/info");
  } catch (error) {
    document.body.textContent = `mnist-gan serve: ${error.message}`;
    return;
  }
  showModel();
  if (info.model) {
    readURL();
    buildControls();
    wireControls();
    refresh();
  }
  if (info.run) {
    $("watch").hidden = false;
    document.body.classList.add("with-run");
    startWatch();
  }
}

document.addEventListener("DOMContentLoaded", start);
