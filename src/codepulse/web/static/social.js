// codepulse header bell and leaderboard pickers. The bell follows the page's notification stream
// (GET /notifications/stream: the notifications slice's Server-Sent Events, authenticated by the
// session cookie, which EventSource sends): `ready` gives the unread count, each new unread
// `notification` adds one, and `unread_count` sets the count as it is now (it follows new
// notifications, and comes when some are read or deleted in another tab or through the API).
// No inline script: the stream's URL is in the bell's data-bell-stream.
(function () {
  "use strict";

  function followBell(bell) {
    var url = bell.getAttribute("data-bell-stream");
    var badge = bell.querySelector(".bell-count");
    if (!url || !badge || typeof EventSource === "undefined") return;
    var count = 0;
    var seen = {};

    function show() {
      badge.textContent = count > 99 ? "99+" : String(count);
      badge.hidden = count === 0;
      bell.setAttribute("data-count", String(count));
      bell.setAttribute("aria-label", count ? "Notifications, " + count + " unread" : "Notifications");
    }

    var source = new EventSource(url);
    source.addEventListener("ready", function (event) {
      count = JSON.parse(event.data).unread_count || 0;
      seen = {};
      show();
    });
    source.addEventListener("notification", function (event) {
      var item = JSON.parse(event.data);
      if (seen[item.id]) return;
      seen[item.id] = true;
      if (!item.read_at) {
        count += 1;
        show();
      }
    });
    source.addEventListener("unread_count", function (event) {
      count = JSON.parse(event.data).unread_count || 0;
      show();
    });
    source.addEventListener("signed_out", function () { source.close(); });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var bell = document.querySelector("a.bell[data-bell-stream]");
    if (bell) followBell(bell);
  });

  // A picker submits its form when it changes (the button stays for keyboards and no-JS).
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-autosubmit]") && target.form) target.form.submit();
  });
})();
