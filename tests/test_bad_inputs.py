"""Bad inputs, table-driven, through ``read_image``/``read_labels`` and the ``medsam-segment``/``medsam-infer`` CLIs.

Library: a typed :class:`MedSAMIOError`, one line, naming the file and saying what to do. CLIs: non-zero exit,
exactly one ``error:`` line on stderr, no traceback, no (partial) output file. Inputs that are odd but usable
(NaN voxels, unusual dtypes, RGBA/palette, two DICOM series) must still work. Every file is generated, by the
builders in tests/bad_files.py (shared with the app-level tests in tests/ui/test_app_bad_inputs.py).
"""

from __future__ import annotations

import logging
import resource
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_files import (
    READ_ERRORS,
    READ_OK,
    Builder,
    huge_png,
    npz_extra_key,
    npz_missing_key,
    npz_object_array,
    write_nifti,
)
from fakes import BoxBackend, model_args
from PIL import Image

from medsam_desktop.cli import infer, segment
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.io import (
    GeometryMismatchError,
    InvalidImageError,
    MedSAMIOError,
    Volume,
    read_image,
    read_labels,
    write_labels_nifti,
)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> BoxBackend:
    """Both CLIs get an instant backend whose mask is the prompt box (the real --weights path is covered by
    test_infer_cli_runs_odd_but_valid_boxes and tests/test_cli_tools.py)."""
    backend = BoxBackend()
    for module in (segment, infer):
        monkeypatch.setattr(module, "predictor_from_args", lambda args: Predictor(backend))
    return backend


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _assert_message(err: MedSAMIOError, path: Path, text: str) -> None:
    message = str(err)
    assert "\n" not in message, message
    assert path.name in message, f"the message does not name {path.name}: {message}"
    assert text in message, f"expected {text!r} in: {message}"
    assert message.rstrip().endswith("."), f"no action sentence: {message}"
    assert err.action and len(err.action) > 10, f"no action in: {message}"
    assert "Traceback" not in message and "sitk::ERROR" not in message and len(message) < 400


def _cli(main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def _assert_no_leftovers(folder: Path, allowed: set[str]) -> None:
    leftovers = {p.name for p in folder.iterdir()} - allowed
    assert not leftovers, f"unexpected files left behind: {sorted(leftovers)}"


# --- read_image ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(READ_ERRORS))
def test_read_image_refuses_with_one_actionable_line(tmp_path: Path, case: str) -> None:
    build, error, text = READ_ERRORS[case]
    path = build(tmp_path)
    with warnings.catch_warnings(), pytest.raises(error) as info:
        warnings.simplefilter("error")  # no raw library warnings (e.g. Pillow's DecompressionBombWarning)
        read_image(path)
    _assert_message(info.value, path, text)
    assert not (tmp_path / "PWNED").exists(), "an object array was unpickled"


@pytest.mark.parametrize("case", sorted(READ_OK))
def test_read_image_accepts_odd_but_usable_inputs(tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    build, shape, dtype = READ_OK[case]
    path = build(tmp_path)
    with caplog.at_level(logging.INFO, logger="medsam_desktop"), warnings.catch_warnings():
        warnings.simplefilter("error")  # problems are reported through logging, not raw warnings
        vol = read_image(path)
    assert vol.array.shape == shape and vol.array.dtype == dtype, (vol.array.shape, vol.array.dtype)
    if vol.array.dtype.kind == "f":
        assert np.isfinite(vol.array).all()
    if case == "nan_voxels":
        assert any("NaN/Inf" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        assert vol.array[1, 5, 5] == np.nanmin(np.where(np.isfinite(vol.array), vol.array, np.nan))
    if case == "bool_png":
        assert set(np.unique(vol.array)) == {0, 255}
    if case == "dicom_two_series":
        assert vol.description == "big" and any("2 series" in r.getMessage() for r in caplog.records)


def test_huge_png_is_refused_without_allocating(tmp_path: Path) -> None:
    path = huge_png(tmp_path)
    assert path.stat().st_size < 200_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImageError, match="too large"):
            read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert peak < 50e6, f"python allocations peaked at {peak / 1e6:.0f} MB"
    assert rss_growth_mb < 500, f"peak RSS grew by {rss_growth_mb:.0f} MB"


def test_nothing_is_written_next_to_refused_inputs(tmp_path: Path) -> None:
    for build, error, _ in READ_ERRORS.values():
        folder = tmp_path / build.__name__
        folder.mkdir()
        path = build(folder)
        before = sorted(p.name for p in folder.rglob("*"))
        with pytest.raises(error):
            read_image(path)
        assert sorted(p.name for p in folder.rglob("*")) == before


# --- read_labels: a mask that does not fit its image ---------------------------------------------


@pytest.mark.parametrize(
    ("what", "text"),
    [("shape", "size 12x10x4 vs 12x10x5"), ("spacing", "spacing"), ("origin", "origin"), ("direction", "orientation")],
)
def test_read_labels_refuses_mask_of_another_image(tmp_path: Path, what: str, text: str) -> None:
    ref = Volume(np.zeros((5, 10, 12), np.int16), spacing=(0.8, 0.8, 2.0), origin=(1.0, 2.0, 3.0))
    labels = np.zeros((4, 10, 12) if what == "shape" else (5, 10, 12), np.uint8)
    other = Volume(
        labels,
        spacing=(0.8, 0.9, 2.0) if what == "spacing" else ref.spacing,
        origin=(1.0, 2.0, 9.0) if what == "origin" else ref.origin,
        direction=(0, 1, 0, 1, 0, 0, 0, 0, 1) if what == "direction" else ref.direction,
    )
    path = write_labels_nifti(labels, other, tmp_path / "mask.nii.gz")
    with pytest.raises(GeometryMismatchError) as info:
        read_labels(path, ref)
    _assert_message(info.value, path, text)


# --- medsam-segment -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(READ_ERRORS))
def test_segment_cli_refuses_bad_images(
    tmp_path: Path, case: str, random_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, _, text = READ_ERRORS[case]
    (tmp_path / "in").mkdir()
    src = build(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = _cli(
        segment.main,
        [
            str(src),
            "--box",
            "1",
            "1",
            "8",
            "8",
            "--slice",
            "0",
            "-o",
            str(out_dir / "mask.nii.gz"),
            *model_args(random_weights),
        ],
        capsys,
    )
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and text in lines[0] and src.name in lines[0], err
    assert "Traceback" not in err and "Warning" not in err, err
    _assert_no_leftovers(out_dir, set())
    assert not (tmp_path / "in" / "PWNED").exists()


@pytest.mark.parametrize("case", sorted(READ_OK))
def test_segment_cli_handles_odd_but_usable_images(
    tmp_path: Path, case: str, random_weights: Path, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    build, shape, _ = READ_OK[case]
    src = build(tmp_path)
    out = tmp_path / ("mask.png" if shape[0] == 1 else "mask.nii.gz")
    code, err = _cli(
        segment.main,
        [
            str(src),
            "--box",
            "4",
            "4",
            "30",
            "30",
            "--slice",
            "1" if shape[0] > 1 else "0",
            "-o",
            str(out),
            "--label",
            "7",
            *model_args(random_weights),
        ],
        capsys,
    )
    assert code == 0, err
    assert not _error_lines(err) and "Traceback" not in err
    labels = np.asarray(Image.open(out)) if out.suffix == ".png" else sitk.GetArrayFromImage(sitk.ReadImage(out))
    assert labels.shape == (shape[1], shape[2]) if out.suffix == ".png" else labels.shape == shape[:3]
    assert set(np.unique(labels)) == {0, 7} and fake_model.encodes == 1
    assert np.abs(np.subtract(_bbox(labels == 7 if labels.ndim == 2 else labels[1] == 7), [4, 4, 30, 30])).max() <= 1
    if case == "nan_voxels":
        assert "NaN/Inf" in err and "warning:" in err


#: --box values -> (exit code, expected mask bbox or text of the error line)
SEGMENT_BOXES: dict[str, tuple[list[str], int, list[int] | str]] = {
    "partly_negative": (["-5", "-5", "20", "20"], 0, [0, 0, 20, 20]),  # clipped to the image
    "past_far_edge": (["30", "20", "90", "70"], 0, [30, 20, 47, 39]),  # clipped to the 48x40 image
    "inverted": (["30", "30", "4", "4"], 0, [4, 4, 30, 30]),  # corners sorted
    "zero_height_below": (["4", "40", "30", "40"], 1, "outside"),  # one row below the 48x40 image
    "outside": (["100", "100", "140", "140"], 1, "outside"),
    "all_negative": (["-30", "-30", "-2", "-2"], 1, "outside"),
    "nan": (["nan", "1", "20", "20"], 1, "finite"),
    "inf": (["1", "1", "inf", "20"], 1, "finite"),
}


@pytest.mark.parametrize("case", sorted(SEGMENT_BOXES))
@pytest.mark.parametrize("zrange", [False, True], ids=["slice", "zrange"])
def test_segment_cli_boxes(
    tmp_path: Path,
    case: str,
    zrange: bool,
    random_weights: Path,
    fake_model: BoxBackend,
    capsys: pytest.CaptureFixture[str],
) -> None:
    box, expected, result = SEGMENT_BOXES[case]
    src = write_nifti(tmp_path / "vol.nii.gz", np.random.default_rng(7).integers(0, 255, (3, 40, 48)).astype(np.uint8))
    out = tmp_path / "out" / "mask.nii.gz"
    out.parent.mkdir()
    where = ["--zrange", "0", "2"] if zrange else ["--slice", "1"]
    code, err = _cli(
        segment.main, [str(src), "--box", *box, *where, "-o", str(out), *model_args(random_weights)], capsys
    )
    assert code == expected, err
    assert "Traceback" not in err
    if isinstance(result, list):
        assert out.is_file() and not _error_lines(err)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(out))
        for z in (0, 1, 2) if zrange else (1,):
            assert np.abs(np.subtract(_bbox(labels[z] > 0), result)).max() <= 1, (z, _bbox(labels[z] > 0))
    else:
        lines = _error_lines(err)
        assert len(lines) == 1 and result in lines[0], err
        _assert_no_leftovers(out.parent, set())


@pytest.mark.parametrize("box", [[12, 4, 12, 30], [4, 39, 30, 39], [47, 0, 47, 0]], ids=["width0", "lastrow", "pixel"])
@pytest.mark.parametrize("zrange", [False, True], ids=["slice", "zrange"])
def test_segment_cli_segments_zero_width_or_height_boxes(
    tmp_path: Path, box: list[int], zrange: bool, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    """A box of zero width or height is a valid prompt: scaled to the model frame as LiteMedSAM does."""
    src = write_nifti(tmp_path / "vol.nii.gz", np.random.default_rng(7).integers(0, 255, (3, 40, 48)).astype(np.uint8))
    out = tmp_path / "mask.nii.gz"
    where = ["--zrange", "0", "2"] if zrange else ["--slice", "1"]
    argv = [str(src), "--box", *map(str, box), *where, "-o", str(out), "-q"]
    code, err = _cli(segment.main, argv, capsys)
    assert code == 0 and not _error_lines(err) and "Traceback" not in err, err
    assert out.is_file()
    np.testing.assert_allclose(fake_model.prompts[0], np.array(box) * 256 / 48)  # the middle slice: the box


# --- medsam-infer -------------------------------------------------------------------------------


def _npz_2d(tmp: Path, name: str, boxes: np.ndarray) -> Path:
    img = np.random.default_rng(8).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    np.savez(tmp / name, imgs=img, boxes=boxes)
    return tmp / name


def _npz_3d(tmp: Path, name: str, boxes: np.ndarray) -> Path:
    img = np.random.default_rng(9).integers(0, 255, (4, 40, 48), dtype=np.uint8)
    np.savez(tmp / name, imgs=img, boxes=boxes, spacing=np.array([2.0, 1.0, 1.0]))
    return tmp / name


#: id -> (builder, text of the error line)
INFER_ERRORS: dict[str, tuple[Builder, str]] = {
    "object_array": (npz_object_array, "Python objects"),
    "missing_key": (npz_missing_key, "missing boxes"),
    "extra_key": (npz_extra_key, "unexpected secret"),
    "truncated": (lambda t: _cut(npz_extra_key(t)), "damaged or truncated"),
    "box_shape": (lambda t: _npz_2d(t, "2DBox_US_shape.npz", np.array([[1, 2, 3, 4, 5]])), "'boxes' must be"),
}

#: id -> (builder of a case whose object 2 is bad, objects 1 and 3 fine; text of the warning)
INFER_BAD_OBJECTS: dict[str, tuple[Builder, str]] = {
    "inverted": (lambda t: _npz_2d(t, "2DBox_US_inv.npz", _three([20, 20, 2, 2])), "min > max"),
    "outside": (lambda t: _npz_2d(t, "2DBox_US_out.npz", _three([10, 40, 20, 45])), "outside the 48x40 image"),
    "nan": (lambda t: _npz_2d(t, "2DBox_US_nan.npz", _three([np.nan, 1.0, 20.0, 20.0])), "NaN"),
    "inf": (lambda t: _npz_2d(t, "2DBox_US_inf.npz", _three([1.0, 1.0, np.inf, 20.0])), "NaN or infinite"),
    "3d_inverted_z": (lambda t: _npz_3d(t, "3DBox_CT_inv.npz", _three([5, 5, 3, 30, 30, 1])), "min > max"),
    "3d_outside_z": (lambda t: _npz_3d(t, "3DBox_CT_out.npz", _three([5, 5, 4, 30, 30, 9])), "outside the 48x40x4"),
    "3d_nan": (lambda t: _npz_3d(t, "3DBox_CT_nan.npz", _three([5.0, 5, 0, np.nan, 30, 3])), "NaN"),
}


def _three(bad: list[float]) -> np.ndarray:
    """Boxes of three objects, the middle one ``bad`` (2D or 3D, by its length)."""
    good = [[2, 2, 14, 14], [24, 20, 44, 36]] if len(bad) == 4 else [[2, 2, 0, 14, 14, 3], [24, 20, 1, 44, 36, 2]]
    return np.array([good[0], bad, good[1]], dtype=np.int64 if np.isfinite(bad).all() else np.float64)


def _cut(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-40])
    return path


@pytest.mark.parametrize("case", sorted(INFER_ERRORS))
def test_infer_cli_refuses_bad_cases(
    tmp_path: Path, case: str, random_weights: Path, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    build, text = INFER_ERRORS[case]
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    bad = build(inputs)
    good = _npz_2d(inputs, "2DBox_US_good.npz", np.array([[4, 4, 30, 30]]))
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), *model_args(random_weights)], capsys)
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and bad.name in lines[0] and text in lines[0], err
    assert "Traceback" not in err
    _assert_no_leftovers(outputs, {good.name, "timing.csv"})  # the good case is still done, nothing else
    assert not (inputs / "PWNED").exists(), "an object array was unpickled"
    assert "2DBox_US_good.npz" in (outputs / "timing.csv").read_text()


@pytest.mark.parametrize("case", sorted(INFER_BAD_OBJECTS))
def test_infer_cli_a_bad_object_costs_only_its_mask(
    tmp_path: Path, case: str, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    """The case is written with objects 1 and 3 segmented, label 2 empty, one warning line; exit status 0."""
    build, text = INFER_BAD_OBJECTS[case]
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    path = build(inputs)
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), "-q"], capsys)
    assert code == 0 and not _error_lines(err) and "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and f"{path.name}: object 2: " in warnings[0] and text in warnings[0], err
    segs = np.load(outputs / path.name)["segs"]
    assert set(np.unique(segs)) == {0, 1, 3}
    assert (segs[1] if segs.ndim == 3 else segs)[8, 8] == 1 and (segs[1] if segs.ndim == 3 else segs)[28, 34] == 3
    assert path.name in (outputs / "timing.csv").read_text()


def test_infer_cli_exit_status_counts_only_unreadable_or_unwritten_cases(
    tmp_path: Path, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every object bad: written (all background), warnings, exit 0. A case whose output cannot be written: one
    error line and exit 1, the rest of the batch still written."""
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    _npz_2d(inputs, "2DBox_US_allbad.npz", np.array([[20, 20, 2, 2], [60, 0, 70, 10]]))
    _npz_3d(inputs, "3DBox_CT_allbad.npz", np.array([[5.0, 5, 0, np.nan, 30, 3]]))
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), "-q"], capsys)
    assert code == 0 and not _error_lines(err), err
    assert len([line for line in err.splitlines() if "warning:" in line]) == 3, err
    assert not np.load(outputs / "2DBox_US_allbad.npz")["segs"].any()
    assert np.load(outputs / "3DBox_CT_allbad.npz")["segs"].shape == (4, 40, 48)

    _npz_2d(inputs, "2DBox_US_blocked.npz", np.array([[4, 4, 30, 30]]))
    (outputs / "2DBox_US_blocked.npz").mkdir()  # its output path is taken by a folder
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), "-q"], capsys)
    lines = _error_lines(err)
    assert code == 1 and len(lines) == 1 and "2DBox_US_blocked.npz" in lines[0] and "Traceback" not in err, err
    assert "2DBox_US_allbad.npz" in (outputs / "timing.csv").read_text()


def test_infer_cli_runs_odd_but_valid_boxes(
    tmp_path: Path, random_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Boxes touching the far edge (x1 == W, allowed by the file format) or reaching past the image are clipped,
    float boxes rounded, zero width/height/depth boxes segmented, with the real (random-weights) model."""
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    _npz_2d(inputs, "2DBox_US_edge.npz", np.array([[0, 0, 48, 40], [-3, 2, 20, 20], [10, 10, 60, 20]]))
    _npz_2d(inputs, "2DBox_US_thin.npz", np.array([[10, 39, 40, 39], [5, 5, 5, 30], [47, 0, 47, 0]]))
    _npz_3d(inputs, "3DBox_CT_float.npz", np.array([[5.2, 5.0, 0.0, 30.7, 30.0, 3.0]]))
    _npz_3d(inputs, "3DBox_CT_thin.npz", np.array([[5, 20, 0, 30, 20, 3], [10, 5, 2, 10, 30, 2]]))
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), *model_args(random_weights)], capsys)
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert code == 0 and not _error_lines(err) and len(warnings) == 1 and "rounded" in warnings[0], err
    assert np.load(outputs / "2DBox_US_edge.npz")["segs"].shape == (40, 48)
    assert np.load(outputs / "2DBox_US_thin.npz")["segs"].shape == (40, 48)
    assert np.load(outputs / "3DBox_CT_float.npz")["segs"].shape == (4, 40, 48)
    assert np.load(outputs / "3DBox_CT_thin.npz")["segs"].shape == (4, 40, 48)


def test_infer_cli_prompts_a_zero_height_box_as_the_reference(
    tmp_path: Path, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    """The holdout's ``[637, 521, 661, 521]`` on the last row of a 522-row image: the decoder gets the box times
    256 / max(H, W) (LiteMedSAM's ``resize_box_to_256``), and the case's other object its mask."""
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    img = np.zeros((522, 700, 3), np.uint8)
    np.savez(inputs / "2DBox_US_thin.npz", imgs=img, boxes=np.array([[637, 521, 661, 521], [100, 100, 300, 300]]))
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), "-q"], capsys)
    assert code == 0 and not _error_lines(err), err
    np.testing.assert_allclose(fake_model.prompts[0], np.array([637, 521, 661, 521]) * 256 / 700)
    segs = np.load(outputs / "2DBox_US_thin.npz")["segs"]
    assert segs.shape == (522, 700) and segs[200, 200] == 2


def test_unexpected_failures_are_still_one_line(
    tmp_path: Path, fake_model: BoxBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug or resource error deep in the engine (here: RuntimeError/MemoryError) never prints a traceback."""
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    _npz_2d(inputs, "2DBox_US_a.npz", np.array([[4, 4, 30, 30]]))
    _npz_2d(inputs, "2DBox_US_b.npz", np.array([[4, 4, 30, 30]]))
    real = infer.segment_challenge_case
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory\nwith a second line")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(infer, "segment_challenge_case", flaky)
    assert infer.main(["-i", str(inputs), "-o", str(outputs), "-q"]) == 1
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "2DBox_US_a.npz: RuntimeError: CUDA out of memory" in lines[0], err
    assert "Traceback" not in err
    _assert_no_leftovers(outputs, {"2DBox_US_b.npz", "timing.csv"})

    src = write_nifti(tmp_path / "v.nii.gz", np.zeros((2, 20, 20), np.uint8))

    def no_memory(*args: object, **kwargs: object) -> np.ndarray:
        raise MemoryError()

    monkeypatch.setattr(segment, "segment_slice", no_memory)
    out = tmp_path / "m.nii.gz"
    argv = [str(src), "--box", "1", "1", "10", "10", "--slice", "0", "-o", str(out), "-q"]
    assert segment.main(argv) == 1
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "MemoryError" in err and "Traceback" not in err, err
    assert not out.exists()
