/* Draws the charts from their JSON blocks and makes tables sortable. No network, no inline script. */
(function () {
  "use strict";

  function drawCharts() {
    var blocks = document.querySelectorAll('script[type="application/json"][data-chart]');
    blocks.forEach(function (block) {
      var target = document.getElementById(block.getAttribute("data-chart"));
      if (!target) { return; }
      if (typeof window.Plotly === "undefined") {
        target.textContent = "Chart unavailable: plotly.min.js is missing next to this page.";
        target.className += " chart-error";
        return;
      }
      var spec = JSON.parse(block.textContent);
      var config = Object.assign({}, spec.config, {modeBarButtons: [[pngButton(target)]]});
      if (spec.layout.height) { target.style.minHeight = spec.layout.height + "px"; }  // no blank band under short charts
      window.Plotly.newPlot(target, spec.data, spec.layout, config);
    });
  }

  function plotText(text) {  // Plotly renders a little HTML in titles; campaign ids are untrusted
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function wrapWords(text, width) {
    var lines = [], line = "";
    text.split(/\s+/).forEach(function (word) {
      if (line && (line + " " + word).length > width) { lines.push(line); line = word; }
      else { line = line ? line + " " + word : word; }
    });
    return line ? lines.concat([line]) : lines;
  }

  /* The card's heading (with the page's, e.g. the campaign) and its explanation, which the figure leaves to the page. */
  function chartCaption(target, width) {
    var card = target.closest("section");
    var text = function (selector, root) {
      var el = (root || document).querySelector(selector);
      return el ? el.textContent.replace(/\s+/g, " ").trim() : "";
    };
    var heading = card ? text("h2", card) : "", page = text("h1");
    var title = heading && page ? heading + " \u2014 " + page : heading || page, fits = Math.floor(width / 8.8);
    return {title: title.length > fits ? title.slice(0, fits - 1) + "\u2026" : title,
            lines: wrapWords(card ? text("p.sub", card) : "", Math.max(40, Math.floor(width / 6.6)))};
  }

  function pngName(target) {
    var page = decodeURIComponent(location.pathname.split("/").pop() || "dashboard").replace(/\.html?$/, "");
    return (page + "-" + target.id.replace(/^chart-/, "")).replace(/[^A-Za-z0-9._-]+/g, "_") + ".png";
  }

  /* A slide-ready PNG (2x) of the chart as drawn, titled, saved under the page and chart name. */
  function pngButton(target) {
    return {
      name: "download-png", title: "Download PNG", icon: window.Plotly.Icons.camera,
      click: function (gd) {
        var full = gd._fullLayout, caption = chartCaption(target, full.width);
        var extra = 40 + 16 * caption.lines.length;
        var margin = Object.assign({}, gd.layout.margin, {t: full.margin.t + extra});
        var layout = Object.assign({}, gd.layout, {
          margin: margin, width: full.width, height: full.height + extra,
          title: {text: plotText(caption.title), x: 0.01, xanchor: "left", y: 0.98, yanchor: "top", font: {size: 15},
                  subtitle: {text: caption.lines.map(plotText).join("<br>"), font: {size: 11, color: "#5b6470"}}}});
        return window.Plotly.toImage({data: gd.data, layout: layout}, {format: "png", scale: 2})
          .then(function (url) {
            var link = document.createElement("a");
            link.href = url;
            link.download = pngName(target);
            document.body.appendChild(link);
            link.click();
            link.remove();
          });
      }
    };
  }

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (!numeric) { return raw.toLowerCase(); }
    return raw === "" ? NaN : parseFloat(raw);
  }

  function sortBy(table, index, numeric, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      if (numeric) {  // empty values always last
        if (isNaN(x) && isNaN(y)) { return 0; }
        if (isNaN(x)) { return 1; }
        if (isNaN(y)) { return -1; }
        return descending ? y - x : x - y;
      }
      return descending ? y.localeCompare(x) : x.localeCompare(y);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function makeSortable(table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, index) {
      th.setAttribute("tabindex", "0");
      var activate = function () {
        var descending = th.getAttribute("aria-sort") === "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        sortBy(table, index, th.getAttribute("data-type") === "num", descending);
      };
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); activate(); } });
    });
  }

  function makeFilter(input) {
    var table = document.getElementById(input.getAttribute("data-filter-table"));
    input.addEventListener("input", function () {
      var needle = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.hidden = needle !== "" && row.cells[0].textContent.toLowerCase().indexOf(needle) === -1;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    document.querySelectorAll("input[data-filter-table]").forEach(makeFilter);
    drawCharts();
  });
})();
