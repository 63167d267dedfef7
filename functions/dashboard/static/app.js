// Mimiry dashboard: progressive enhancement only. Every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons: shown only when the clipboard is usable.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      }, function () {
        button.textContent = "Select and copy the key";
      });
    });
  });
  // A job that is still running: follow its log with long polls, appending the new lines,
  // and reload the page when its status changes (the timeline and details are then redrawn).
  // Without a log to follow (or when the follower fails), reload every few seconds.
  var main = document.getElementById("main");
  var log = document.getElementById("job-log");
  var statusEl = document.getElementById("job-status");
  // The log box opens at its end: the latest lines are what a reader came for.
  if (log) log.scrollTop = log.scrollHeight;
  function reloadLater(ms) {
    var polls = Number(sessionStorage.getItem("mimiry-polls") || "0");
    if (polls >= 1200) return;
    setTimeout(function () {
      sessionStorage.setItem("mimiry-polls", String(polls + 1));
      window.location.reload();
    }, ms);
  }
  if (main && main.getAttribute("data-poll") === "1") {
    if (log && log.getAttribute("data-follow") === "1" && window.fetch && window.JSON) {
      followLog(log, statusEl ? statusEl.getAttribute("data-status") : "");
    } else {
      reloadLater(3000);
    }
  } else {
    sessionStorage.removeItem("mimiry-polls");
  }
  function followLog(log, status) {
    var live = document.getElementById("log-live");
    var empty = document.getElementById("job-log-empty");
    var url = "/dashboard/jobs/" + encodeURIComponent(log.getAttribute("data-job")) + "/logs";
    var started = Date.now();
    if (live) live.hidden = false;
    // Bounded: one request at a time, each up to 10 s, for at most an hour on this page.
    function poll() {
      if (Date.now() - started > 3600 * 1000) return;
      var after = log.getAttribute("data-after");
      fetch(url + "?wait=10&after=" + encodeURIComponent(after), {
        credentials: "same-origin",
        headers: { Accept: "application/json" }
      }).then(function (r) {
        if (!r.ok) throw new Error("status " + r.status);
        return r.json();
      }).then(function (answer) {
        if (answer.lines.length) {
          var atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
          var text = answer.lines.join("\n");
          log.textContent += (log.textContent ? "\n" : "") + text;
          log.hidden = false;
          if (empty) empty.hidden = true;
          if (atEnd) log.scrollTop = log.scrollHeight;
        }
        log.setAttribute("data-after", answer.next_cursor);
        if (answer.status !== status || answer.complete) {
          window.location.reload();
          return;
        }
        poll();
      }).catch(function () {
        if (live) live.hidden = true;
        reloadLater(5000);
      });
    }
    poll();
  }
});
