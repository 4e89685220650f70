// holdgate dashboard: live countdowns, live queue (Server-Sent Events), votes without a page load.
// Plain JS, no build step. Without JS every form still works as an ordinary POST.
(function () {
  "use strict";
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function flash(text, isError) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.innerHTML = "";
    const p = document.createElement("p");
    p.className = isError ? "flash error" : "flash";
    p.textContent = text;
    box.appendChild(p);
  }

  function left(seconds) {
    if (seconds <= 0) return "expired";
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s left";
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-expires]").forEach((el) => {
      const seconds = (Date.parse(el.dataset.expires) - now) / 1000;
      el.textContent = left(seconds);
      el.classList.toggle("soon", seconds > 0 && seconds < 60);
    });
  }

  async function refreshQueue() {
    const box = document.getElementById("pending");
    if (!box) return;
    const focused = document.activeElement;
    const typing = focused && focused.name === "reason" && focused.value ? focused.closest("[data-decision]") : null;
    const response = await fetch(box.dataset.src, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (response.redirected || !response.ok) return;
    const html = await response.text();
    const keep = typing ? { id: typing.dataset.decision, value: focused.value } : null;
    box.innerHTML = html;
    if (keep) {  // do not lose a reason being typed when another decision changes
      const card = document.getElementById("decision-" + keep.id);
      const input = card && card.querySelector('input[name="reason"]');
      if (input) { input.value = keep.value; input.focus(); }
    }
    tick();
  }

  function onDecision(event) {
    let data = {};
    try { data = JSON.parse(event.data); } catch (e) { /* keep-alive */ }
    if (document.getElementById("pending")) {
      refreshQueue();
      return;
    }
    const story = document.querySelector(".story[data-decision]");
    if (story && (data.id === null || data.id === story.dataset.decision)) {
      const status = document.querySelector('[data-testid="status"]');
      if (data.status && data.status !== "changed" && status && status.textContent !== data.status) {
        window.location.reload();
      }
    }
  }

  function live() {
    if (!document.body.dataset.live || !window.EventSource) return;
    const source = new EventSource("/events");
    source.addEventListener("decision", onDecision);
    source.addEventListener("open", () => { if (document.getElementById("pending")) refreshQueue(); });
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.classList.contains("vote")) return;
    event.preventDefault();
    const button = event.submitter;
    const action = (button && button.formAction) || form.action;
    const body = new FormData(form);
    const response = await fetch(action, {
      method: "POST",
      body,
      headers: { Accept: "application/json", "X-CSRF-Token": csrf() },
      credentials: "same-origin",
    });
    let result = { ok: false, message: "the vote failed (" + response.status + ")" };
    try { result = await response.json(); } catch (e) { /* not JSON */ }
    flash(result.message || result.detail, !result.ok);
    if (result.ok) {
      if (document.getElementById("pending")) refreshQueue();
      else window.location.reload();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, 1000);
    live();
  });
})();
