// lstm-bench report: sortable tables, expandable rows, filters by model/task/experiment, and plotly
// charts drawn from the JSON beside each chart (drawn when they scroll into view, all of them on print).
(function () {
  "use strict";

  // ---- sorting: click a header; a row's detail row moves with it; missing values sort last ----
  function sortKey(td) {
    const v = td ? td.dataset.v : undefined;
    if (v === undefined || v === "") return null;
    const n = Number(v);
    return Number.isNaN(n) ? v.toLowerCase() : n;
  }
  function compare(x, y) {
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  function sortTable(th) {
    const table = th.closest("table"), col = th.cellIndex, body = table.tBodies[0];
    const groups = [];
    for (const tr of Array.from(body.rows)) {
      if (tr.classList.contains("detail") && groups.length) groups[groups.length - 1].push(tr);
      else groups.push([tr]);
    }
    const asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    groups.sort((a, b) => {
      const x = sortKey(a[0].cells[col]), y = sortKey(b[0].cells[col]);
      if (x === null || y === null) return (x === null) - (y === null);
      return asc ? compare(x, y) : compare(y, x);
    });
    groups.forEach((g) => g.forEach((tr) => body.appendChild(tr)));
  }

  // ---- expandable rows ----
  function toggle(btn) {
    const open = btn.getAttribute("aria-expanded") !== "true";
    btn.setAttribute("aria-expanded", String(open));
    btn.textContent = open ? "▾" : "▸";
    btn.closest("tr").nextElementSibling.hidden = !open;
  }

  // ---- filters ----
  const MODELS = new Set(JSON.parse((document.getElementById("report-models") || {}).textContent || "[]"));
  const field = (id) => document.getElementById(id);
  function wanted() {
    return { model: (field("f-model") ? field("f-model").value : "").trim().toLowerCase(),
             task: field("f-task") ? field("f-task").value : "",
             experiment: field("f-experiment") ? field("f-experiment").value : "" };
  }
  function rowMatches(tr, want) {
    for (const key of ["model", "task", "experiment"]) {
      const have = tr.dataset[key];
      if (!want[key] || have === undefined || have === "") continue;
      if (key === "model") {
        if (!have.toLowerCase().split(" ").some((m) => m.includes(want.model))) return false;
      } else if (have !== want[key]) return false;
    }
    return true;
  }
  function filterTables(want) {
    document.querySelectorAll(".tbl").forEach((box) => {
      let shown = 0, total = 0;
      box.querySelectorAll("tbody > tr:not(.detail)").forEach((tr) => {
        const ok = rowMatches(tr, want);
        total += 1; shown += ok;
        tr.hidden = !ok;
        const next = tr.nextElementSibling, btn = tr.querySelector("button.expand");
        const open = btn && btn.getAttribute("aria-expanded") === "true";
        if (next && next.classList.contains("detail")) next.hidden = !ok || !open;
      });
      const count = box.querySelector(".count");
      if (count) count.textContent = shown < total ? `· showing ${shown} of ${total} rows` : "";
      box.querySelector(".empty").hidden = shown > 0;
    });
    document.querySelectorAll("[data-task-section]").forEach((s) => {
      s.hidden = Boolean(want.task) && s.dataset.taskSection !== want.task;
    });
  }
  function filterChart(div, want) {
    if (!window.Plotly || !div.data) return;
    const visible = div.data.map((t) => {
      if (!MODELS.has(t.legendgroup) || !want.model) return true;
      return t.legendgroup.toLowerCase().includes(want.model) ? true : "legendonly";
    });
    if (visible.some((v, i) => v !== (div.data[i].visible === undefined ? true : div.data[i].visible))) {
      window.Plotly.restyle(div, { visible: visible });
    }
  }
  function applyFilters() {
    const want = wanted();
    filterTables(want);
    document.querySelectorAll(".chart.drawn").forEach((div) => filterChart(div, want));
    const active = [want.model && `model ~ "${want.model}"`, want.task && `task = ${want.task}`,
                    want.experiment && `experiment = ${want.experiment}`].filter(Boolean);
    const status = field("f-status");
    if (status) {
      status.textContent = active.length ? `${active.length} filter${active.length > 1 ? "s" : ""} on` : "";
      status.title = active.join(", ");
    }
  }

  // ---- charts ----
  function draw(div) {
    if (div.classList.contains("drawn")) return;
    div.classList.add("drawn");
    if (!window.Plotly) {  // built where plotly is not installed: show the PNG written beside the page
      const png = div.parentElement.querySelector("figcaption a");
      if (png) div.innerHTML = `<img src="${png.getAttribute("href")}" alt="" style="max-width:100%">`;
      return;
    }
    const spec = JSON.parse(document.getElementById(div.id + "-data").textContent);
    const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"],
                     toImageButtonOptions: { format: "png", filename: div.id } };
    window.Plotly.newPlot(div, spec.data, spec.layout, config).then(() => filterChart(div, wanted()));
  }
  function drawWhenVisible() {
    const charts = document.querySelectorAll(".chart");
    if (!("IntersectionObserver" in window)) { charts.forEach(draw); return; }
    const seen = new IntersectionObserver((entries) => entries.forEach((e) => {
      if (e.isIntersecting) { seen.unobserve(e.target); draw(e.target); }
    }), { rootMargin: "800px 0px" });
    charts.forEach((c) => seen.observe(c));
    window.addEventListener("beforeprint", () => charts.forEach(draw));
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("table.sortable th button")
      .forEach((b) => b.addEventListener("click", () => sortTable(b.parentElement)));
    document.querySelectorAll("button.expand").forEach((b) => b.addEventListener("click", () => toggle(b)));
    for (const id of ["f-model", "f-task", "f-experiment"]) {
      if (field(id)) ["input", "change"].forEach((type) => field(id).addEventListener(type, applyFilters));
    }
    if (field("f-reset")) field("f-reset").addEventListener("click", () => {
      ["f-model", "f-task", "f-experiment"].forEach((id) => { if (field(id)) field(id).value = ""; });
      applyFilters();
    });
    drawWhenVisible();
    window.lstmBench = { draw: draw, drawAll: () => document.querySelectorAll(".chart").forEach(draw) };
  });
})();
