// csmae search page: talks to the JSON API under /api. No framework, no build step, nothing external.
"use strict";

const SENSOR_TITLES = { s1: "S1 radar", s2: "S2 optical" };
const PAGE_SIZE = 12;

const state = {
  health: null,
  offset: 0,
  total: 0,
  query: null, // {kind: "id", id, sensor} | {kind: "upload"}
  itemSensors: {}, // id -> sensors with vectors
  searchSeq: 0,
};

const $ = (id) => document.getElementById(id);
const sensorTitle = (s) => SENSOR_TITLES[s] || s.toUpperCase();
const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

/** Build an element; children are nodes or strings (always inserted as text, never as HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("The server cannot be reached.");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new Error(body && body.detail ? body.detail : `Request failed (HTTP ${response.status}).`);
  }
  return body;
}

const previewUrl = (id, sensor) =>
  `/api/items/${encodeURIComponent(id)}/preview/${encodeURIComponent(sensor)}`;

function badge(sensor) {
  return el("span", { class: `badge badge-${sensor}`, title: sensorTitle(sensor) }, sensor.toUpperCase());
}

function chips(labels, shared, listLabel) {
  const list = el("ul", { class: "chips", "aria-label": listLabel });
  for (const label of labels) {
    const isShared = shared && shared.includes(label);
    list.append(el("li", { class: isShared ? "chip chip-shared" : "chip", title: label },
      label, isShared ? el("span", { class: "sr-only" }, " (shared with the query)") : null));
  }
  if (!labels.length) list.append(el("li", { class: "chip" }, "no labels"));
  return list;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

/** "2017-06-13T10:10:31Z" -> "2017-06-13 10:10 UTC". */
function whenText(iso) { return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`; }

function setStatus(message) { $("status").textContent = message; }

// ----- archive info and controls -------------------------------------------------------------
async function loadHealth() {
  const h = await api("/api/health");
  state.health = h;
  const model = h.model && (h.model.name || h.model.variant || h.model.model);
  const bySensor = Object.entries(h.counts.by_sensor).map(([s, n]) => `${n.toLocaleString()} ${s.toUpperCase()}`).join(" · ");
  const info = $("archive-info");
  info.replaceChildren(
    el("strong", {}, `${h.counts.pairs.toLocaleString()} pairs`), ` (${bySensor})`,
    model ? ` · model ${model}` : "",
  );
  for (const s of h.sensors) {
    $("filter-sensor").append(el("option", { value: s }, s.toUpperCase()));
    $("query-sensor").append(el("option", { value: s }, sensorTitle(s)));
  }
  for (const label of h.label_names) $("filter-label").append(el("option", { value: label }, label));
  const fieldset = document.querySelector(".segmented");
  for (const s of h.sensors) {
    fieldset.append(el("span", {},
      el("input", { type: "radio", name: "target", id: `target-${s}`, value: s }),
      el("label", { for: `target-${s}` }, `${sensorTitle(s)} only`)));
  }
  $("k").max = String(h.limits.max_k);
  updateUploadBands();
  if (window.csmaeMap) window.csmaeMap.init(h);
}

function updateUploadBands() {
  const h = state.health;
  if (!h) return;
  const sensor = $("query-sensor").value;
  const bands = (h.query_bands && h.query_bands[sensor]) || [];
  $("upload-bands").textContent = `${sensor.toUpperCase()}: ${bands.join(", ")}`;
}

function currentTarget() {
  const checked = document.querySelector('input[name="target"]:checked');
  return checked ? checked.value : "any";
}

function currentK() {
  const max = state.health ? state.health.limits.max_k : 100;
  let k = parseInt($("k").value, 10);
  if (!Number.isFinite(k) || k < 1) k = 1;
  if (k > max) k = max;
  $("k").value = String(k);
  return k;
}

// ----- browsing ----------------------------------------------------------------------------------
async function loadPage() {
  const params = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE_SIZE) });
  for (const [key, id] of [["split", "filter-split"], ["sensor", "filter-sensor"], ["label", "filter-label"]]) {
    if ($(id).value) params.set(key, $(id).value);
  }
  const list = $("item-list");
  list.setAttribute("aria-busy", "true");
  try {
    const page = await api(`/api/items?${params}`);
    state.total = page.total;
    list.replaceChildren();
    if (!page.items.length) list.append(el("li", { class: "item-empty" }, "No items match these filters."));
    for (const item of page.items) {
      const current = state.query && state.query.kind === "id" && state.query.id === item.id && state.query.sensor === item.sensor;
      list.append(el("li", {},
        el("button", {
          type: "button", class: "item", "aria-current": current ? "true" : "false",
          "data-id": item.id, "data-sensor": item.sensor,
          onclick: () => selectItem(item.id, item.sensor),
        },
        el("img", { src: previewUrl(item.id, item.sensor), alt: "", loading: "lazy", width: 40, height: 40 }),
        el("span", {}, el("span", { class: "item-id" }, item.id),
          el("span", { class: "item-sub" }, `${item.split || "no split"} · ${item.labels.length} label${item.labels.length === 1 ? "" : "s"}`)),
        badge(item.sensor))));
    }
    const first = page.total ? state.offset + 1 : 0;
    const last = Math.min(state.offset + PAGE_SIZE, page.total);
    $("page-info").textContent = `${first}–${last} of ${page.total.toLocaleString()}`;
    $("page-prev").disabled = state.offset === 0;
    $("page-next").disabled = state.offset + PAGE_SIZE >= page.total;
  } catch (err) {
    showError(err.message);
  } finally {
    list.removeAttribute("aria-busy");
  }
}

function markCurrent() {
  for (const button of document.querySelectorAll("#item-list .item")) {
    const q = state.query;
    const current = q && q.kind === "id" && button.dataset.id === q.id && button.dataset.sensor === q.sensor;
    button.setAttribute("aria-current", current ? "true" : "false");
  }
}

async function selectItem(id, sensor) {
  state.query = { kind: "id", id, sensor };
  $("query-sensor").value = sensor;
  updateUploadBands();
  markCurrent();
  try {
    const info = await api(`/api/items/${encodeURIComponent(id)}`);
    state.itemSensors[id] = info.sensors;
  } catch (err) { /* the search below reports it */ }
  syncSensorOptions();
  await runSearch();
}

function syncSensorOptions() {
  const q = state.query;
  const available = q && q.kind === "id" ? state.itemSensors[q.id] : null;
  for (const option of $("query-sensor").options) {
    option.disabled = Boolean(available) && !available.includes(option.value);
  }
}

async function randomQuery() {
  const params = new URLSearchParams();
  if ($("filter-sensor").value) params.set("sensor", $("filter-sensor").value);
  if ($("filter-split").value) params.set("split", $("filter-split").value);
  try {
    const item = await api(`/api/items/random?${params}`);
    await selectItem(item.id, item.sensor);
  } catch (err) {
    showError(err.message);
  }
}

// ----- searching ---------------------------------------------------------------------------------
async function runSearch() {
  const q = state.query;
  if (!q) return;
  const seq = ++state.searchSeq;
  const target = currentTarget();
  const k = currentK();
  showError("");
  setStatus("Searching…");
  $("results").setAttribute("aria-busy", "true");
  try {
    let result;
    if (q.kind === "id") {
      const params = new URLSearchParams({ id: q.id, sensor: q.sensor, target, k: String(k) });
      if (window.csmaeFilters) window.csmaeFilters.apply(params); // filters.js
      result = await api(`/api/search?${params}`);
    } else {
      const form = new FormData();
      for (const file of q.files) form.append("files", file, file.name);
      form.append("sensor", q.sensor);
      form.append("target", target);
      form.append("k", String(k));
      const filter = window.csmaeFilters ? window.csmaeFilters.apply(new URLSearchParams()).toString() : "";
      result = await api(`/api/search/upload${filter ? `?${filter}` : ""}`, { method: "POST", body: form });
    }
    if (seq !== state.searchSeq) return; // a newer search has started
    renderQuery(result);
    renderResults(result);
    if (window.csmaeMap) window.csmaeMap.draw(result.query, result.results);
    if (q.kind === "id") {
      writeUrl(q, target, k);
      const geo = (state.health && state.health.geo) || {};
      if (window.csmaeTimeline && geo.timeline) window.csmaeTimeline.show(q.id, q.sensor); // timeline.js
    }
  } catch (err) {
    if (seq !== state.searchSeq) return;
    setStatus("");
    showError(err.message);
  } finally {
    if (seq === state.searchSeq) $("results").removeAttribute("aria-busy");
  }
}

function renderQuery(result) {
  const q = result.query;
  const img = $("query-img");
  const src = q.id ? previewUrl(q.id, q.sensor) : q.preview;
  const title = $("query-title");
  title.replaceChildren("Query ", badge(q.sensor));
  if (q.split) title.append(el("span", { class: "badge badge-split" }, q.split));
  if (q.id) {
    $("query-desc").replaceChildren(el("span", { class: "query-id" }, q.id));
    if (q.datetime) $("query-desc").append(el("span", { class: "item-sub item-time" }, ` · ${whenText(q.datetime)}`));
  } else {
    $("query-desc").replaceChildren(`Uploaded ${sensorTitle(q.sensor)} image (${(q.files || []).join(", ")})`);
  }
  if (src) {
    img.hidden = false;
    $("query-placeholder").hidden = true;
    img.alt = `${sensorTitle(q.sensor)} preview of the query${q.id ? " " + q.id : ""}`;
    img.onerror = () => { img.hidden = true; $("query-placeholder").hidden = false; $("query-placeholder").textContent = "No preview available"; };
    img.src = src;
  } else {
    img.hidden = true;
    $("query-placeholder").hidden = false;
    $("query-placeholder").textContent = "No preview available";
  }
  const labelList = chips(q.labels || [], null, "Query labels");
  labelList.id = "query-labels";
  if (!q.labels) labelList.replaceChildren(el("li", { class: "chip" }, "labels unknown"));
  $("query-labels").replaceWith(labelList);
  const stat = $("pk-stat");
  stat.hidden = result.precision_at_k === null || result.precision_at_k === undefined;
  $("pk-value").textContent = fmt(result.precision_at_k, 2);
  $("pk-label").textContent = `P@${result.results.length}`;
}

function renderResults(result) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of result.results) {
    const bar = el("span", {});
    bar.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
    list.append(el("li", { class: "result" },
      el("div", { class: "result-img" },
        el("img", { src: previewUrl(hit.id, hit.sensor), alt: `${sensorTitle(hit.sensor)} preview of ${hit.id}`, loading: "lazy" }),
        el("span", { class: "rank" }, el("span", { class: "sr-only" }, "Rank "), `#${hit.rank}`),
        badge(hit.sensor)),
      el("div", { class: "result-body" },
        el("div", { class: "result-top" },
          el("span", { class: "score" }, el("span", { class: "sr-only" }, "Similarity "), fmt(hit.score)),
          el("span", { class: "item-sub" }, result.query.labels
            ? `${hit.overlap.length}/${hit.labels.length} labels shared`
            : `${hit.labels.length} label${hit.labels.length === 1 ? "" : "s"}`)),
        el("div", { class: "score-bar", "aria-hidden": "true" }, bar),
        el("span", { class: "item-id", title: hit.id }, hit.id),
        hit.datetime ? el("span", { class: "item-sub item-time" }, whenText(hit.datetime)) : "",
        chips(hit.labels, result.query.labels ? hit.overlap : null, `Labels of ${hit.id}`),
        el("div", { class: "result-actions" },
          el("button", {
            type: "button", class: "btn btn-quiet",
            "aria-label": `Use ${hit.id} (${hit.sensor.toUpperCase()}) as the query`,
            onclick: () => selectItem(hit.id, hit.sensor),
          }, "Use as query")))));
  }
  const where = result.target === "any" ? "both sensors" : sensorTitle(result.target);
  const pk = result.precision_at_k === null || result.precision_at_k === undefined
    ? "" : ` P@${result.results.length} = ${fmt(result.precision_at_k, 2)}.`;
  setStatus(`${result.results.length} results from ${where} for the ${sensorTitle(result.query.sensor)} query in ${fmt(result.took_ms, 1)} ms.${pk}`);
}

// ----- the page's URL: query, settings and filters (a shareable link) -----------------------------
/** Put the archive query, target, k and the filter into the address bar (no reload, no history spam). */
function writeUrl(q, target, k) {
  const params = new URLSearchParams({ id: q.id, sensor: q.sensor, target, k: String(k) });
  if (window.csmaeFilters) window.csmaeFilters.apply(params);
  const url = `${location.pathname}?${params}`;
  if (url !== `${location.pathname}${location.search}`) history.replaceState(null, "", url);
}

/** Restore a query from the URL (?id=&sensor=&target=&k=&start=...): the link someone shared. */
async function readUrl() {
  const params = new URLSearchParams(location.search);
  const id = params.get("id");
  const sensor = params.get("sensor");
  if (params.has("k")) $("k").value = params.get("k");
  const target = params.get("target");
  const radio = target ? document.getElementById(`target-${target}`) : null;
  if (radio) radio.checked = true;
  if (window.csmaeFilters) {
    await window.csmaeFilters.ready;
    window.csmaeFilters.restore(params, { silent: true });
  }
  if (id && sensor && state.health && state.health.sensors.includes(sensor)) await selectItem(id, sensor);
}

// ----- upload ------------------------------------------------------------------------------------
/** Guess the sensor from BigEarthNet band file names (..._VV.tif -> s1, ..._B04.tif -> s2). */
function sensorFromFileNames(files) {
  const bands = files.map((f) => (/_(VV|VH|B0[1-9]|B1[0-2]|B8A)\.tiff?$/i.exec(f.name) || [])[1]);
  if (!bands.length || bands.some((b) => !b)) return null;
  if (bands.every((b) => /^V[VH]$/i.test(b))) return "s1";
  if (bands.every((b) => /^B/i.test(b))) return "s2";
  return null;
}

function onFilesChosen() {
  const files = Array.from($("upload-files").files || []);
  const guess = sensorFromFileNames(files);
  const select = $("query-sensor");
  if (guess && guess !== select.value && Array.from(select.options).some((o) => o.value === guess)) {
    select.value = guess;
    updateUploadBands();
    setStatus(`Query sensor set to ${sensorTitle(guess)} from the band file names.`);
  }
}

function onUpload(event) {
  event.preventDefault();
  const files = Array.from($("upload-files").files || []);
  if (!files.length) {
    showError("Choose one or more files first.");
    $("upload-files").focus();
    return;
  }
  state.query = { kind: "upload", files, sensor: $("query-sensor").value };
  syncSensorOptions();
  markCurrent();
  runSearch();
}

// ----- tabs (WAI-ARIA tabs pattern, automatic activation) -------------------------------------
function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const selected = t === tab;
    t.setAttribute("aria-selected", selected ? "true" : "false");
    t.tabIndex = selected ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
}

function onTabKey(event) {
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  const i = tabs.indexOf(event.currentTarget);
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
  if (next === undefined) return;
  event.preventDefault();
  selectTab(tabs[(next + tabs.length) % tabs.length]);
}

// ----- wiring ------------------------------------------------------------------------------------
async function init() {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", onTabKey);
  }
  for (const id of ["filter-split", "filter-sensor", "filter-label"]) {
    $(id).addEventListener("change", () => { state.offset = 0; loadPage(); });
  }
  $("page-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadPage(); });
  $("page-next").addEventListener("click", () => { state.offset += PAGE_SIZE; loadPage(); });
  $("random-btn").addEventListener("click", randomQuery);
  // a footprint clicked on the map becomes the query
  window.addEventListener("csmae:select", (e) => selectItem(e.detail.id, e.detail.sensor));
  $("upload-form").addEventListener("submit", onUpload);
  $("upload-files").addEventListener("change", onFilesChosen);
  $("settings-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  document.addEventListener("csmae:filters-changed", runSearch); // filters.js
  $("settings-form").addEventListener("change", (event) => {
    if (event.target.id === "query-sensor") {
      updateUploadBands();
      if (state.query) state.query.sensor = event.target.value;
      markCurrent();
    }
    runSearch();
  });
  try {
    await loadHealth();
    await loadPage();
    await readUrl();
  } catch (err) {
    $("archive-info").textContent = "Archive unavailable";
    showError(err.message);
  }
}

document.addEventListener("DOMContentLoaded", init);
