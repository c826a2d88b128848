// The status page's live refresh: every few seconds the server-rendered
// part of the page (/fragment, escaped by the server's templates) is
// fetched and swapped in. No framework, no build step; allowed by the
// page's Content-Security-Policy as a file of the hub (script-src 'self').
"use strict";
(function () {
  var EVERY_MS = 3000;
  var lang = document.documentElement.lang || "en";
  function schedule() {
    window.setTimeout(refresh, EVERY_MS);
  }
  function stale(on) {
    var live = document.getElementById("live");
    if (live) {
      live.classList.toggle("stale", on);
    }
  }
  function refresh() {
    fetch("/fragment?lang=" + encodeURIComponent(lang), {
      cache: "no-store",
      credentials: "same-origin",
    })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var next = doc.getElementById("live");
        var live = document.getElementById("live");
        if (next && live) {
          live.replaceWith(document.adoptNode(next));
        }
      })
      .catch(function () {
        stale(true);
      })
      .then(schedule);
  }
  schedule();
})();
