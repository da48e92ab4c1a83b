// codepulse dashboard: the CSRF header of htmx requests, typed confirmations, and the trends chart (uPlot) drawn
// from the JSON in the chart element's data-chart attribute. No inline scripts
// anywhere: the pages' CSP allows scripts from this origin only.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every htmx request carries the page's CSRF token (checked on state-changing ones).
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // A destructive form's button waits until the confirmation is typed (data-confirm="<slug>");
  // the server checks it again, and without JavaScript the button is always enabled.
  function syncConfirm(input) {
    var button = input.form && input.form.querySelector("button[type=submit]");
    if (button) button.disabled = input.value.trim().toLowerCase() !== input.getAttribute("data-confirm");
  }
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("input[data-confirm]")) syncConfirm(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-confirm]").forEach(syncConfirm);
  });

  var charts = [];

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  function compact(value) {
    if (value == null) return "";
    var units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(value) >= units[i][0]) return (value / units[i][0]).toFixed(1).replace(/\.0$/, "") + units[i][1];
    }
    return String(Math.round(value));
  }

  function usd(value) {
    return value == null ? "" : "$" + value.toFixed(value < 10 ? 2 : 0);
  }

  function stacked(data) {
    // Cumulative series so the areas stack: input, + output, + cache writes, + cache reads.
    var layers = [data.input, data.output, data.cache_write, data.cache_read];
    var sums = [];
    var running = data.x.map(function () { return 0; });
    layers.forEach(function (layer) {
      running = running.map(function (value, i) { return value + layer[i]; });
      sums.push(running.slice());
    });
    return sums;
  }

  function drawChart(container) {
    var source = container.getAttribute("data-chart");
    if (!source || typeof uPlot === "undefined") return;
    var data = JSON.parse(source);
    var sums = stacked(data);
    var width = Math.max(280, container.clientWidth);
    var height = width < 500 ? 240 : 300;
    var grid = { stroke: color("--border"), width: 1 };
    var axisColor = color("--muted");
    function series(label, name, index) {
      return {
        label: label,
        stroke: color(name),
        fill: color(name) + "33",
        width: 1.5,
        value: function (u, v, s, i) { return i == null ? "" : compact(layersOf(index, i)); },
      };
    }
    function layersOf(index, i) {
      var keys = ["input", "output", "cache_write", "cache_read"];
      return data[keys[index]][i];
    }
    var options = {
      width: width,
      height: height,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, cost: { auto: true } },
      legend: { live: true },
      series: [
        { label: data.granularity === "week" ? "Week of" : "Day", value: "{YYYY}-{MM}-{DD}" },
        series("Cache reads", "--series-4", 3),
        series("Cache writes", "--series-3", 2),
        series("Output", "--series-2", 1),
        series("Input", "--series-1", 0),
        { label: "Cost", scale: "cost", stroke: color("--series-cost"), width: 2, dash: [4, 3],
          value: function (u, v) { return usd(v); } },
      ],
      axes: [
        { stroke: axisColor, grid: grid, ticks: grid },
        { stroke: axisColor, grid: grid, ticks: grid, size: 56, values: function (u, ticks) { return ticks.map(compact); } },
        { scale: "cost", side: 1, stroke: axisColor, grid: { show: false }, size: 56,
          values: function (u, ticks) { return ticks.map(usd); } },
      ],
    };
    var plotted = [data.x, sums[3], sums[2], sums[1], sums[0], data.cost];
    container.textContent = "";
    charts.push({ plot: new uPlot(options, plotted, container), container: container });
  }

  function drawAll(root) {
    charts = charts.filter(function (entry) {
      if (document.body.contains(entry.container)) return true;
      entry.plot.destroy();
      return false;
    });
    var container = (root || document).querySelector("#trends-chart");
    if (container && !container.querySelector(".uplot")) drawChart(container);
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (entry) {
        var width = Math.max(280, entry.container.clientWidth);
        entry.plot.setSize({ width: width, height: width < 500 ? 240 : 300 });
      });
    }, 100);
  });

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  // The range or granularity picker swapped the chart's section in.
  document.addEventListener("htmx:afterSettle", function () { drawAll(document); });
})();
