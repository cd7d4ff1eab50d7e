// hubd centre: reload the overview when the live stream says something changed.
(function () {
  "use strict";
  var badge = document.getElementById("live");
  if (!window.EventSource || !badge) return;
  var pending = null;
  var source = new EventSource("/api/stream");
  source.onopen = function () { badge.textContent = "live"; badge.className = "live on"; };
  source.onerror = function () { badge.textContent = "offline"; badge.className = "live off"; };
  source.onmessage = function () {
    if (pending) return;
    pending = setTimeout(function () { window.location.reload(); }, 500);
  };
})();
