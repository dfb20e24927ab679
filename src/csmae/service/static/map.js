// csmae search page: the map of the query and result footprints (Leaflet, served from /static/vendor).
//
// API for the rest of the page (app.js and later additions such as a bounding-box filter):
//   csmaeMap.init(health)       set up the map once /api/health is known (basemap, synthetic note)
//   csmaeMap.draw(query, hits)  draw the query (rank 0) and the hits (numbered by rank); items with
//                               geometry null are counted in the note but not drawn
//   csmaeMap.footprints()       what is drawn, read back from the Leaflet layers:
//                               [{role, rank, id, sensor, ring: [[lon, lat], ...], rings: [ring, ...]}]
//                               (ring: the first part's outline; rings: every part's, as drawn)
//   csmaeMap.startBox()         let the user drag a box; ends with the "csmae:box" event
//   csmaeMap.setBox(bbox|null)  show (or clear) a [west, south, east, north] box
//   csmaeMap.map                the Leaflet map itself
// Across the antimeridian (RFC 7946): a footprint split at +-180 deg (a MultiPolygon) and the
// results on both sides of the line are drawn as one group: each part is shifted by a multiple of
// 360 deg to lie within 180 deg of the query, so Leaflet draws them side by side (longitudes past
// 180 on the map), never stretched across the world. A box drawn across the line gives a bbox with
// west > east (RFC 7946 5.2), and such a box (or an extent) is drawn across the line too.
// Events (on window): "csmae:select" {detail: {id, sensor}} when a footprint is clicked;
//                     "csmae:box" {detail: {bbox: [west, south, east, north]}} when a box is drawn.
// Base map: coastlines and borders from the shipped Natural Earth data (basemap.js), or the tiles
// of --basemap when the server was started with one; nothing else is loaded from outside.
"use strict";

(function () {
  const STYLE = {
    query: { color: "#b3261e", weight: 3, fillOpacity: 0.25 },
    hit: { color: "#1f5fbf", weight: 2, fillOpacity: 0.15 },
  };
  let map = null;
  let footprintLayer = null;
  let gridLayer = null;
  let boxLayer = null;
  let drawn = [];

  function element(id) { return document.getElementById(id); }

  /** A longitude in [-180, 180]: unchanged when already there, else shifted by multiples of 360. */
  function wrapLon(lon) {
    return lon >= -180 && lon <= 180 ? lon : ((((lon + 180) % 360) + 360) % 360) - 180;
  }

  /** The multiple of 360 that brings ``lon`` within 180 deg of ``ref``. */
  function shiftNear(lon, ref) { return 360 * Math.round((ref - lon) / 360); }

  /** Middle longitude of a polygon's outer ring ([[lon, lat], ...]). */
  function ringMiddle(ring) {
    const lons = ring.map((p) => p[0]);
    return (Math.min(...lons) + Math.max(...lons)) / 2;
  }

  /** The polygons of a GeoJSON geometry (Polygon or MultiPolygon) as arrays of rings. */
  function polygonsOf(geometry) {
    if (geometry.type === "Polygon") return [geometry.coordinates];
    if (geometry.type === "MultiPolygon") return geometry.coordinates;
    return [];
  }

  /** ``geometry`` with each polygon shifted by a multiple of 360 deg to lie within 180 deg of ``ref``
   *  (a footprint split at the antimeridian becomes one contiguous shape next to the query). */
  function nearGeometry(geometry, ref) {
    const polys = polygonsOf(geometry);
    if (!polys.length || ref === null) return geometry;
    const moved = polys.map((rings) => {
      const dx = shiftNear(ringMiddle(rings[0]), ref);
      return dx ? rings.map((ring) => ring.map(([lon, lat]) => [lon + dx, lat])) : rings;
    });
    return geometry.type === "Polygon" ? { type: "Polygon", coordinates: moved[0] }
      : { type: "MultiPolygon", coordinates: moved };
  }

  /** [[south, west], [north, east]] of a [W, S, E, N] box for Leaflet, east past 180 when W > E,
   *  shifted by a multiple of 360 deg to lie near ``ref`` (the map's centre). */
  function boxCorners(bbox, ref) {
    const [w, s, e, n] = bbox.map(Number);
    const east = w > e ? e + 360 : e;
    const dx = ref === null || ref === undefined ? 0 : shiftNear((w + east) / 2, ref);
    return [[s, w + dx], [n, east + dx]];
  }

  /** Degrees with 4 decimals and a hemisphere letter (13.7211 E, 48.2177 N). */
  function deg(value, pos, neg) {
    return `${Math.abs(value).toFixed(4)}° ${value >= 0 ? pos : neg}`;
  }

  /** Longitude/latitude lines over the view: the page has no base map, so these show where it is. */
  function drawGrid() {
    if (!map || !gridLayer) return;
    gridLayer.clearLayers();
    const b = map.getBounds();
    const span = Math.max(b.getEast() - b.getWest(), b.getNorth() - b.getSouth());
    const steps = [30, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001];
    const step = steps.find((s) => span / s >= 3) || steps[steps.length - 1];
    const decimals = Math.max(0, Math.ceil(-Math.log10(step)));
    const line = { color: "#9aa4b2", weight: 1, opacity: 0.6, interactive: false };
    for (let x = Math.ceil(b.getWest() / step) * step; x <= b.getEast(); x += step) {
      gridLayer.addLayer(L.polyline([[b.getSouth(), x], [b.getNorth(), x]], line));
      gridLayer.addLayer(L.marker([b.getSouth(), x], { interactive: false, keyboard: false,
        icon: L.divIcon({ className: "grid-label grid-label-lon", html: "", iconSize: null }) })
        .on("add", (e) => { e.target.getElement().textContent = `${wrapLon(Math.round(x / step) * step).toFixed(decimals)}°`; }));
    }
    for (let y = Math.ceil(b.getSouth() / step) * step; y <= b.getNorth(); y += step) {
      gridLayer.addLayer(L.polyline([[y, b.getWest()], [y, b.getEast()]], line));
      gridLayer.addLayer(L.marker([y, b.getWest()], { interactive: false, keyboard: false,
        icon: L.divIcon({ className: "grid-label grid-label-lat", html: "", iconSize: null }) })
        .on("add", (e) => { e.target.getElement().textContent = `${y.toFixed(decimals)}°`; }));
    }
  }

  function init(health) {
    const container = element("map");
    const geo = (health && health.geo) || {};
    const card = element("map-card");
    if (!container || typeof L === "undefined" || !geo.footprints) {
      if (card) card.hidden = true; // an archive without footprints has nothing to show
      return;
    }
    card.hidden = false;
    map = L.map(container, { zoomSnap: 0.25, worldCopyJump: false, attributionControl: true });
    if (geo.basemap) {
      L.tileLayer(geo.basemap, { maxZoom: 19, attribution: "base map: " + new URL(geo.basemap.replace("{s}", "a")).host }).addTo(map);
    } else if (window.csmaeBasemap) { // offline coastlines and borders (basemap.js, shipped data)
      window.csmaeBasemap.add(map).catch((err) => console.warn(String(err)));
    }
    gridLayer = L.layerGroup().addTo(map);
    footprintLayer = L.featureGroup().addTo(map);
    boxLayer = L.layerGroup().addTo(map);
    L.control.scale({ imperial: false }).addTo(map);
    const readout = L.control({ position: "topright" });
    readout.onAdd = () => {
      const div = L.DomUtil.create("div", "map-readout");
      div.id = "map-readout";
      div.textContent = "lon, lat";
      return div;
    };
    readout.addTo(map);
    map.on("mousemove", (e) => {
      element("map-readout").textContent = `${deg(wrapLon(e.latlng.lng), "E", "W")}, ${deg(e.latlng.lat, "N", "S")}`;
    });
    map.on("moveend", drawGrid);
    const ext = geo.extent;
    if (ext) map.fitBounds(boxCorners(ext, null), { padding: [10, 10] }); // W > E: across the line
    else map.setView([50, 10], 4);
    const note = element("map-note");
    if (note) {
      note.textContent = geo.synthetic
        ? "Footprints and acquisition dates of this demo archive are synthetic (plausible places, not real ones)."
        : "Footprints in WGS 84 (EPSG:4326). Click a footprint to search from it.";
    }
  }

  function draw(query, hits) {
    if (!map) return;
    footprintLayer.clearLayers();
    drawn = [];
    const items = [{ ...query, rank: 0, role: "query" }, ...hits.map((h) => ({ ...h, role: "hit" }))];
    let missing = 0;
    // every footprint within 180 deg of the query's (or the first one's): one group across +-180 deg
    const first = items.find((item) => item.geometry && polygonsOf(item.geometry).length);
    const ref = first ? ringMiddle(polygonsOf(first.geometry)[0][0]) : null;
    // hits first, the query last: it stays on top
    for (const item of items.slice(1).reverse().concat(items.slice(0, 1))) {
      if (!item.geometry) { missing += 1; continue; }
      const layer = L.geoJSON(nearGeometry(item.geometry, ref), { style: STYLE[item.role] });
      const label = item.role === "query" ? "Q" : String(item.rank);
      const title = `${item.role === "query" ? "query" : "#" + item.rank} ${item.id} (${item.sensor.toUpperCase()})` +
        (item.datetime ? `, ${item.datetime}` : "");
      // a 1.2 km patch is a dot at country scale: a marker at its centre stays clickable
      const centre = L.circleMarker(layer.getBounds().getCenter(), { ...STYLE[item.role], radius: 5, fillOpacity: 0.6 });
      centre.bindTooltip(label, { permanent: true, direction: "right", offset: [5, 0], className: `fp-label fp-${item.role}` });
      const group = L.featureGroup([layer, centre]);
      group.on("click", () => {
        window.dispatchEvent(new CustomEvent("csmae:select", { detail: { id: item.id, sensor: item.sensor } }));
      });
      layer.eachLayer((poly) => poly.getElement && poly.on("add", () => poly.getElement().setAttribute("aria-label", title)));
      group.csmae = { role: item.role, rank: item.rank, id: item.id, sensor: item.sensor, title };
      footprintLayer.addLayer(group);
      drawn.push(group);
    }
    if (drawn.length) map.fitBounds(footprintLayer.getBounds(), { padding: [24, 24], maxZoom: 14 });
    const note = element("map-missing");
    if (note) {
      note.hidden = missing === 0;
      note.textContent = missing ? `${missing} of ${items.length} items have no footprint and are not drawn.` : "";
    }
  }

  function footprints() {
    const out = [];
    footprintLayer && footprintLayer.eachLayer((group) => {
      group.eachLayer((part) => {
        if (!(part instanceof L.GeoJSON)) return; // the centre marker is not a footprint
        part.eachLayer((poly) => {
          const lls = poly.getLatLngs(); // Polygon: [ring, ...]; MultiPolygon: [[ring, ...], ...]
          const polys = L.LineUtil.isFlat(lls) ? [[lls]] : L.LineUtil.isFlat(lls[0]) ? [lls] : lls;
          const rings = polys.map((rs) => rs[0].map((ll) => [ll.lng, ll.lat]));
          out.push({ ...group.csmae, ring: rings[0], rings });
        });
      });
    });
    return out.sort((a, b) => a.rank - b.rank);
  }

  function setBox(bbox) {
    if (!boxLayer) return;
    boxLayer.clearLayers();
    if (bbox) {
      boxLayer.addLayer(L.rectangle(boxCorners(bbox, map ? map.getCenter().lng : null),
        { color: "#6b4fbb", weight: 2, dashArray: "6 4", fill: false, interactive: false }));
    }
  }

  function startBox() {
    if (!map) return;
    const container = map.getContainer();
    container.classList.add("drawing-box");
    map.dragging.disable();
    let start = null;
    let rect = null;
    const down = (e) => { start = e.latlng; };
    const move = (e) => {
      if (!start) return;
      const bounds = L.latLngBounds(start, e.latlng);
      if (rect) rect.setBounds(bounds);
      else rect = L.rectangle(bounds, { color: "#6b4fbb", weight: 2, fill: false, interactive: false }).addTo(boxLayer);
    };
    const up = (e) => {
      if (!start) return;
      const b = L.latLngBounds(start, e.latlng);
      map.off("mousedown", down).off("mousemove", move).off("mouseup", up);
      map.dragging.enable();
      container.classList.remove("drawing-box");
      // the map's longitudes run past +-180 deg near the line: back into [-180, 180], W > E across it
      const bbox = b.getEast() - b.getWest() >= 360 ? [-180, b.getSouth(), 180, b.getNorth()]
        : [wrapLon(b.getWest()), b.getSouth(), wrapLon(b.getEast()), b.getNorth()];
      setBox(bbox);
      window.dispatchEvent(new CustomEvent("csmae:box", { detail: { bbox } }));
    };
    map.on("mousedown", down).on("mousemove", move).on("mouseup", up);
  }

  window.csmaeMap = {
    init, draw, footprints, setBox, startBox,
    get map() { return map; },
  };
})();
