// mnist-gan serve, "Watch": follow a run directory while it trains. Polls /api/run and reads the metrics
// incrementally from /api/metrics (only the lines it has not seen), so a long run costs little per poll.
"use strict";

const run = { generation: null, next: 0, train: [], evals: [], grids: [], shown: null, follow: true, status: null };
const COLORS = { d: "#dc2626", g: "#2563eb", real: "#059669", fake: "#d97706", fid: "#7c3aed" };

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

async function pollMetrics() {
  for (let round = 0; round < 20; round++) { // 20 x 5,000 lines per poll at most; the rest next time
    const p = new URLSearchParams({ since: run.next });
    if (run.generation !== null) p.set("generation", run.generation);
    const reply = await getJSON(`/api/metrics?${p}`);
    if (reply.reset) { run.train = []; run.evals = []; }
    run.generation = reply.generation;
    for (const r of reply.records) (r.kind === "eval" ? run.evals : run.train).push(r);
    run.next = reply.next;
    if (reply.next >= reply.total) return;
  }
}

async function pollRun() {
  try {
    const status = await getJSON("/api/run");
    await pollMetrics();
    run.status = status;
    showStatus(status);
    showGrid(status.grids);
    showWarnings(status.warnings);
    drawCharts();
    showError("watch-error", null);
    document.body.dataset.watchPolls = Number(document.body.dataset.watchPolls || 0) + 1;
  } catch (error) {
    showError("watch-error", error);
  }
  setTimeout(pollRun, 1000 * info.refresh_s);
}

function showStatus(s) {
  const state = $("state");
  state.textContent = s.state;
  state.className = `pill ${s.state}`;
  $("progress-bar").style.width = `${s.stopped_by_time_limit ? 100 : Math.round(100 * (s.progress || 0))}%`;
  const parts = [];
  const of = s.total ? ` of ${s.total_exact ? "" : "≈"}${s.total.toLocaleString()}` : "";
  parts.push(`iteration ${s.iteration.toLocaleString()}${of}` + (s.progress !== null ? ` (${Math.floor(100 * s.progress)}%)` : ""));
  if (s.epoch !== null) parts.push(`epoch ${s.epoch}`);
  if (s.iterations_per_s) parts.push(`${s.iterations_per_s.toFixed(s.iterations_per_s < 10 ? 2 : 1)} it/s`);
  if (s.state === "training" && s.eta_s !== null) {
    parts.push(`ETA ${duration(s.eta_s)}` + (s.eta_by_time_limit ? ` (--max-minutes ${s.max_minutes})` : ""));
  }
  if (s.stopped_by_time_limit) parts.push(`stopped by --max-minutes ${s.max_minutes}`);
  $("progress-text").textContent = parts.join(" · ");
  const latest = s.latest || {};
  const fid = run.evals.length ? run.evals[run.evals.length - 1].fid : null;
  const stat = (label, value, digits) => {
    const box = document.createElement("div");
    const name = document.createElement("span");
    name.textContent = label;
    const number = document.createElement("b");
    number.textContent = value === null || value === undefined ? "–" : value.toFixed(digits);
    box.append(name, number);
    return box;
  };
  $("stats").replaceChildren(stat("d_loss", latest.d_loss, 3), stat("g_loss", latest.g_loss, 3),
    stat("D(x)", latest.d_x, 3), stat("D(G(z))", latest.d_g_z, 3), stat("FID", fid, 1));
  const newer = s.checkpoint !== null && (info.iteration === null || s.checkpoint > info.iteration);
  $("reload-box").hidden = !newer;
  if (newer) {
    $("reload-text").textContent = info.model
      ? `A newer checkpoint (iteration ${s.checkpoint.toLocaleString()}) is on disk.`
      : `The first checkpoint (iteration ${s.checkpoint.toLocaleString()}) is on disk.`;
  }
}

function showGrid(grids) {
  const scrub = $("grid-scrub");
  run.grids = grids;
  scrub.max = Math.max(0, grids.length - 1);
  scrub.hidden = grids.length < 2;
  if (!grids.length) {
    $("run-grid-caption").textContent = "no sample grid yet";
    return;
  }
  if (run.follow) scrub.value = grids.length - 1;
  const iteration = grids[Math.min(Number(scrub.value), grids.length - 1)];
  if (iteration !== run.shown) {
    $("run-grid").src = `/api/run/grid.png?iteration=${iteration}`;
    run.shown = iteration;
  }
  $("run-grid-caption").textContent = `iteration ${iteration.toLocaleString()}, fixed noise` +
    (run.follow ? " (newest)" : ` · ${grids.length - 1 - Number(scrub.value)} newer`);
}

function showWarnings(warnings) {
  const list = $("warnings");
  if (!warnings.length) {
    const none = document.createElement("li");
    none.className = "none";
    none.textContent = "none: the diagnosis has seen nothing wrong";
    list.replaceChildren(none);
    return;
  }
  list.replaceChildren(...warnings.slice().reverse().map((w) => {
    const item = document.createElement("li");
    const code = document.createElement("b");
    code.textContent = w.code;
    item.append(`iteration ${w.iteration.toLocaleString()}: `, code, HINTS[w.code] ? ` · ${HINTS[w.code]}` : "");
    return item;
  }));
}

function drawCharts() {
  if (!run.status) return;
  const series = (records, key) => records.map((r) => [r.iteration, r[key]]);
  LineChart.draw($("chart-loss"), {
    title: "Losses",
    series: [{ label: "d_loss", color: COLORS.d, points: series(run.train, "d_loss") },
      { label: "g_loss", color: COLORS.g, points: series(run.train, "g_loss") }],
  });
  LineChart.draw($("chart-d"), {
    title: "D's scores",
    yRange: [-0.04, 1.04],
    series: [{ label: "D(x)", color: COLORS.real, points: series(run.train, "d_x") },
      { label: "D(G(z))", color: COLORS.fake, points: series(run.train, "d_g_z") }],
  });
  $("chart-fid").hidden = !run.evals.length;
  $("fid-note").hidden = !!run.evals.length;
  if (run.evals.length) {
    LineChart.draw($("chart-fid"), {
      title: "FID (classifier features; lower is better)",
      series: [{ label: "FID", color: COLORS.fid, points: series(run.evals, "fid") }],
    });
  }
}

async function reloadModel() {
  $("reload").disabled = true;
  try {
    const had = !!info.model;
    info = await getJSON("/api/reload", { method: "POST" });
    showModel();
    if (!had) { readURL(); buildControls(); wireControls(); }
    else {
      view.shifts = info.model.directions.map((_, i) => view.shifts[i] || 0);
      buildSliders();
    }
    refresh();
    $("reload-box").hidden = true;
  } catch (error) {
    showError("watch-error", error);
  }
  $("reload").disabled = false;
}

function startWatch() {
  $("grid-scrub").addEventListener("input", () => {
    run.follow = Number($("grid-scrub").value) >= run.grids.length - 1;
    showGrid(run.grids);
  });
  $("reload").addEventListener("click", reloadModel);
  pollRun();
}
