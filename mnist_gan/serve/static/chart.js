// Small line charts on a <canvas>: gridlines, ticks, a legend with the latest values, many points bucketed
// into one per pixel column. Enough for training curves, with no library to download.
"use strict";

(function () {
  const MARGIN = { left: 48, right: 12, top: 26, bottom: 24 };

  function niceStep(range, count) {
    const raw = range / Math.max(1, count);
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / magnitude;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  }

  function ticks(lo, hi, count) {
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  function format(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100 || v === 0) return v.toFixed(0);
    if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, "");
    return v.toPrecision(2).replace(/\.?0+$/, "");
  }

  // Average the points falling into each of `width` columns of the x range, so 100,000 points draw as fast as 500.
  function bucket(points, x0, x1, width) {
    if (points.length <= width) return points;
    const sums = new Map();
    for (const [x, y] of points) {
      const k = Math.min(width - 1, Math.floor(((x - x0) / (x1 - x0 || 1)) * width));
      const s = sums.get(k) || [0, 0, 0];
      s[0] += x; s[1] += y; s[2] += 1;
      sums.set(k, s);
    }
    return [...sums.keys()].sort((a, b) => a - b).map((k) => { const s = sums.get(k); return [s[0] / s[2], s[1] / s[2]]; });
  }

  // A y range that a few early spikes cannot flatten the rest of the curve into.
  function yRange(values, fixed) {
    if (fixed) return fixed;
    const sorted = values.slice().sort((a, b) => a - b);
    const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))];
    let lo = sorted.length > 50 ? q(0.01) : sorted[0];
    let hi = sorted.length > 50 ? q(0.99) : sorted[sorted.length - 1];
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }

  function draw(canvas, options) {
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.fillStyle = "#1f2937";
    ctx.textBaseline = "alphabetic";
    ctx.fillText(options.title, MARGIN.left, 16);
    const series = options.series.map((s) => ({ ...s, points: s.points.filter((p) => p[1] !== null && isFinite(p[1])) }));
    const all = series.flatMap((s) => s.points);
    const plot = { x: MARGIN.left, y: MARGIN.top, w: width - MARGIN.left - MARGIN.right, h: height - MARGIN.top - MARGIN.bottom };
    legend(ctx, series, width);
    if (!all.length) {
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillStyle = "#6b7280";
      ctx.textAlign = "center";
      ctx.fillText(options.empty || "no data yet", plot.x + plot.w / 2, plot.y + plot.h / 2);
      ctx.textAlign = "start";
      return;
    }
    let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    const [y0, y1] = yRange(all.map((p) => p[1]), options.yRange);
    const sx = (x) => plot.x + ((x - x0) / (x1 - x0)) * plot.w;
    const sy = (y) => plot.y + plot.h - ((y - y0) / (y1 - y0)) * plot.h;
    axes(ctx, plot, { x0, x1, y0, y1, sx, sy });
    ctx.save();
    ctx.beginPath();
    ctx.rect(plot.x, plot.y, plot.w, plot.h);
    ctx.clip();
    for (const s of series) {
      const pts = bucket(s.points, x0, x1, Math.max(2, Math.floor(plot.w)));
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.6;
      ctx.lineJoin = "round";
      ctx.beginPath();
      pts.forEach(([x, y], i) => (i ? ctx.lineTo(sx(x), sy(y)) : ctx.moveTo(sx(x), sy(y))));
      ctx.stroke();
      if (pts.length <= 40) {
        ctx.fillStyle = s.color;
        for (const [x, y] of pts) { ctx.beginPath(); ctx.arc(sx(x), sy(y), 2.5, 0, 2 * Math.PI); ctx.fill(); }
      }
    }
    ctx.restore();
  }

  function axes(ctx, plot, a) {
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#6b7280";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of ticks(a.y0, a.y1, 4)) {
      const y = Math.round(a.sy(v)) + 0.5;
      ctx.strokeStyle = "#e5e7eb";
      ctx.beginPath(); ctx.moveTo(plot.x, y); ctx.lineTo(plot.x + plot.w, y); ctx.stroke();
      ctx.fillText(format(v), plot.x - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of ticks(a.x0, a.x1, Math.max(2, Math.floor(plot.w / 90)))) {
      ctx.fillText(format(v), a.sx(v), plot.y + plot.h + 6);
    }
    ctx.strokeStyle = "#9ca3af";
    ctx.beginPath(); ctx.moveTo(plot.x + 0.5, plot.y); ctx.lineTo(plot.x + 0.5, plot.y + plot.h + 0.5);
    ctx.lineTo(plot.x + plot.w, plot.y + plot.h + 0.5); ctx.stroke();
    ctx.textAlign = "start";
    ctx.textBaseline = "alphabetic";
  }

  function legend(ctx, series, width) {
    ctx.font = "11px system-ui, sans-serif";
    let x = width - MARGIN.right;
    for (const s of series.slice().reverse()) {
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      const text = last === null ? s.label : `${s.label} ${format(last)}`;
      x -= ctx.measureText(text).width;
      ctx.fillStyle = "#374151";
      ctx.fillText(text, x, 16);
      x -= 16;
      ctx.fillStyle = s.color;
      ctx.fillRect(x, 10, 12, 3);
      x -= 14;
    }
  }

  window.LineChart = { draw, format };
})();
