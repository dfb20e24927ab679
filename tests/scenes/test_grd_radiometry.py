"""GRD calibration and thermal noise removal on the real product's tables, checked against
xarray-sentinel (an independent implementation) and a brute-force per-pixel reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from csmae.data.scenes.grd_radiometry import (
    azimuth_gain,
    border_noise,
    calibrate_window,
    interp_table,
    noise_power,
    steps_for,
)
from csmae.data.scenes.grd_safe import open_grd
from csmae.data.scenes.grd_tables import read_calibration, read_noise
from tests.scenes.grd_fixtures import GRD_DIR, PRODUCT, REGION, ZERO_EDGE, copy_xmls, sigma_field

xs = pytest.importorskip("xarray_sentinel.sentinel1")
xr = pytest.importorskip("xarray")
SAFE = GRD_DIR / f"{PRODUCT}.SAFE"
#: windows (rows, cols) of the image, spread over the three sub-swaths and odd offsets
WINDOWS = [(np.arange(0, 16676, 97), np.arange(0, 26144, 113)),
           (np.arange(7001, 7301), np.arange(8600, 9000)),  # across the IW1/IW2 seam
           (np.arange(16500, 16676), np.arange(25900, 26144))]  # last lines/columns


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    return open_grd(copy_xmls(tmp_path_factory.mktemp("grd")))


@pytest.mark.parametrize("kind,tag", [("sigma0", "sigmaNought"), ("gamma0", "gamma"),
                                      ("beta0", "betaNought")])
@pytest.mark.parametrize("pol", ["VV", "VH"])
def test_calibration_matches_xarray_sentinel(product, kind: str, tag: str, pol: str) -> None:
    cal = xs.open_calibration_dataset(str(SAFE / product.files[pol].calibration))
    lut = read_calibration(product, pol, kind)
    rng = np.random.default_rng(0)
    for rows, cols in WINDOWS:
        dn = rng.integers(1, 2000, size=(len(rows), len(cols)), dtype=np.uint16)
        da = xr.DataArray(dn.astype(np.float64), coords={"line": rows, "pixel": cols}, dims=("line", "pixel"))
        want = xs.calibrate_intensity(da, cal[tag]).values
        # ours on full rectangular windows: compare at the sampled coordinates
        got = np.empty_like(want)
        for i, r in enumerate(rows):
            a = interp_table(lut, np.array([r]), cols)[0].astype(np.float64)
            got[i] = dn[i].astype(np.float64) ** 2 / a ** 2
        np.testing.assert_allclose(got, want, rtol=2e-5)
    # and the window path (calibrate_window) on a contiguous window equals the per-row path
    rows, cols = WINDOWS[1]
    dn = rng.integers(1, 2000, size=(len(rows), len(cols)), dtype=np.uint16)
    da = xr.DataArray(dn.astype(np.float64), coords={"line": rows, "pixel": cols}, dims=("line", "pixel"))
    win = calibrate_window(dn, int(rows[0]), int(cols[0]), lut=lut, noise=None, samples=26144,
                           trim_border=False)
    np.testing.assert_allclose(win, xs.calibrate_intensity(da, cal[tag]).values, rtol=2e-5)


@pytest.mark.parametrize("pol", ["VV", "VH"])
def test_range_noise_matches_xarray_sentinel(product, pol: str) -> None:
    path = str(SAFE / product.files[pol].noise)
    ref = xs.open_noise_range_dataset(path)["noiseRangeLut"]
    noise = read_noise(product, pol)
    for rows, cols in WINDOWS:
        want = ref.interp(line=rows, pixel=cols).values
        np.testing.assert_allclose(interp_table(noise.range, rows, cols), want, rtol=2e-5, atol=1e-3)


@pytest.mark.parametrize("pol", ["VV", "VH"])
def test_azimuth_noise_matches_xarray_sentinel_and_brute_force(product, pol: str) -> None:
    noise = read_noise(product, pol)
    # xarray-sentinel reads only the first azimuth block of a GRD (IW1): compare there
    first = xs.open_noise_azimuth_dataset(str(SAFE / product.files[pol].noise))["noiseAzimuthLut"]
    rows = np.arange(0, 16676, 37)
    b0 = noise.azimuth[0]
    cols = np.arange(b0.first_sample, b0.last_sample + 1, 211)
    got = azimuth_gain(noise, rows, cols)
    assert got is not None
    want = first.interp(line=rows).values
    np.testing.assert_allclose(got, np.broadcast_to(want[:, None], got.shape), rtol=2e-6)
    # every block, per pixel, by a plain loop over the XML's blocks
    rng = np.random.default_rng(1)
    rr, cc = rng.integers(0, 16676, 300), rng.integers(0, 26144, 300)
    eta = noise_power(noise, np.sort(rr), np.sort(cc))
    rs, cs = np.sort(rr), np.sort(cc)
    for i in range(0, 300, 7):
        for j in range(0, 300, 11):
            r, c = rs[i], cs[j]
            gain = 1.0
            for b in noise.azimuth:
                if b.first_line <= r <= b.last_line and b.first_sample <= c <= b.last_sample:
                    gain = float(np.interp(r, b.lines, b.lut))
            k = np.searchsorted(noise.range.lines, r, side="right") - 1
            k = min(max(k, 0), len(noise.range.lines) - 2)
            l0, l1 = noise.range.lines[k], noise.range.lines[k + 1]
            v0 = np.interp(c, noise.range.pixels[k], noise.range.values[k])
            v1 = np.interp(c, noise.range.pixels[k + 1], noise.range.values[k + 1])
            t = min(max((r - l0) / (l1 - l0), 0.0), 1.0)
            assert eta[i, j] == pytest.approx((v0 * (1 - t) + v1 * t) * gain, rel=2e-5)


def test_noise_removed_calibration_gives_the_field_back(product, tmp_path: Path) -> None:
    from tests.scenes.grd_fixtures import make_product

    fx = make_product(tmp_path)
    import rasterio

    l0, l1, p0, p1 = REGION
    for pol in ("VV", "VH"):
        with rasterio.open(fx.safe / product.files[pol].measurement) as src:
            dn = src.read(1, window=((l0, l1), (p0, p1)))
        lin = calibrate_window(dn, l0, p0, lut=read_calibration(product, pol, "sigma0"),
                               noise=read_noise(product, pol), samples=26144, trim_border=False)
        truth = sigma_field(pol, np.arange(l0, l1), np.arange(p0, p1))
        assert np.isnan(lin[:, :ZERO_EDGE - p0]).all()  # DN 0: nodata
        bright = truth > 1e-3
        ok = bright & ~np.isnan(lin)
        assert ok.sum() > 0.99 * (bright[:, ZERO_EDGE:]).sum()
        rel = np.abs(lin[ok] / truth[ok] - 1)
        assert np.median(rel) < 0.01 and np.quantile(rel, 0.99) < 0.05
        # the dark block is below the noise floor: nodata (negative after noise removal) or tiny
        dark = ~bright
        assert np.nanmax(np.where(dark, lin, np.nan)) < 2e-3
        assert np.isnan(lin[dark]).mean() > 0.1  # rounding DN near the noise floor: some go negative
        # without noise removal the dark block is the noise: far brighter than the truth
        raw = calibrate_window(dn, l0, p0, lut=read_calibration(product, pol, "sigma0"), noise=None,
                               samples=26144, trim_border=False)
        assert np.nanmedian(raw[dark]) > 5 * 2e-5


def test_negative_after_noise_and_dn_zero_are_nodata(product) -> None:
    noise = read_noise(product, "VV")
    lut = read_calibration(product, "VV", "sigma0")
    rows, cols = np.arange(100, 104), np.arange(5000, 5006)
    eta = noise_power(noise, rows, cols)
    dn = np.ceil(np.sqrt(eta)).astype(np.uint16) + 5  # above the noise
    dn[0, :3] = np.floor(np.sqrt(eta[0, :3])).astype(np.uint16) - 1  # below the noise: negative power
    dn[1, 0] = 0
    out = calibrate_window(dn, 100, 5000, lut=lut, noise=noise, samples=26144, trim_border=False)
    assert np.isnan(out[0, :3]).all() and np.isnan(out[1, 0])
    assert np.isfinite(out[0, 3:]).all() and (out[np.isfinite(out)] > 0).all()


def test_border_noise_trims_the_contiguous_edge_run() -> None:
    power = np.full((3, 1200), 50.0, dtype=np.float32)
    power[:, :30] = 0.1  # near edge noise
    power[1, 10] = 9.0  # a bright speck inside the noise stops the run (contiguous rule)
    power[:, 100:110] = -1.0  # dark water further in: not border
    power[:, -20:] = -3.0  # far edge
    m = border_noise(power, 0, 1200)
    assert m[0, :30].all() and not m[0, 30:1180].any() and m[0, -20:].all()
    assert m[1, :10].all() and not m[1, 10:1180].any()
    with pytest.raises(ValueError, match="start at column 0"):
        border_noise(power[:, 5:], 5, 1200)


def test_steps_recorded_by_ipf(product) -> None:
    noise = read_noise(product, "VV")
    s = steps_for(product.ipf, "sigma0", noise)
    assert s.thermal_noise == "range+azimuth" and "removed by the IPF" in s.border_noise
    old = steps_for((2, 84), "gamma0", noise.__class__(range=noise.range))
    assert old.thermal_noise == "range" and "edge trim" in old.border_noise
