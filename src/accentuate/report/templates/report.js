// The report page's behaviour: blend slider, mask switch, sorting, filters, pair details.
// Every text from the record is set with textContent (never parsed as HTML).
(function () {
  "use strict";
  var holder = document.getElementById("report-data");
  var D = holder ? JSON.parse(holder.textContent) : { pairs: [] };
  var P = D.pairs || [];
  var grid = document.getElementById("grid");
  var root = document.documentElement;
  var $ = function (id) { return document.getElementById(id); };
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v !== "number") return String(v);
    if (!isFinite(v)) return "nan";
    if (Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return a >= 1 ? String(Number(v.toPrecision(3))) : String(Number(v.toFixed(3)));
  }
  function arrow(b, a) { return fmt(b) + " \u2192 " + fmt(a); }
  // A relative link to a file of the folder: every part percent-encoded (":" too, so no name is a scheme).
  function href(name) { return String(name).split("/").map(encodeURIComponent).join("/"); }

  // -- blend and mask ------------------------------------------------------------------------
  // Two copies of each control (above the grid, and in the details); they stay in step.
  var blends = [$("blend"), $("d-blend")].filter(Boolean), masks = [$("mask"), $("d-mask")].filter(Boolean);
  function applyBlend(src) {
    blends.forEach(function (b) { if (b !== src) b.value = src.value; });
    root.style.setProperty("--blend", String(src.value / 100));
  }
  function applyMask(src) {
    masks.forEach(function (m) { if (m !== src) m.checked = src.checked; });
    document.body.classList.toggle("masked", src.checked);
  }
  blends.forEach(function (b) { b.addEventListener("input", function () { applyBlend(b); }); });
  masks.forEach(function (m) { m.addEventListener("change", function () { applyMask(m); }); });
  if (blends.length) applyBlend(blends[0]);
  if (masks.length) applyMask(masks[0]);

  // -- sort and filter -----------------------------------------------------------------------
  var cards = grid ? Array.prototype.slice.call(grid.querySelectorAll(".card")) : [];
  var statusOrder = { failed: 0, partial: 1, complete: 2 };
  function num(v, dflt) { return (typeof v === "number" && isFinite(v)) ? v : dflt; }
  var keys = {
    order: function (p, k) { return [p.i, p.j, k]; },
    target: function (p, k) { return [p.j, p.i, k]; },
    gain: function (p, k) { return [-num(p.gain, -Infinity), k]; },
    "gain-asc": function (p, k) { return [num(p.gain, Infinity), k]; },
    rank: function (p, k) { return [num(p.a[1], Infinity), k]; },
    prob: function (p, k) { return [-num(p.a[2], -Infinity), k]; },
    ssim: function (p, k) { return [-num(p.ssim, -Infinity), k]; },
    judges: function (p, k) {
      var ranks = (p.jd || []).map(function (r) { return r[2]; }).filter(function (v) { return typeof v === "number"; });
      var mean = ranks.length ? ranks.reduce(function (a, b) { return a + b; }, 0) / ranks.length : Infinity;
      return [p.j5 ? -p.j5[0] / p.j5[1] : 1, mean, k];
    },
    status: function (p, k) { return [num(statusOrder[p.st], 3), p.i, p.j, k]; }
  };
  function cmp(a, b) {
    for (var i = 0; i < a.length; i++) { if (a[i] < b[i]) return -1; if (a[i] > b[i]) return 1; }
    return 0;
  }
  var order = cards.map(function (c) { return Number(c.dataset.k); });
  var current_order = order.join(",");  // the order of the cards in the document
  function update() {
    if (!grid) return;
    var s = $("sort").value, key = keys[s] || keys.order;
    var fi = $("f-image").value.trim().toLowerCase(), ft = $("f-target").value.trim().toLowerCase();
    var fs = $("f-status").value, fg = parseFloat($("f-gain").value), fj = $("f-judges") ? $("f-judges").value : "";
    order = cards.map(function (c) { return Number(c.dataset.k); });
    order.sort(function (a, b) { return cmp(key(P[a], a), key(P[b], b)); });
    var moved = order.join(",") !== current_order, shown = 0;
    order.forEach(function (k) {
      var p = P[k], c = cards[k];
      var ok = (!fi || p.img.toLowerCase().indexOf(fi) >= 0) && (!ft || p.tgt.toLowerCase().indexOf(ft) >= 0) &&
        (!fs || p.st === fs) && (isNaN(fg) || (typeof p.gain === "number" && p.gain >= fg)) &&
        (!fj || (p.j5 && (fj === "all" ? p.j5[0] === p.j5[1] : fj === "some" ? p.j5[0] > 0 : p.j5[0] === 0)));
      if (c.hidden === ok) c.hidden = !ok;
      if (ok) shown++;
    });
    if (moved) {  // reorder the DOM only when the order changed (one fragment, one layout)
      var frag = document.createDocumentFragment();
      order.forEach(function (k) { frag.appendChild(cards[k]); });
      grid.appendChild(frag);
      current_order = order.join(",");
    }
    var cols = Number(grid.dataset.columns || 0);
    grid.style.gridTemplateColumns = (s === "order" && cols > 1 && window.innerWidth > 220 * cols)
      ? "repeat(" + cols + ", minmax(180px, 280px))" : "";
    $("shown").textContent = shown + " of " + cards.length + " shown";
  }
  ["sort", "f-status", "f-judges"].forEach(function (id) { if ($(id)) $(id).addEventListener("change", update); });
  ["f-image", "f-target", "f-gain"].forEach(function (id) { if ($(id)) $(id).addEventListener("input", update); });
  if ($("controls")) $("controls").addEventListener("submit", function (e) { e.preventDefault(); });
  if (grid) update();

  // -- history plot (inline SVG) -------------------------------------------------------------
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function ticks(lo, hi) {
    if (!(hi > lo)) { hi = lo + (Math.abs(lo) || 1); }
    var raw = (hi - lo) / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (s) { return s * mag; }).filter(function (s) { return s >= raw; })[0];
    var out = [];
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-6; v += step) out.push(Number(v.toPrecision(6)));
    return out;
  }
  function linePlot(title, xs, ys, colour, ylabel) {
    var W = 520, H = 170, L = 58, R = 12, T = 24, B = 34;
    var s = svg("svg", { "class": "plot", viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img" });
    s.appendChild(svg("text", { "class": "ptitle", x: L, y: 16 }, title));
    var pts = [];
    for (var i = 0; i < xs.length; i++) if (typeof ys[i] === "number" && isFinite(ys[i])) pts.push([xs[i], ys[i]]);
    if (!pts.length) { s.appendChild(svg("text", { "class": "axis", x: L, y: 60 }, "not recorded")); return s; }
    var x0 = Math.min.apply(null, pts.map(function (p) { return p[0]; })), x1 = Math.max.apply(null, pts.map(function (p) { return p[0]; }));
    var y0 = Math.min.apply(null, pts.map(function (p) { return p[1]; })), y1 = Math.max.apply(null, pts.map(function (p) { return p[1]; }));
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    var pad = 0.06 * (y1 - y0); y0 -= pad; y1 += pad;
    var px = function (v) { return (L + (v - x0) / (x1 - x0) * (W - L - R)).toFixed(1); };
    var py = function (v) { return (T + (y1 - v) / (y1 - y0) * (H - T - B)).toFixed(1); };
    ticks(y0, y1).forEach(function (v) {
      if (v < y0 || v > y1) return;
      s.appendChild(svg("line", { "class": "grid", x1: L, x2: W - R, y1: py(v), y2: py(v) }));
      s.appendChild(svg("text", { "class": "tick", x: L - 5, y: Number(py(v)) + 4, "text-anchor": "end" }, fmt(v)));
    });
    ticks(x0, x1).forEach(function (v) {
      if (v < x0 || v > x1) return;
      s.appendChild(svg("text", { "class": "tick", x: px(v), y: H - B + 14, "text-anchor": "middle" }, fmt(v)));
    });
    s.appendChild(svg("rect", { "class": "frame", x: L, y: T, width: W - L - R, height: H - T - B }));
    s.appendChild(svg("polyline", { "class": "line", stroke: colour, points: pts.map(function (p) { return px(p[0]) + "," + py(p[1]); }).join(" ") }));
    s.appendChild(svg("text", { "class": "axis", x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "step"));
    s.appendChild(svg("text", { "class": "axis", transform: "translate(14," + (T + H - B) / 2 + ") rotate(-90)", "text-anchor": "middle" }, ylabel));
    return s;
  }

  // -- details -------------------------------------------------------------------------------
  var detail = $("detail"), current = -1, opener = null;
  function setImg(img, src) {
    if (src) { img.src = src; img.hidden = false; } else { img.removeAttribute("src"); img.hidden = true; }
  }
  function row(table, cells, head) {
    var tr = el("tr");
    cells.forEach(function (c, i) { tr.appendChild(el(head || (i === 0 && table.classList.contains("kv")) ? "th" : "td", c)); });
    table.appendChild(tr);
  }
  function open(k) {
    var p = P[k];
    if (!p || !detail) return;
    current = k;
    $("d-title").textContent = p.img + " \u2192 " + p.tgt + (p.st !== "complete" ? "  [" + p.st + "]" : "");
    setImg($("d-seed"), p.seed); setImg($("d-acc"), p.acc); setImg($("d-rgba"), p.rgba);
    $("d-stack").classList.toggle("noseed", !p.seed);
    setImg($("d-gif"), p.gif); $("d-nogif").hidden = !!p.gif;
    var h = $("d-history"); h.textContent = "";
    var hist = p.h || { s: [] }, xs = hist.s || [];
    if (hist.even && xs.length === 3) { var st = []; for (var q = 0; q < xs[2]; q++) st.push(xs[0] + q * xs[1]); xs = st; }
    h.appendChild(linePlot("objective (mean over the step's crops)", xs, hist.o || [], "#d62728", "objective"));
    h.appendChild(linePlot("distance to the seed (" + (p.regname || "regularizer") + ")", xs, hist.d || [], "#1f77b4", "distance"));
    if (hist.r && hist.r.some(function (v) { return typeof v === "number"; })) h.appendChild(linePlot("rank of the class (1 = top-1)", xs, hist.r, "#2ca02c", "rank"));
    var n = $("d-numbers"); n.textContent = "";
    row(n, [p.vn || "value", arrow(p.b[0], p.a[0])]);
    if (p.a[1] !== null) { row(n, ["rank", arrow(p.b[1], p.a[1])]); row(n, ["probability", arrow(p.b[2], p.a[2])]); }
    row(n, ["gain", fmt(p.gain)]);
    row(n, ["status", p.st + (p.fail ? ": " + p.fail : "") + (p.resumed ? " (kept from an earlier run)" : "")]);
    row(n, ["objective", p.obj]);
    row(n, ["SSIM to the seed", fmt(p.ssim)]);
    row(n, ["pixel RMSE to the seed", fmt(p.rmse)]);
    row(n, [(p.regname || "reg layer") + " distance", fmt(p.reg)]);
    row(n, ["steps", fmt(p.steps) + " of " + fmt(p.done)]);
    row(n, ["lambda after balancing", fmt(p.lam)]);
    row(n, ["batch", fmt(p.batch)]);
    (p.jd || []).forEach(function (r) {  // [judge, rank before, rank after, p before, p after, feature change]
      row(n, ["judge " + r[0], (r[2] !== null ? "rank " + arrow(r[1], r[2]) + ", p " + arrow(r[3], r[4]) + ", " : "") +
        "feature change " + fmt(r[5])]);
    });
    var t = $("d-top5"); t.textContent = "";
    if (p.t5b.length || p.t5a.length) {
      row(t, ["#", "before", "p", "after", "p"], "th");
      for (var i = 0; i < Math.max(p.t5b.length, p.t5a.length); i++) {
        var b = p.t5b[i] || ["", null], a = p.t5a[i] || ["", null];
        row(t, [String(i + 1), b[0], fmt(b[1]), a[0], fmt(a[1])]);
      }
    } else { row(t, ["not a class target"]); }
    var f = $("d-files"); f.textContent = "";
    row(f, ["kind", "file", "SHA-256"], "th");
    p.files.forEach(function (x) {  // [kind, name, sha256 prefix, present]
      var tr = el("tr"), td = el("td");
      tr.appendChild(el("td", x[0]));
      if (x[3]) { var a = el("a", x[1]); a.href = href(x[1]); td.appendChild(a); } else { td.textContent = x[1] + " (missing)"; }
      tr.appendChild(td); tr.appendChild(el("td", x[2] + "\u2026"));
      f.appendChild(tr);
    });
    if (detail.hidden) opener = document.activeElement;
    detail.hidden = false;
    document.body.classList.add("detail-open");
    if (history.replaceState) history.replaceState(null, "", "#pair=" + encodeURIComponent(p.id));
    $("d-close").focus();
  }
  function close() {
    if (!detail || detail.hidden) return;
    detail.hidden = true; current = -1;
    setImg($("d-gif"), null);
    if (history.replaceState) history.replaceState(null, "", location.pathname + location.search);
    if (opener && opener.focus) opener.focus();
  }
  function step(d) {
    var visible = order.filter(function (k) { return !$("card-" + k).hidden; });
    var i = visible.indexOf(current);
    if (visible.length) open(visible[(i + d + visible.length) % visible.length]);
  }
  if (grid) grid.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("button.open") : null;
    if (b) open(Number(b.closest(".card").dataset.k));
  });
  if (detail) {
    $("d-close").addEventListener("click", close);
    $("d-prev").addEventListener("click", function () { step(-1); });
    $("d-next").addEventListener("click", function () { step(1); });
    detail.addEventListener("click", function (e) { if (e.target === detail) close(); });
    document.addEventListener("keydown", function (e) {
      if (detail.hidden) return;
      if (e.key === "Escape") close();
      else if (e.key === "ArrowLeft") step(-1);
      else if (e.key === "ArrowRight") step(1);
    });
    var m = /^#pair=(.+)$/.exec(location.hash);
    if (m) {
      var id = decodeURIComponent(m[1]);
      for (var k = 0; k < P.length; k++) if (P[k].id === id) { open(k); break; }
    }
  }
})();
