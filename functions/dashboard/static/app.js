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
  // A job that is still running: reload its page every few seconds, at most for an hour.
  var main = document.getElementById("main");
  if (main && main.getAttribute("data-poll") === "1") {
    var polls = Number(sessionStorage.getItem("mimiry-polls") || "0");
    if (polls < 1200) {
      setTimeout(function () {
        sessionStorage.setItem("mimiry-polls", String(polls + 1));
        window.location.reload();
      }, 3000);
    }
  } else {
    sessionStorage.removeItem("mimiry-polls");
  }
});
