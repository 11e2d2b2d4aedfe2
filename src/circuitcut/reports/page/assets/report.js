// circuitcut run report: tooltips on chart points and cells (mouse and keyboard), series toggles,
// arrow keys along a series, the kept units of a circuit layer on click. No external files.
(function () {
  "use strict";
  var tip = document.getElementById("tip");
  function show(el) {
    var text = el.getAttribute("data-tip");
    if (!tip || !text) return;
    tip.textContent = text;
    tip.hidden = false;
    var r = el.getBoundingClientRect();
    var x = r.right + 10, y = r.top - 6;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 4) x = Math.max(4, r.left - w - 10);
    if (y + h > window.innerHeight - 4) y = Math.max(4, window.innerHeight - h - 4);
    tip.style.left = x + "px";
    tip.style.top = Math.max(4, y) + "px";
    el.classList.add("on");
  }
  function hide(el) {
    if (tip) tip.hidden = true;
    if (el) el.classList.remove("on");
  }
  document.querySelectorAll("[data-tip]").forEach(function (el) {
    el.addEventListener("mouseenter", function () { show(el); });
    el.addEventListener("mouseleave", function () { hide(el); });
    el.addEventListener("focus", function () { show(el); });
    el.addEventListener("blur", function () { hide(el); });
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") hide(document.activeElement);
  });
  // arrow keys move along the points of one series
  document.querySelectorAll("svg.chart .pt").forEach(function (pt) {
    pt.addEventListener("keydown", function (e) {
      var step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[e.key];
      if (!step) return;
      var pts = Array.prototype.slice.call(pt.parentNode.querySelectorAll(".pt"));
      var next = pts[pts.indexOf(pt) + step];
      if (next) { next.focus(); e.preventDefault(); }
    });
  });
  // series toggles: one checkbox per method, shared by every chart of a figure group
  document.querySelectorAll("input[data-series]").forEach(function (box) {
    box.addEventListener("change", function () {
      var group = document.getElementById(box.getAttribute("data-group"));
      if (!group) return;
      group.querySelectorAll('.series[data-series="' + box.getAttribute("data-series") + '"]').forEach(
        function (g) { g.classList.toggle("off", !box.checked); });
    });
  });
  // circuit map: a layer's kept units
  document.querySelectorAll("[data-map]").forEach(function (map) {
    var data = JSON.parse(document.getElementById(map.getAttribute("data-map")).textContent);
    var detail = document.getElementById(map.getAttribute("data-detail"));
    map.querySelectorAll("button.layer").forEach(function (btn) {
      btn.addEventListener("click", function () {
        map.querySelectorAll("button.layer").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
        btn.setAttribute("aria-pressed", "true");
        var d = data[btn.getAttribute("data-layer")];
        detail.textContent = "";
        var h = document.createElement("strong");
        h.textContent = d.title;
        detail.appendChild(h);
        d.lines.forEach(function (line) {
          var p = document.createElement("div");
          p.textContent = line;
          detail.appendChild(p);
        });
      });
    });
  });
  // printing shows every collapsed part
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  });
})();
