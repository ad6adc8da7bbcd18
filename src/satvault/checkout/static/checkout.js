/* satvault checkout: countdown, tabs, copy buttons and live status.
 *
 * Everything it says comes from the page's config (#checkout-config): the status document,
 * the URLs and the messages, already translated. Live updates use the event stream when the
 * server has one and poll the status URL every two seconds when it does not (or while the
 * stream is down); an event only says "look again", the status URL is the truth.
 */
(function () {
  "use strict";

  const root = document.getElementById("checkout");
  const cfgNode = document.getElementById("checkout-config");
  if (!root || !cfgNode) return;
  const cfg = JSON.parse(cfgNode.textContent);
  const M = cfg.messages;
  const OPEN = ["waiting", "partial"];
  // States that never change again (the page stops listening). "paid" is not one: a reorg
  // can take an on-chain payment away, and the page keeps a slow poll to show it.
  const DONE = cfg.final_states || ["invalid"];
  const $ = (sel) => root.querySelector(sel);
  const $$ = (sel) => Array.from(root.querySelectorAll(sel));

  let status = cfg.status;
  let clockSkew = Date.parse(status.now) - Date.now();
  let localExpired = false;
  let redirectTimer = null;
  const fullTime = Math.max(1, cfg.duration_s || secondsLeft());

  function t(key, params) {
    const text = M[key] || key;
    return text.replace(/%\((\w+)\)s/g, (m, name) =>
      params && name in params ? String(params[name]) : m);
  }

  /* BTC with eight decimals in the page's language, from integer satoshis (no floats). */
  const numbers = new Intl.NumberFormat(cfg.lang);
  const decimalSign = (numbers.formatToParts(1.5).find((p) => p.type === "decimal") ||
    { value: "." }).value;
  function btc(sat) {
    const whole = Math.floor(sat / 1e8);
    const frac = String(sat - whole * 1e8).padStart(8, "0");
    return numbers.format(whole) + decimalSign + frac + " BTC";
  }
  function plainBtc(sat) {
    const whole = Math.floor(sat / 1e8);
    return whole + "." + String(sat - whole * 1e8).padStart(8, "0");
  }

  function secondsLeft() {
    return Math.floor((Date.parse(status.expires_at) - (Date.now() + clockSkew)) / 1000);
  }
  function duration(s) {
    s = Math.max(0, s);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + pad(m) : pad(m)) + ":" + pad(s % 60);
  }

  /* ---------------------------------------------------------------- status rendering */

  function stateOf(s) {
    return localExpired && OPEN.includes(s.state) ? "expired" : s.state;
  }

  function detailOf(state, s) {
    if (state === "partial") {
      return t(state + ".detail", { amount: btc(Math.ceil(s.due_msat / 1000)) });
    }
    if (state === "received" || state === "confirming") {
      const c = s.confirmations;
      return c ? t(state + ".detail", { n: c.count, total: c.required }) : t("no_count");
    }
    return t(state + ".detail");
  }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function render() {
    const state = stateOf(status);
    root.dataset.state = state;
    setText($("[data-role=title]"), t(state + ".title"));
    setText($("[data-role=detail]"), detailOf(state, status));
    const open = OPEN.includes(state);
    $("[data-role=note]").hidden = !(state === "received" || state === "confirming");
    $("[data-role=countdown]").hidden = !open;
    $("[data-role=pay]").hidden = !open;
    const back = $("[data-role=back]");
    back.hidden = open || !safeUrl(status.redirect_url);
    if (open) renderDestinations(status.destinations);
    if (state === "paid") startRedirect(); else stopRedirect();
    tick();
  }

  function renderDestinations(d) {
    const data = { unified: d.bip21, onchain: d.onchain_uri, lightning: d.bolt11 };
    const links = { unified: d.bip21, onchain: d.onchain_uri, lightning: d.lightning_uri };
    $$("img[data-qr]").forEach((img) => {
      const kind = img.dataset.qr;
      const want = cfg.qr_url + kind + ".svg?v=" + d.version;
      if (data[kind] && img.getAttribute("src") !== want) img.setAttribute("src", want);
    });
    $$("a[data-link]").forEach((a) => {
      const href = links[a.dataset.link];
      if (href) a.setAttribute("href", href);
    });
    setValue("payment-link", d.bip21);
    setValue("address", d.address);
    setValue("amount", d.onchain_amount_sat ? plainBtc(d.onchain_amount_sat) : "");
    setValue("bolt11", d.bolt11);
    // A way to pay that went away (no Lightning invoice any more, say) loses its tab.
    const tabs = $$("[role=tab]");
    tabs.forEach((tab) => { tab.hidden = !data[tab.dataset.tab]; });
    const selected = tabs.find((tab) => tab.getAttribute("aria-selected") === "true");
    if (selected && selected.hidden) {
      const first = tabs.find((tab) => !tab.hidden);
      if (first) selectTab(first, false);
    }
  }

  function setValue(id, value) {
    const input = document.getElementById(id);
    if (input && input.value !== (value || "")) input.value = value || "";
  }

  function safeUrl(url) {
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
  }

  function startRedirect() {
    const url = safeUrl(status.redirect_url);
    if (!url || redirectTimer) return;
    const note = $("[data-role=redirecting]");
    let left = cfg.redirect_seconds;
    const show = () => { note.textContent = t("returning", { seconds: left }); };
    note.hidden = false;
    show();
    announce(note.textContent);
    redirectTimer = setInterval(() => {
      left -= 1;
      if (left <= 0) {
        clearInterval(redirectTimer);
        window.location.assign(url);
      } else {
        show();
      }
    }, 1000);
  }

  function stopRedirect() {  // a reversal while counting down: stay on the page
    if (!redirectTimer) return;
    clearInterval(redirectTimer);
    redirectTimer = null;
    $("[data-role=redirecting]").hidden = true;
  }

  /* --------------------------------------------------------------------- countdown */

  function tick() {
    const box = $("[data-role=countdown]");
    if (box.hidden) return;
    const left = secondsLeft();
    setText($("[data-role=countdown-text]"), t("expires_in", { time: duration(left) }));
    const bar = $("[data-role=timebar]");
    if (bar) {
      bar.style.width = Math.max(0, Math.min(100, (100 * left) / fullTime)) + "%";
      if (!bar.classList.contains("live")) {
        void bar.offsetWidth; // the first width is set at once, later ones glide
        bar.classList.add("live");
      }
    }
    box.classList.toggle("soon", left < 60);
    if (left <= 0 && !localExpired) {
      localExpired = true; // the server confirms at its next status
      render();
      refresh();
    }
  }
  setInterval(tick, 1000);

  /* -------------------------------------------------------------------------- tabs */

  function selectTab(tab, focus) {
    $$("[role=tab]").forEach((other) => {
      const on = other === tab;
      other.setAttribute("aria-selected", on ? "true" : "false");
      other.tabIndex = on ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !on;
    });
    if (focus) tab.focus();
  }
  $$("[role=tab]").forEach((tab) => {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (e) => {
      const tabs = $$("[role=tab]").filter((x) => !x.hidden);
      const i = tabs.indexOf(tab);
      let next = null;
      if (e.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
      else if (e.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
      else if (e.key === "Home") next = tabs[0];
      else if (e.key === "End") next = tabs[tabs.length - 1];
      if (next) {
        e.preventDefault();
        selectTab(next, true);
      }
    });
  });

  /* ------------------------------------------------------------------------- copy */

  const announcer = $("[data-role=announce]");
  function announce(text) {
    announcer.textContent = "";
    setTimeout(() => { announcer.textContent = text; }, 50);
  }

  async function copyText(input) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(input.value);
      return;
    }
    // Plain-HTTP pages have no async clipboard: select the field and use the old command.
    input.focus();
    input.select();
    if (!document.execCommand("copy")) throw new Error("copy refused");
  }

  $$("button[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      if (!input || !input.value) return;
      let ok = true;
      try {
        await copyText(input);
      } catch (err) {
        ok = false;
        input.focus();
        input.select();
      }
      button.textContent = ok ? t("copied") : t("copy_failed");
      button.classList.toggle("done", ok);
      button.classList.toggle("failed", !ok);
      announce(button.textContent);
      clearTimeout(button._reset);
      button._reset = setTimeout(() => {
        button.textContent = t("copy");
        button.classList.remove("done", "failed");
      }, 2000);
    });
  });

  /* ------------------------------------------------------------------ live updates */

  let stream = null;
  let pollTimer = null;
  let inFlight = false;
  let again = false;

  function streamOpen() {
    return stream !== null && stream.readyState === 1;
  }

  function schedule() {
    clearTimeout(pollTimer);
    if (DONE.includes(status.state)) return;
    // With the stream up, events trigger updates and a slow poll still catches confirmations
    // (they have no event of their own). An expired invoice changes only if a late payment
    // arrives: a slow poll is enough for it too.
    const busy = OPEN.includes(status.state) || status.state === "received" ||
      status.state === "confirming";
    const wait = streamOpen() || !busy ? cfg.poll_ms * 5 : cfg.poll_ms;
    pollTimer = setTimeout(refresh, wait);
  }

  const offline = document.querySelector("[data-role=offline]");
  function setOffline(off) {
    if (offline) offline.hidden = !off;
  }

  async function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    try {
      const r = await fetch(cfg.status_url, {
        cache: "no-store", headers: { Accept: "application/json" },
      });
      if (r.ok) {
        const next = await r.json();
        clockSkew = Date.parse(next.now) - Date.now();
        if (!OPEN.includes(next.state) || secondsLeft() > 0) localExpired = false;
        status = next;
        render();
        setOffline(false);
      } else {
        setOffline(true);
      }
    } catch (err) {
      setOffline(true);
    } finally {
      inFlight = false;
      if (again) { again = false; refresh(); } else { schedule(); }
      // Paid or over: the stream is let go (a slow poll is enough for a reversal).
      const quiet = DONE.includes(status.state) || status.state === "paid";
      if (quiet && stream) { stream.close(); stream = null; }
    }
  }

  function connect() {
    if (!("EventSource" in window) || DONE.includes(status.state) || status.state === "paid") {
      return;
    }
    try {
      stream = new EventSource(cfg.events_url);
    } catch (err) {
      stream = null;
      return;
    }
    cfg.events.forEach((type) => stream.addEventListener(type, () => refresh()));
    stream.addEventListener("open", () => { setOffline(false); schedule(); });
    stream.addEventListener("error", () => {
      // CLOSED: the server has no stream (404) or refused it; poll from now on.
      // CONNECTING: the browser retries by itself; poll meanwhile.
      if (stream && stream.readyState === 2) stream = null;
      schedule();
    });
  }

  render();
  connect();
  schedule();
})();
