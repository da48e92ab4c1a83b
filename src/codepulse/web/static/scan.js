// codepulse scan page: follows a queued or running scan through the page's event stream
// (GET /orgs/{slug}/scans/{id}/events: the scans slice's Server-Sent Events, authenticated by the
// session cookie, which EventSource sends) and reloads the page once the scan has finished, so
// the findings table and the actions match the final state. No inline script: the stream's URL
// is in the panel's data-stream attribute.
(function () {
  "use strict";

  function follow(panel) {
    var url = panel.getAttribute("data-stream");
    if (!url || typeof EventSource === "undefined") return;
    var note = panel.querySelector("[data-role=live-note]");
    if (note) note.hidden = false;
    var source = new EventSource(url);

    function set(role, text) {
      var node = panel.querySelector("[data-role=" + role + "]");
      if (node) node.textContent = text;
    }

    function show(scan) {
      var progress = scan.progress || {};
      panel.setAttribute("data-status", scan.status);
      var badge = panel.querySelector("[data-role=status] .status");
      if (badge) {
        badge.textContent = scan.status.replace("_", " ");
        badge.className = "status status-" + scan.status;
        badge.setAttribute("data-status", scan.status);
      }
      var bar = panel.querySelector("[data-role=bar]");
      if (bar) bar.value = progress.percent || 0;
      set("phase", progress.phase || "");
      set("percent", String(progress.percent || 0));
      set("files", (progress.files_done || 0) + " / " + (progress.files_total || 0));
    }

    source.addEventListener("progress", function (event) { show(JSON.parse(event.data)); });
    source.addEventListener("status", function (event) {
      source.close();
      show(JSON.parse(event.data));
      panel.setAttribute("data-finished", "true");
      window.location.reload();
    });
    source.addEventListener("signed_out", function () {
      source.close();
      window.location.reload();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("scan-progress");
    if (panel) follow(panel);
  });
})();
