// opsmesh console: live updates over server-sent events. The page is rendered by the server;
// on a change to the incident shown (or any, on the list), the main element is re-fetched and
// swapped in place.
(function () {
  "use strict";
  var body = document.body;
  var current = body.getAttribute("data-incident");
  var live = document.getElementById("live");
  var refreshing = false;
  var again = false;

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    // With the query: the confirmation of a decision just made (`?decided=`) stays on the page.
    fetch(location.pathname + location.search, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        var active = document.activeElement;
        // Do not wipe a comment, a filter or a question the operator is typing.
        var typing = active && ((active.name === "comment" && active.value) ||
          (active.form && (active.form.id === "filters" || active.form.id === "ask-form")));
        if (fresh && main && !typing) {
          main.replaceWith(fresh);
          body.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  if (!window.EventSource || !live) return;
  var source = new EventSource("/console/events");
  var opened = false;
  source.addEventListener("open", function () {
    live.className = "live on";
    body.setAttribute("data-live", "on");
    // Changes between rendering the page (or losing the stream) and this subscription were
    // not sent to it: catch up once.
    if (opened || current) refresh();
    opened = true;
  });
  source.addEventListener("error", function () {
    live.className = "live off";
    body.setAttribute("data-live", "off");
  });
  source.addEventListener("update", function (event) {
    var update = {};
    try { update = JSON.parse(event.data); } catch (e) { /* refresh anyway */ }
    // An incident page follows its incident; a question's investigation is not about it. A
    // lag signal names nothing: refresh.
    var elsewhere = update.incident_id ? update.incident_id !== current : !!update.investigation_id;
    if (current && elsewhere) return;
    refresh();
  });
})();
