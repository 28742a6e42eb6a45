// churnwatch inbox: small progressive enhancement; every page works without it.
// Served from the binary (/inbox/assets/inbox.js); the CSP allows no inline script.
"use strict";
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", function () {
  // Filters apply as soon as one changes (the button is the no-script way).
  var form = document.querySelector("form.filters");
  if (form) {
    form.querySelectorAll("select, input[type=checkbox]").forEach(function (el) {
      el.addEventListener("change", function () { form.submit(); });
    });
  }
  // A whole row opens its account.
  document.querySelectorAll("tr.account[data-href]").forEach(function (row) {
    row.addEventListener("click", function (ev) {
      if (ev.target.closest("a")) { return; }
      var href = row.getAttribute("data-href");
      if (href && href.indexOf("/inbox/accounts/") === 0) { window.location.assign(href); }
    });
  });
  // Times also in the reader's own time zone, on hover.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d.getTime())) { t.title = d.toLocaleString(); }
  });
});
