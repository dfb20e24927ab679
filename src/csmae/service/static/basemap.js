// csmae search page: an offline base layer of coastlines and country borders under the footprints.
//
// Natural Earth 1:50m countries as TopoJSON (npm world-atlas 2.0.2) converted with topojson-client,
// both shipped in /static/vendor/ with their licences: nothing is loaded from outside the server.
//   csmaeBasemap.add(map)   draw land, coastlines and borders in a pane below the footprints;
//                           returns a promise of {land, coast, borders} feature counts
//   csmaeBasemap.info       the counts once drawn (null before)
// Near the antimeridian the page draws longitudes past +-180 deg (map.js); once the view reaches past
// the line, a copy of the base map shifted by 360 deg is drawn there (only then: it doubles the work).
"use strict";

(function () {
  const ATLAS = "/static/vendor/world-atlas/countries-50m.json";
  const STYLE = {
    land: { stroke: false, fill: true, fillColor: "#eef1e6", fillOpacity: 1, interactive: false },
    coast: { color: "#6b8aa8", weight: 1, opacity: 0.9, fill: false, interactive: false },
    borders: { color: "#8a8f98", weight: 0.8, opacity: 0.9, dashArray: "3 3", fill: false, interactive: false },
  };
  const api = { info: null, add };

  async function add(map) {
    if (typeof topojson === "undefined" || !map) return null;
    const response = await fetch(ATLAS);
    if (!response.ok) throw new Error(`base map: ${ATLAS} answered HTTP ${response.status}`);
    const topo = await response.json();
    const pane = map.createPane("csmae-basemap");
    pane.style.zIndex = "250"; // under the overlay pane (400) where the footprints are
    pane.style.pointerEvents = "none";
    const renderer = L.canvas({ pane: "csmae-basemap" });
    const land = topojson.feature(topo, topo.objects.land);
    const coast = topojson.mesh(topo, topo.objects.land);
    const borders = topojson.mesh(topo, topo.objects.countries, (a, b) => a !== b);
    const opts = (style, dx = 0) => ({ pane: "csmae-basemap", renderer, style, interactive: false,
      coordsToLatLng: (c) => L.latLng(c[1], c[0] + dx) });
    const draw = (dx) => {
      L.geoJSON(land, opts(STYLE.land, dx)).addTo(map);
      L.geoJSON(coast, opts(STYLE.coast, dx)).addTo(map);
      L.geoJSON(borders, opts(STYLE.borders, dx)).addTo(map);
    };
    draw(0);
    const copies = new Set();
    const across = () => { // the view reaches past +-180 deg: the world's copy on that side
      const b = map.getBounds();
      for (const dx of [b.getEast() > 180 ? 360 : 0, b.getWest() < -180 ? -360 : 0]) {
        if (dx && !copies.has(dx)) { copies.add(dx); draw(dx); }
      }
    };
    map.on("moveend", across);
    across();
    const count = (g) => (g.features ? g.features.length : g.coordinates.length);
    api.info = { land: count(land), coast: count(coast), borders: count(borders) };
    map.attributionControl && map.attributionControl.addAttribution("Natural Earth (public domain)");
    return api.info;
  }

  window.csmaeBasemap = api;
})();
