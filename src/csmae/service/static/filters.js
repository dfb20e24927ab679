// csmae search page: the metadata filter card (labels, split, country, season, dates, bbox).
// It builds itself from /api/health ("filters": what this archive can be filtered by) and exposes
//   window.csmaeFilters.apply(URLSearchParams)  adds the filter query parameters (same keys as the API)
//   window.csmaeFilters.setBox([w, s, e, n] | null)  set the box filter (map.js's drawn box arrives as
//                                                   the "csmae:box" window event, detail {bbox})
//   window.csmaeFilters.restore(URLSearchParams)     set the filter from a shared link's parameters
//   window.csmaeFilters.ready                        a promise: the filter card is built
// and fires "csmae:filters-changed" on document whenever the filter changes.
// A box is [west, south, east, north] in degrees; west > east is a box across the antimeridian
// (RFC 7946 5.2, e.g. 177,-19,-178,-16 around Fiji), as the API takes it; it round-trips the URL as is.
"use strict";

(() => {
  const f = {
    labels: new Map(), // label name -> "any" | "all" | "none"
    split: "", country: [], season: [], start: "", end: "", bbox: null,
  };
  const $ = (id) => document.getElementById(id);
  const make = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c);
    return node;
  };
  const changed = () => document.dispatchEvent(new CustomEvent("csmae:filters-changed"));
  const NEXT = { "": "any", any: "all", all: "none", none: "" };
  const TITLE = { any: "any of", all: "all of", none: "none of" };

  function apply(params) {
    for (const [name, mode] of f.labels) params.append(`labels_${mode}`, name);
    if (f.split) params.append("split", f.split);
    for (const c of f.country) params.append("country", c);
    for (const s of f.season) params.append("season", s);
    if (f.start) params.set("start", f.start);
    if (f.end) params.set("end", f.end);
    if (f.bbox) params.set("bbox", f.bbox.map((x) => Number(x).toFixed(5)).join(","));
    return params;
  }

  function summary() {
    const parts = [];
    for (const mode of ["any", "all", "none"]) {
      const names = [...f.labels].filter(([, m]) => m === mode).map(([n]) => n);
      if (names.length) parts.push(`${TITLE[mode]} ${names.length} label${names.length > 1 ? "s" : ""}`);
    }
    if (f.split) parts.push(f.split);
    if (f.country.length) parts.push(f.country.join("/"));
    if (f.season.length) parts.push(f.season.join("/"));
    if (f.start || f.end) parts.push(`${f.start || "…"} – ${f.end || "…"}`);
    if (f.bbox) parts.push(f.bbox[0] > f.bbox[2] ? "in the drawn box (across the antimeridian)" : "in the drawn box");
    $("filter-summary").textContent = parts.length ? `Filter: ${parts.join(" · ")}` : "No filter";
  }

  function setBox(bbox) {
    f.bbox = Array.isArray(bbox) && bbox.length === 4 ? bbox.map(Number) : null;
    const input = $("f-bbox");
    if (input) input.value = f.bbox ? f.bbox.map((x) => x.toFixed(4)).join(",") : "";
    if (window.csmaeMap) window.csmaeMap.setBox(f.bbox); // show it on the map (map.js)
    summary();
    changed();
  }

  function multiSelect(id, title, values, key) {
    const select = make("select", { id, multiple: "", size: String(Math.min(4, values.length)) });
    for (const v of values) select.append(make("option", { value: v }, v));
    select.addEventListener("change", () => {
      f[key] = [...select.selectedOptions].map((o) => o.value);
      summary();
      changed();
    });
    return make("label", {}, title, select);
  }

  function labelChip(name) {
    const chip = make("button", { type: "button", class: "chip filter-chip", "aria-pressed": "false",
      title: "click: any of → all of → none of → off" }, name);
    chip.dataset.name = name;
    chip.addEventListener("click", () => {
      const mode = NEXT[f.labels.get(name) || ""];
      if (mode) f.labels.set(name, mode); else f.labels.delete(name);
      chip.dataset.mode = mode;
      chip.setAttribute("aria-pressed", mode ? "true" : "false");
      chip.textContent = mode ? `${mode === "none" ? "✕" : mode === "all" ? "∀" : "∃"} ${name}` : name;
      summary();
      changed();
    });
    return make("li", {}, chip);
  }

  function build(h) {
    const avail = h.filters || {};
    const card = make("section", { class: "card", "aria-labelledby": "filters-heading", id: "filters-card" },
      make("h2", { id: "filters-heading" }, "3. Filter results"),
      make("p", { id: "filter-summary", class: "muted", role: "status" }, "No filter"));
    const chips = make("ul", { class: "chips", "aria-label": "Labels (click to cycle any / all / none / off)" });
    for (const name of h.label_names || []) chips.append(labelChip(name));
    card.append(make("details", { open: "" }, make("summary", {}, "Labels"), chips));
    const split = make("select", { id: "f-split" }, make("option", { value: "" }, "any split"));
    for (const s of ["train", "val", "test"]) split.append(make("option", { value: s }, s));
    split.addEventListener("change", () => { f.split = split.value; summary(); changed(); });
    card.append(make("label", {}, "Results of split ", split));
    if (avail.country && avail.country.length) card.append(multiSelect("f-country", "Country ", avail.country, "country"));
    if (avail.season && avail.season.length) card.append(multiSelect("f-season", "Season ", avail.season, "season"));
    if (avail.datetime) {
      for (const key of ["start", "end"]) {
        const input = make("input", { type: "date", id: `f-${key}` });
        input.addEventListener("change", () => { f[key] = input.value; summary(); changed(); });
        card.append(make("label", {}, key === "start" ? "From " : "To ", input));
      }
    }
    if (avail.geometry) {
      const box = make("input", { id: "f-bbox", placeholder: "west,south,east,north (or draw on the map)",
        title: "degrees; west > east: a box across the antimeridian (e.g. 177,-19,-178,-16)" });
      box.addEventListener("change", () => {
        const parts = box.value.split(",").map(Number);
        setBox(box.value.trim() && parts.length === 4 && parts.every(Number.isFinite) ? parts : null);
      });
      card.append(make("label", {}, "Box ", box));
      if (window.csmaeMap) {
        const draw = make("button", { type: "button", class: "btn btn-quiet", id: "f-draw" }, "Draw a box on the map");
        draw.addEventListener("click", () => window.csmaeMap.startBox());
        card.append(draw);
      }
    }
    const clear = make("button", { type: "button", class: "btn btn-quiet" }, "Clear filter");
    clear.addEventListener("click", () => {
      f.labels.clear(); f.split = ""; f.country = []; f.season = []; f.start = ""; f.end = ""; f.bbox = null;
      for (const c of card.querySelectorAll(".filter-chip")) {
        c.dataset.mode = ""; c.setAttribute("aria-pressed", "false"); c.textContent = c.dataset.name;
      }
      for (const s of card.querySelectorAll("select")) { for (const o of s.options) o.selected = false; s.value = ""; }
      for (const i of card.querySelectorAll("input")) i.value = "";
      if (window.csmaeMap) window.csmaeMap.setBox(null);
      summary();
      changed();
    });
    card.append(clear);
    const anchor = document.querySelector(".sidebar");
    if (anchor) anchor.append(card);
  }

  /** Set the filter from URL parameters (the API's keys), updating the controls; fires
   *  "csmae:filters-changed" unless ``silent``. */
  function restore(params, { silent = false } = {}) {
    f.labels.clear();
    for (const mode of ["any", "all", "none"]) for (const name of params.getAll(`labels_${mode}`)) f.labels.set(name, mode);
    for (const c of document.querySelectorAll("#filters-card .filter-chip")) {
      const mode = f.labels.get(c.dataset.name) || "";
      c.dataset.mode = mode;
      c.setAttribute("aria-pressed", mode ? "true" : "false");
      c.textContent = mode ? `${mode === "none" ? "✕" : mode === "all" ? "∀" : "∃"} ${c.dataset.name}` : c.dataset.name;
    }
    f.split = params.get("split") || "";
    f.country = params.getAll("country");
    f.season = params.getAll("season");
    f.start = params.get("start") || "";
    f.end = params.get("end") || "";
    const set = (id, value) => { const n = $(id); if (n) n.value = value; };
    set("f-split", f.split); set("f-start", f.start); set("f-end", f.end);
    for (const [id, values] of [["f-country", f.country], ["f-season", f.season]]) {
      const s = $(id);
      if (s) for (const o of s.options) o.selected = values.includes(o.value);
    }
    const box = (params.get("bbox") || "").split(",").map(Number);
    f.bbox = box.length === 4 && box.every(Number.isFinite) ? box : null;
    set("f-bbox", f.bbox ? f.bbox.map((x) => x.toFixed(4)).join(",") : "");
    if (window.csmaeMap) window.csmaeMap.setBox(f.bbox);
    if ($("filter-summary")) summary();
    if (!silent) changed();
  }

  let built;
  const ready = new Promise((resolve) => { built = resolve; });

  async function init() {
    try {
      const response = await fetch("/api/health");
      if (response.ok) build(await response.json());
    } catch (err) {
      console.warn("filters unavailable", err);
    } finally {
      built();
    }
  }

  window.addEventListener("csmae:box", (e) => setBox(e.detail && e.detail.bbox ? e.detail.bbox : e.detail));
  window.csmaeFilters = { apply, setBox, restore, ready, state: f };
  document.addEventListener("DOMContentLoaded", init);
})();
