"""The reader at the door: paths kept inside the dataset folder, pixel limit from the header, bit depth, NaN/Inf."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from bad_inputs import jpeg_header_only, npy_header_only, png_header_only, tiff_header_only, tiff_zlib_bomb
from seminspect.data.dataset import SampleDataset
from seminspect.data.depthio import read_depth
from seminspect.data.door import ENV_EXTRA_ROOTS, check_input, read_input, resolve_inside
from seminspect.data.imageio import ImageReadError, read_image, write_image
from seminspect.data.limits import DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS, LimitConfigError, max_pixels
from seminspect.data.manifest import DatasetWriter
from seminspect.data.refusals import MissingFileError, NonFiniteError, OutsideRootError, TooManyPixelsError
from seminspect.data.sample import Sample, View
from seminspect.data.validate import validate_dataset
from seminspect.errors import SeminspectError


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``(dataset folder, a folder beside it)``, each holding one 8x8 image."""
    root, outside = tmp_path / "ds", tmp_path / "outside"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    write_image(root / "images" / "a.png", np.full((8, 8), 10, np.uint8))
    write_image(outside / "secret.png", np.full((8, 8), 99, np.uint8))
    return root, outside


# ----- the path rule -----------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked_folder"])
def test_a_path_leading_outside_the_dataset_folder_is_refused(layout, how):
    root, outside = layout
    rel = {"dotdot": "../outside/secret.png", "absolute": str(outside / "secret.png"),
           "symlink": "images/link.png", "symlinked_folder": "linked/secret.png"}[how]
    if how == "symlink":
        (root / "images" / "link.png").symlink_to(outside / "secret.png")
    if how == "symlinked_folder":
        (root / "linked").symlink_to(outside, target_is_directory=True)
    for kind in ("image", "mask", "depth"):
        with pytest.raises(OutsideRootError, match="outside the dataset folder") as info:
            read_input(root, rel, kind)
        assert rel in str(info.value) and "\n" not in str(info.value) and info.value.kind == "outside_root"
    with pytest.raises(OutsideRootError):
        check_input(root, rel)  # validate --fast applies the same rule


def test_paths_inside_the_folder_are_read_however_they_are_written(layout):
    root, _ = layout
    (root / "images" / "alias.png").symlink_to(root / "images" / "a.png")
    for rel in ("images/a.png", "images/../images/a.png", str(root / "images" / "a.png"), "images/alias.png"):
        assert read_input(root, rel).shape == (8, 8)
    assert resolve_inside(root, "images/a.png") == root / "images" / "a.png"  # messages name what was written
    with pytest.raises(MissingFileError, match="image path is empty"):
        read_input(root, "  ")


@pytest.mark.parametrize("rel", ["a" * 5000, "images/a\x00.png", "images/a.png/inside.png"])
def test_unusable_names_are_one_line_refusals_not_tracebacks(layout, rel):
    root, _ = layout
    for kind in ("image", "depth"):
        with pytest.raises(ImageReadError) as info:
            read_input(root, rel, kind)
        assert "\n" not in str(info.value)


def test_more_roots_by_argument_or_environment(layout, monkeypatch):
    root, outside = layout
    rel = "../outside/secret.png"
    assert read_input(root, rel, allow_roots=[outside])[0, 0] == 99
    monkeypatch.setenv(ENV_EXTRA_ROOTS, str(outside))
    assert read_input(root, rel)[0, 0] == 99
    monkeypatch.setenv(ENV_EXTRA_ROOTS, str(root / "images"))
    with pytest.raises(OutsideRootError):
        read_input(root, rel)


def _dataset_with(root: Path, rel: str, column: str = "path") -> Path:
    import pandas as pd

    with DatasetWriter(root) as w:
        w.add(Sample("s1", [View("target", 0, np.full((8, 8), 5, np.uint8))], is_abnormal=False))
    m = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    m[column] = rel
    m.to_csv(root / "manifest.csv", index=False)
    return root


def test_validate_reports_outside_paths_even_with_fast_and_honours_allow_roots(layout):
    root, outside = layout
    ds = _dataset_with(root.parent / "ds2", "../outside/secret.png")
    for check_images in (True, False):
        rep = validate_dataset(ds, progress=False, check_images=check_images)
        (p,) = [p for p in rep.problems if p.kind == "outside_root"]
        assert p.row == 2 and "../outside/secret.png" in p.message and not rep.ok
    assert validate_dataset(ds, progress=False, allow_roots=[outside]).ok
    with pytest.raises(OutsideRootError):
        SampleDataset(ds)[0]
    assert SampleDataset(ds, allow_roots=[outside])[0].views[0].image[0, 0] == 99


# ----- the pixel limit, from the header ----------------------------------------------------------------
HEADERS = {
    "tiff": lambda d: tiff_header_only(d / "h.tif", 80000, 80000),
    "tiff16": lambda d: tiff_header_only(d / "h16.tif", 20000, 20000, bits=16),
    "png": lambda d: png_header_only(d / "h.png", 80000, 80000),
    "png16": lambda d: png_header_only(d / "h16.png", 20000, 20000, bits=16),
    "jpeg": lambda d: jpeg_header_only(d / "h.jpg", 60000, 60000),
}


@pytest.mark.parametrize("fmt", sorted(HEADERS))
def test_a_huge_declared_size_is_refused_from_the_header(tmp_path, fmt):
    path = HEADERS[fmt](tmp_path)
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        with pytest.raises(TooManyPixelsError, match="over the limit of 50,000,000") as info:
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak} bytes allocated before refusing"
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("depth", [False, True])
def test_a_tiff_strip_inflating_past_its_declared_size_is_refused(tmp_path, depth):
    path = tiff_zlib_bomb(tmp_path / "bomb.tif", 100, 100, inflated=50_000_000)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match="decompression bomb"):
            read_depth(path) if depth else read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak} bytes allocated before refusing"


def test_a_huge_npy_depth_header_is_refused(tmp_path):
    with pytest.raises(TooManyPixelsError, match="80000x80000"):
        read_depth(npy_header_only(tmp_path / "d.npy", (80000, 80000)))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_the_limit_comes_from_the_environment_or_the_argument(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"a{suffix}"
    img = np.full((100, 100), 7, np.uint8)
    if suffix == ".jpg":
        Image.fromarray(img).save(path)
    else:
        write_image(path, img)
    assert read_image(path).shape == (100, 100)
    with pytest.raises(TooManyPixelsError, match="100x100 is 10,000 pixels, over the limit of 9,999"):
        read_image(path, max_pixels=9999)
    monkeypatch.setenv(ENV_MAX_PIXELS, "5_000")
    assert max_pixels() == 5000
    with pytest.raises(TooManyPixelsError, match=ENV_MAX_PIXELS):
        read_image(path)
    assert read_image(path, max_pixels=10_000).shape == (100, 100)  # the argument wins


def test_a_bad_limit_is_a_one_line_error(monkeypatch):
    assert max_pixels() == DEFAULT_MAX_PIXELS
    for bad in ("lots", "0", "-3"):
        monkeypatch.setenv(ENV_MAX_PIXELS, bad)
        with pytest.raises(LimitConfigError, match=ENV_MAX_PIXELS):
            max_pixels()
    assert issubclass(LimitConfigError, SeminspectError)


def test_pillow_guard_follows_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    monkeypatch.setenv(ENV_MAX_PIXELS, "400000000")  # above twice Pillow's default: it must not refuse first
    read_image(tmp_path / "a.png")
    assert Image.MAX_IMAGE_PIXELS == 400_000_000
    with pytest.raises(TooManyPixelsError, match="over the limit of 400,000,000"):
        read_image(png_header_only(tmp_path / "h.png", 80000, 80000))


# ----- bit depth, channels, formats ----------------------------------------------------------------------
def test_8_and_16_bit_grayscale_are_read(tmp_path):
    for dtype in (np.uint8, np.uint16):
        for suffix in (".png", ".tif"):
            img = (np.arange(64).reshape(8, 8) * 3).astype(dtype)
            write_image(tmp_path / f"a{suffix}", img)
            out = read_image(tmp_path / f"a{suffix}")
            assert out.dtype == dtype and np.array_equal(out, img)


@pytest.mark.parametrize(("name", "write", "needle"), [
    ("float.tif", lambda p: tifffile.imwrite(p, np.zeros((8, 8), np.float32)), "float32 is not 8- or 16-bit"),
    ("int32.tif", lambda p: tifffile.imwrite(p, np.zeros((8, 8), np.int32)), "int32 is not 8- or 16-bit"),
    ("stack.tif", lambda p: tifffile.imwrite(p, np.zeros((3, 8, 8), np.uint8), photometric="minisblack"),
     "2-D grayscale"),
    ("colour.png", lambda p: Image.fromarray(np.dstack([np.zeros((8, 8), np.uint8)] * 2
                                                       + [np.full((8, 8), 9, np.uint8)])).save(p), "colour"),
    ("gif.png", lambda p: Image.fromarray(np.zeros((8, 8), np.uint8)).save(p, format="GIF"), "cannot decode"),
])
def test_wrong_pixel_types_channels_and_formats_are_refused(tmp_path, name, write, needle):
    path = tmp_path / name
    write(path)
    with pytest.raises(ImageReadError, match=needle) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_a_colour_palette_is_refused_and_a_gray_palette_accepted(tmp_path):
    im = Image.new("P", (8, 8))
    im.putpalette([255, 0, 0] * 256)
    im.save(tmp_path / "red.png")
    with pytest.raises(ImageReadError, match="colour"):
        read_image(tmp_path / "red.png")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").dtype == np.uint8


# ----- depth maps: NaN and Inf ---------------------------------------------------------------------------
def test_depth_maps_with_nan_or_inf_are_refused(tmp_path):
    d = np.ones((6, 5), np.float32)
    np.save(tmp_path / "ok.npy", d)
    tifffile.imwrite(tmp_path / "ok.tiff", d)
    assert read_depth(tmp_path / "ok.npy").shape == read_depth(tmp_path / "ok.tiff").shape == (6, 5)
    nan = d.copy()
    nan[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    inf = d.copy()
    inf[0, 0] = -np.inf
    tifffile.imwrite(tmp_path / "inf.tiff", inf)
    big = np.ones((6, 5), np.float64)
    big[2, 2] = 1e300  # finite as float64, Inf as float32
    np.save(tmp_path / "big.npy", big)
    for name, needle in (("nan.npy", "1 NaN and 0 Inf"), ("inf.tiff", "0 NaN and 1 Inf"), ("big.npy", "1 Inf")):
        with pytest.raises(NonFiniteError, match=needle) as info:
            read_depth(tmp_path / name)
        assert name in str(info.value) and info.value.kind == "non_finite"


def test_malformed_npy_depth_maps_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((50, 50), np.float32))
    (tmp_path / "short.npy").write_bytes((tmp_path / "short.npy").read_bytes()[:-100])
    np.save(tmp_path / "complex.npy", np.zeros((4, 4), np.complex64))
    for name, needle in (("obj.npy", "not an integer or float"), ("cube.npy", "must be 2-D"),
                         ("short.npy", "truncated"), ("complex.npy", "not an integer or float")):
        with pytest.raises(ImageReadError, match=needle):
            read_depth(tmp_path / name)


def test_validate_names_each_new_kind(tmp_path):
    d = np.ones((8, 8), np.float32)
    d[0, 0] = np.nan
    with DatasetWriter(tmp_path / "ds") as w:
        w.add(Sample("s1", [View("target", 0, np.zeros((8, 8), np.uint8))], is_abnormal=False, depth=d * 0))
        w.add(Sample("s2", [View("target", 0, np.zeros((8, 8), np.uint8))], is_abnormal=False, depth=d))
    import pandas as pd

    m = pd.read_csv(tmp_path / "ds" / "manifest.csv", dtype=str, keep_default_na=False)
    tiff_header_only(tmp_path / "ds" / "huge.tif", 80000, 80000)
    m.loc[0, "path"] = "huge.tif"
    m.to_csv(tmp_path / "ds" / "manifest.csv", index=False)
    rep = validate_dataset(tmp_path / "ds", progress=False)
    kinds = {p.kind: p for p in rep.problems}
    assert kinds["too_many_pixels"].row == 2 and "huge.tif" in kinds["too_many_pixels"].message
    assert kinds["non_finite"].sample_id == "s2" and "NaN" in kinds["non_finite"].message


def test_refusals_are_one_line_and_survive_pickling():
    import pickle

    from seminspect.data.site_rules import SiteError

    err = OutsideRootError.at("ds/../x.png", "leads\noutside")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is OutsideRootError and str(back) == "ds/../x.png: leads outside" == str(err)
    assert (back.path, back.reason, back.kind) == ("ds/../x.png", "leads outside", "outside_root")
    site = pickle.loads(pickle.dumps(SiteError("m.csv", 7, "s1", "no target view")))
    assert str(site) == "m.csv: row 7 (sample 's1'): no target view" and site.file == "m.csv: row 7"
