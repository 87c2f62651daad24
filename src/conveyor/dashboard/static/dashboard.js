/* conveyor dashboard: the little that needs script. Pages work without it (for reading). */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  /* -- job page: progress, log lines and state changes from the job's SSE stream -------- */
  function setProgress(data) {
    var bar = document.getElementById("progress-bar");
    var pct = document.getElementById("progress-pct");
    var msg = document.getElementById("progress-message");
    if (!bar) return;
    if (data.total) {
      var value = Math.max(0, Math.min(100, Math.floor((data.current * 100) / data.total)));
      bar.value = value;
      bar.setAttribute("value", String(value));
      if (pct) pct.textContent = value + "%";
    } else if (pct) {
      pct.textContent = String(data.current);
    }
    if (msg) msg.textContent = data.message || "";
  }

  function addLog(event) {
    var list = document.getElementById("log-lines");
    if (!list) return;
    var empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    var item = document.createElement("li");
    var time = document.createElement("time");
    time.textContent = event.at.replace("T", " ").replace("+00:00", "Z");
    var text = document.createElement("span");
    text.textContent = String(event.data.line);
    item.append(time, " ", text);
    list.append(item);
    list.scrollTop = list.scrollHeight;
  }

  /* Fetch a fragment and swap each of its top-level elements for the page's one with its id. */
  function swapLive(url) {
    return fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var parsed = document.createElement("template");
        parsed.innerHTML = html;
        // A copy: replaceWith() moves each node out of the live `children` collection.
        Array.from(parsed.content.children).forEach(function (fresh) {
          var old = fresh.id && document.getElementById(fresh.id);
          if (old) old.replaceWith(fresh);
        });
      });
  }

  function follow(root) {
    var url = root.dataset.stream;
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    var refreshing = null;
    function refresh() {
      if (refreshing) return;
      refreshing = swapLive(root.dataset.live).finally(function () { refreshing = null; });
    }
    source.addEventListener("progress", function (m) { setProgress(JSON.parse(m.data).data); });
    source.addEventListener("log", function (m) { addLog(JSON.parse(m.data)); });
    source.addEventListener("state", function (m) {
      var state = JSON.parse(m.data).data.state;
      refresh();
      if (state === "succeeded" || state === "failed" || state === "cancelled") source.close();
    });
  }

  /* -- workflow page: each step's state on the graph and in the table, from the SSE stream -- */
  function setClassState(el, state) {
    el.setAttribute("class", el.getAttribute("class").replace(/\bs-[a-z_]+/, "s-" + state));
  }

  function followWorkflow(root) {
    var url = root.dataset.stream;
    if (!url || !window.EventSource || root.dataset.final) return;
    var source = new EventSource(url);
    var last = null;
    source.addEventListener("step", function (m) {
      var data = JSON.parse(m.data);
      var node = document.getElementById("node-" + data.step);
      if (node) {
        setClassState(node, data.state);
        var label = node.querySelector(".node-state");
        if (label) label.textContent = data.state;
        var title = node.querySelector("title");
        if (title) title.textContent = title.textContent.replace(/: [a-z_]+$/, ": " + data.state);
      }
      var badge = document.querySelector('[data-step-state="' + data.step + '"]');
      if (badge) { badge.textContent = data.state; setClassState(badge, data.state); }
      var attempt = document.querySelector('[data-step-attempt="' + data.step + '"]');
      if (attempt) attempt.textContent = String(data.attempt);
    });
    source.addEventListener("workflow", function (m) {
      var data = JSON.parse(m.data);
      var bar = document.getElementById("workflow-progress");
      if (bar) { bar.value = data.progress.done; bar.setAttribute("value", String(data.progress.done)); }
      var done = document.getElementById("workflow-done");
      if (done) done.textContent = data.progress.done + "/" + data.progress.total;
      if (data.state !== last) {
        last = data.state;
        swapLive(root.dataset.live);
      }
      if (data.state === "succeeded" || data.state === "failed" || data.state === "cancelled") source.close();
    });
  }

  /* -- copy buttons, select-all, JSON fields ------------------------------------------- */
  function copy(button) {
    var target = document.querySelector(button.dataset.copy);
    if (!target) return;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard) navigator.clipboard.writeText(target.textContent).then(done);
  }

  ready(function () {
    var job = document.getElementById("job");
    if (job) follow(job);
    var workflow = document.getElementById("workflow");
    if (workflow) followWorkflow(workflow);
    document.querySelectorAll("[data-copy]").forEach(function (b) {
      b.hidden = false;
      b.addEventListener("click", function () { copy(b); });
    });
    var all = document.getElementById("select-all");
    if (all) {
      all.hidden = false;
      all.addEventListener("change", function () {
        document.querySelectorAll('input[name="ids"]').forEach(function (box) { box.checked = all.checked; });
      });
    }
    document.querySelectorAll("textarea[data-json]").forEach(function (area) {
      area.addEventListener("input", function () {
        var text = area.value.trim();
        try {
          if (text) JSON.parse(text);
          area.setCustomValidity("");
        } catch (e) {
          area.setCustomValidity("Not valid JSON: " + e.message);
        }
      });
    });
  });
})();
