// The merchant overview's live balances: follow the wallet's event stream (same origin,
// the session cookie) and, when the balances moved, fetch the balances fragment again.
// Without this script the page still shows the balances as of its loading.
(function () {
  var box = document.querySelector("[data-live-events]");
  if (!box || !window.EventSource) { return; }
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(box.getAttribute("data-live-fragment"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { box.innerHTML = html; } })
      .finally(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var source = new EventSource(box.getAttribute("data-live-events"));
  source.addEventListener("wallet.balance_changed", refresh);
  source.addEventListener("message", refresh);
})();
