/* slo-monitor console: times in the browser's zone, live refresh of <main>, uPlot charts, canaries.
   No inline script anywhere (the pages' Content-Security-Policy forbids it); every value from the
   API is written with textContent, never as markup. */
(function () {
  "use strict";
  var charts = {}; // key -> {el, plot}
  var stopped = false;

  function formatTimes(root) {
    var fmt = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "medium"});
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        el.textContent = fmt.format(d);
        el.title = el.getAttribute("datetime");
      }
    });
  }

  function chartWidth(el) {
    return Math.max(240, Math.min(el.clientWidth || 600, 1100));
  }

  function plot(el, key, label, xs, ys, scaleMin) {
    var data = [xs, ys];
    var known = charts[key];
    if (known && known.el === el && known.plot) {
      known.plot.setData(data);
      return;
    }
    if (typeof uPlot === "undefined") {
      el.textContent = "The chart library did not load.";
      return;
    }
    el.textContent = "";
    var opts = {
      width: chartWidth(el), height: 220, title: label,
      scales: {x: {time: true}, y: scaleMin === undefined ? {} : {range: function (u, min, max) {
        return [Math.min(scaleMin, min), Math.max(1, max)];
      }}},
      series: [{}, {label: label, stroke: "#1f5fbf", width: 2, fill: "rgba(31,95,191,0.08)"}],
      axes: [{}, {size: 60}]
    };
    charts[key] = {el: el, plot: new uPlot(opts, data, el)};
  }

  function drawBudgetCharts(root) {
    root.querySelectorAll(".chart[data-history]").forEach(function (el) {
      var url = el.getAttribute("data-history");
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (body) {
          var xs = body.t || [];
          var ys = (body.error_budget_remaining || []).map(function (v) { return v === null ? null : v * 100; });
          plot(el, url, "Error budget left (%)", xs, ys, 0);
          el.setAttribute("data-drawn", "true");
        })
        .catch(function (e) { el.textContent = "No budget history: " + e.message; });
    });
  }

  function drawInstanceCharts(root) {
    var source = document.getElementById("instance-history");
    if (!source) { return; }
    var history;
    try { history = JSON.parse(source.textContent); } catch (e) { return; }
    root.querySelectorAll(".chart[data-series]").forEach(function (el) {
      var name = el.getAttribute("data-series");
      plot(el, "instance:" + name, el.getAttribute("data-label") || name, history.t || [], history[name] || []);
      el.setAttribute("data-drawn", "true");
    });
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "–" : String(text);
    row.appendChild(td);
    return td;
  }

  function loadCanaries(root) {
    var section = root.querySelector("#canaries");
    if (!section) { return; }
    fetch("/api/v1/canaries", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (items) {
        if (!Array.isArray(items) || items.length === 0) { section.hidden = true; return; }
        var table = document.createElement("table");
        var head = table.createTHead().insertRow();
        ["Canary", "Verdict", "Why", "Requests", "Coverage", "Since"].forEach(function (h) {
          var th = document.createElement("th"); th.scope = "col"; th.textContent = h; head.appendChild(th);
        });
        var body = table.createTBody();
        items.forEach(function (c) {
          var row = body.insertRow();
          cell(row, c.name);
          var v = cell(row, c.verdict);
          v.className = "badge badge-" + (["pass", "fail", "inconclusive"].indexOf(c.verdict) >= 0 ? c.verdict : "other");
          cell(row, c.reason);
          cell(row, typeof c.requests === "object" && c.requests ? JSON.stringify(c.requests) : c.requests);
          cell(row, typeof c.coverage === "number" ? (c.coverage * 100).toFixed(0) + "%" :
            (typeof c.covered === "boolean" ? (c.covered ? "covered" : "not covered") : undefined));
          cell(row, c.since);
        });
        var box = section.querySelector(".canaries");
        box.textContent = "";
        box.appendChild(table);
        section.hidden = false;
      })
      .catch(function () { section.hidden = true; });
  }

  function enhance(root) {
    formatTimes(root);
    drawBudgetCharts(root);
    drawInstanceCharts(root);
    loadCanaries(root);
  }

  function refresh() {
    if (stopped || document.hidden) { return; }
    var main = document.getElementById("main");
    var active = document.activeElement;
    if (active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) { return; }
    fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) {
        if (r.redirected || !r.ok) {
          stopped = true;
          throw new Error(r.redirected ? "signed out" : "HTTP " + r.status);
        }
        return r.text();
      })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html").getElementById("main");
        if (!next) { return; }
        // keep drawn charts (their uPlot instances) and only give them new data
        next.querySelectorAll(".chart[data-history], .chart[data-series]").forEach(function (el) {
          var key = el.getAttribute("data-history") || "instance:" + el.getAttribute("data-series");
          if (charts[key]) { el.replaceWith(charts[key].el); }
        });
        var source = next.querySelector("#instance-history");
        var old = document.getElementById("instance-history");
        main.replaceChildren.apply(main, Array.prototype.slice.call(next.childNodes));
        if (source && !old) { /* first history block: nothing to keep */ }
        enhance(main);
      })
      .catch(function (e) {
        var note = document.getElementById("live-note");
        if (!note) {
          note = document.createElement("p");
          note.id = "live-note"; note.className = "warning"; note.setAttribute("role", "status");
          main.insertBefore(note, main.firstChild);
        }
        note.textContent = "Live updates paused (" + e.message + "); reload the page.";
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    var every = parseFloat(document.body.getAttribute("data-refresh") || "0");
    if (every > 0) { setInterval(refresh, Math.max(every, 2) * 1000); }
    window.addEventListener("resize", function () {
      Object.keys(charts).forEach(function (k) {
        var c = charts[k];
        if (c.plot && document.body.contains(c.el)) { c.plot.setSize({width: chartWidth(c.el), height: 220}); }
      });
    });
  });
})();
