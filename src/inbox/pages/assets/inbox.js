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
  // Actions on an alert: JSON posted to the actions API, same origin (a cross-site
  // form cannot send JSON, and the API refuses anything else); the answer re-renders
  // the alert's state, an error is shown as the API words it.
  document.querySelectorAll("div.act[data-alert-id]").forEach(function (box) {
    box.querySelectorAll("button[data-action]").forEach(function (b) {
      b.addEventListener("click", function () { act(box, b.getAttribute("data-action")); });
    });
  });
  // Times also in the reader's own time zone, on hover.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d.getTime())) { t.title = d.toLocaleString(); }
  });
});


function showError(box, msg) {
  var p = box.querySelector(".act-error");
  p.textContent = msg;
  p.hidden = !msg;
}

function day(iso) { return iso ? iso.slice(0, 10) : "-"; }

// The state line as the server renders it (textContent only: no markup from data).
function stateText(st, reason) {
  var why = reason ? ": \u201c" + reason + "\u201d" : "";
  if (!st) { return ["open", "Open (reopened)"]; }
  if (st.state === "acknowledged") { return ["acknowledged", "Acknowledged by " + st.by + " just now"]; }
  if (st.state === "snoozed") { return ["snoozed", "Snoozed until " + day(st.until) + " by " + st.by + why]; }
  if (st.state === "not_a_risk") { return ["not_a_risk", "Not a risk, says " + st.by + " (quiet until " + day(st.until) + ")" + why]; }
  return ["open", "Open"];
}

function act(box, action) {
  var body = { alert_id: box.getAttribute("data-alert-id"), action: action };
  var reason = box.querySelector("input[name=reason]");
  var until = box.querySelector("input[name=until]");
  if (action === "snooze" || action === "not_a_risk") {
    body.reason = reason.value.trim();
    body.until = until.value;
    if (!body.reason) { showError(box, "A reason is required to " + action.replace(/_/g, " ") + "."); reason.focus(); return; }
    if (!body.until) { showError(box, "Pick the date until which the alert stays quiet."); until.focus(); return; }
  }
  showError(box, "");
  var buttons = box.querySelectorAll("button");
  buttons.forEach(function (b) { b.disabled = true; });
  fetch("/api/v1/actions", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Accept": "application/json" },
    body: JSON.stringify(body)
  }).then(function (r) {
    return r.json().catch(function () { return {}; }).then(function (j) { return [r, j]; });
  }).then(function (rj) {
    var r = rj[0], j = rj[1];
    if (r.status !== 201) {
      showError(box, "Not recorded (" + r.status + "): " + (j.error || r.statusText || "the server refused it"));
      return;
    }
    var st = j.state;
    if (st && j.until) { st.until = j.until; }
    var t = stateText(st, j.reason);
    var line = box.parentNode.querySelector(".action-state");
    if (line) {
      line.className = "action-state " + t[0];
      line.setAttribute("data-state", t[0]);
      line.textContent = t[1];
    }
    // A box may hold only a Reopen (of the alert that quiets this one).
    var ack = box.querySelector("button.ack");
    if (ack) { ack.hidden = !!st && st.state === "acknowledged"; }
    var reopen = box.querySelector("button.reopen");
    // A Reopen of the alert that quiets this one has done its work once it succeeded.
    if (reopen) { reopen.hidden = ack ? !st : true; }
    if (reason) { reason.value = ""; }
    var list = document.querySelector("ol.actions");
    if (list) {
      var li = document.createElement("li");
      li.className = j.action;
      li.textContent = "just now " + j.by + " " + j.action.replace(/_/g, " ") + " " + j.alert_id + (j.reason ? ": " + j.reason : "");
      list.insertBefore(li, list.firstChild);
    }
  }).catch(function (e) {
    showError(box, "Not recorded: the server could not be reached (" + e.message + ").");
  }).finally(function () {
    buttons.forEach(function (b) { b.disabled = false; });
  });
}
