// csmae search page: the timeline of the query's place, as a chart under the map with thumbnails.
//
// GET /api/timeline?id=&sensor=&reference= gives every acquisition of the place (both sensors, time
// order) with its descriptor distance to the reference. The chart (inline SVG) puts them on a time
// axis, distance upwards, one colour per sensor; below it, each acquisition's patch as a thumbnail
// (click: search with it). The card hides itself for an archive without places.
//   csmaeTimeline.show(id, sensor)  draw the timeline of the item's place
//   csmaeTimeline.points()          what is drawn: [{id, sensor, datetime, distance, x, y}] in time order
//   csmaeTimeline.reference         "first" | "previous" (the select on the card)
"use strict";

(function () {
  const W = 720, H = 180, PAD = { left: 48, right: 16, top: 14, bottom: 28 };
  const COLOURS = { s1: "#8a4fbf", s2: "#1f7a3d" };
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const api = { show, points, reference: "first" };
  let current = null; // {id, sensor}
  let seq = 0;

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function previewUrl(id, sensor) {
    return `/api/items/${encodeURIComponent(id)}/preview/${encodeURIComponent(sensor)}`;
  }

  function card() {
    let node = $("timeline-card");
    if (node) return node;
    node = document.createElement("section");
    node.id = "timeline-card";
    node.className = "card timeline-card";
    node.hidden = true;
    node.setAttribute("aria-labelledby", "timeline-heading");
    const head = document.createElement("div");
    head.className = "timeline-head";
    const h2 = document.createElement("h2");
    h2.id = "timeline-heading";
    h2.textContent = "This place through time";
    const label = document.createElement("label");
    label.textContent = "Distance to ";
    const select = document.createElement("select");
    select.id = "timeline-reference";
    for (const [v, t] of [["first", "the first acquisition"], ["previous", "the previous acquisition"]]) {
      const o = document.createElement("option");
      o.value = v; o.textContent = t; select.append(o);
    }
    select.addEventListener("change", () => { api.reference = select.value; if (current) show(current.id, current.sensor); });
    label.append(select);
    head.append(h2, label);
    const note = document.createElement("p");
    note.id = "timeline-note"; note.className = "hint";
    const chart = document.createElement("div");
    chart.id = "timeline-chart"; chart.className = "timeline-chart";
    const strip = document.createElement("ol");
    strip.id = "timeline-thumbs"; strip.className = "timeline-thumbs";
    strip.setAttribute("aria-label", "Acquisitions of this place in time order");
    node.append(head, note, chart, strip);
    const anchor = $("map-card");
    if (anchor) anchor.after(node); else document.querySelector(".content").append(node);
    return node;
  }

  async function show(id, sensor) {
    const box = card();
    current = { id, sensor };
    const mine = ++seq;
    const params = new URLSearchParams({ id, sensor, reference: api.reference });
    let body = null;
    try {
      const response = await fetch(`/api/timeline?${params}`);
      body = await response.json();
      if (mine !== seq) return;
      if (!response.ok) {
        box.hidden = true; // no places in this archive, or none for this item
        box.dataset.state = "none";
        return;
      }
    } catch (err) {
      if (mine === seq) { box.hidden = true; box.dataset.state = "error"; }
      return;
    }
    box.hidden = false;
    draw(body, id, sensor);
    box.dataset.state = "drawn";
  }

  function draw(tl, id, sensor) {
    const acq = tl.acquisitions.filter((a) => a.datetime);
    const t = acq.map((a) => Date.parse(a.datetime));
    const t0 = Math.min(...t), t1 = Math.max(...t);
    const dmax = Math.max(0.05, ...acq.map((a) => a.distance || 0));
    const x = (v) => PAD.left + (t1 > t0 ? (v - t0) / (t1 - t0) : 0.5) * (W - PAD.left - PAD.right);
    const y = (d) => H - PAD.bottom - (d / dmax) * (H - PAD.top - PAD.bottom);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "timeline-svg",
      "aria-label": `Descriptor distance to the ${tl.reference} acquisition over time, ${acq.length} acquisitions` });
    root.append(svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" }));
    root.append(svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: "axis" }));
    for (const frac of [0, 0.5, 1]) {
      const tick = svg("text", { x: PAD.left - 6, y: y(frac * dmax) + 4, "text-anchor": "end", class: "tick" });
      tick.textContent = (frac * dmax).toFixed(2);
      root.append(tick);
    }
    for (const v of [t0, t1]) {
      const tick = svg("text", { x: x(v), y: H - 8, "text-anchor": v === t0 ? "start" : "end", class: "tick" });
      tick.textContent = new Date(v).toISOString().slice(0, 10);
      root.append(tick);
    }
    const withDist = acq.filter((a) => a.distance !== null);
    if (withDist.length > 1) {
      const d = withDist.map((a, i) => `${i ? "L" : "M"}${x(Date.parse(a.datetime)).toFixed(1)},${y(a.distance).toFixed(1)}`).join(" ");
      root.append(svg("path", { d, class: "timeline-line" }));
    }
    acq.forEach((a, i) => {
      const cx = x(Date.parse(a.datetime)), cy = y(a.distance === null ? 0 : a.distance);
      const isQuery = a.id === id && a.sensor === sensor;
      const dot = svg("circle", { cx: cx.toFixed(2), cy: cy.toFixed(2), r: isQuery ? 6 : 4.5, fill: COLOURS[a.sensor] || "#555",
        class: `timeline-point${isQuery ? " is-query" : ""}`, "data-order": i, "data-id": a.id, "data-sensor": a.sensor,
        "data-datetime": a.datetime, "data-distance": a.distance === null ? "" : a.distance });
      const title = svg("title", {});
      title.textContent = `${a.datetime.slice(0, 10)} ${a.sensor.toUpperCase()} distance ${a.distance === null ? "–" : a.distance.toFixed(3)}`;
      dot.append(title);
      dot.addEventListener("click", () => select(a));
      root.append(dot);
    });
    $("timeline-chart").replaceChildren(root);
    const strip = $("timeline-thumbs");
    strip.replaceChildren();
    for (const a of acq) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = `timeline-thumb${a.id === id && a.sensor === sensor ? " is-query" : ""}`;
      b.dataset.id = a.id; b.dataset.sensor = a.sensor;
      b.setAttribute("aria-label", `Search with the ${a.sensor.toUpperCase()} acquisition of ${a.datetime.slice(0, 10)}`);
      const img = document.createElement("img");
      img.src = previewUrl(a.id, a.sensor); img.alt = ""; img.loading = "lazy"; img.width = 56; img.height = 56;
      const cap = document.createElement("span");
      cap.textContent = `${a.datetime.slice(0, 10)} ${a.sensor.toUpperCase()}${a.distance === null ? "" : " · " + a.distance.toFixed(2)}`;
      b.append(img, cap);
      b.addEventListener("click", () => select(a));
      li.append(b);
      strip.append(li);
    }
    const sensors = tl.sensors.map((s) => s.toUpperCase()).join(" + ");
    const undated = tl.acquisitions.length - acq.length;
    $("timeline-note").textContent = `Place ${tl.place}: ${tl.count} acquisitions (${sensors}); distance of each descriptor ` +
      `to the ${tl.reference === "previous" ? "previous acquisition" : "first acquisition"} (cosine, 0 = same).` +
      (undated ? ` ${undated} without a date are not drawn.` : "");
  }

  function select(a) {
    window.dispatchEvent(new CustomEvent("csmae:select", { detail: { id: a.id, sensor: a.sensor } }));
  }

  function points() {
    return Array.from(document.querySelectorAll("#timeline-chart .timeline-point")).map((c) => ({
      id: c.dataset.id, sensor: c.dataset.sensor, datetime: c.dataset.datetime,
      distance: c.dataset.distance === "" ? null : Number(c.dataset.distance),
      x: Number(c.getAttribute("cx")), y: Number(c.getAttribute("cy")),
    }));
  }

  window.csmaeTimeline = api;
})();
