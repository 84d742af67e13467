"""Every file the engine and the CLIs write is replaced atomically: when the underlying writer fails midway
(after writing part of the file), the previous file is intact and no temporary file is left behind."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from fakes import BoxBackend
from PIL import Image

from medsam_desktop.cli import evaluate, infer
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.io import OutputWriteError, Volume, write_challenge_segs, write_labels_nifti, write_mask_png
from medsam_desktop.model import build_model, save_checkpoint


def _half_then_fail(exc: BaseException) -> Callable[..., None]:
    """A stand-in writer: writes some bytes to the target it was given, then raises ``exc``."""

    def write(obj: object, target: object, *args: object, **kwargs: object) -> None:
        if hasattr(target, "write"):
            target.write(b"PARTIAL" * 100)  # type: ignore[union-attr]
        else:
            Path(str(target)).write_bytes(b"PARTIAL" * 100)
        raise exc

    return write


def _assert_intact(folder: Path, name: str, before: bytes) -> None:
    assert (folder / name).read_bytes() == before, "the previous file was damaged"
    assert sorted(p.name for p in folder.iterdir()) == [name], "a temporary file was left behind"


def test_write_challenge_segs_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_challenge_segs(tmp_path / "case.npz", np.ones((4, 4), np.uint8))
    before = (tmp_path / "case.npz").read_bytes()
    monkeypatch.setattr(np, "savez_compressed", lambda fh, **arrays: _half_then_fail(OSError(28, "disk full"))(0, fh))
    with pytest.raises(OutputWriteError, match="disk full"):
        write_challenge_segs(tmp_path / "case.npz", np.zeros((4, 4), np.uint8))
    _assert_intact(tmp_path, "case.npz", before)


def test_write_labels_nifti_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = Volume(np.zeros((2, 4, 5), np.int16), spacing=(0.5, 0.5, 2.0))
    write_labels_nifti(np.ones((2, 4, 5), np.uint8), ref, tmp_path / "labels.nii.gz")
    before = (tmp_path / "labels.nii.gz").read_bytes()

    def failing_write(image: sitk.Image, name: str, *args: object, **kwargs: object) -> None:
        _half_then_fail(RuntimeError("ITK ERROR: NiftiImageIO: disk full"))(image, name)

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(OutputWriteError) as info:
        write_labels_nifti(np.zeros((2, 4, 5), np.uint8), ref, tmp_path / "labels.nii.gz")
    assert "\n" not in str(info.value) and "labels.nii.gz" in str(info.value)
    _assert_intact(tmp_path, "labels.nii.gz", before)


def test_write_mask_png_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mask_png(np.ones((4, 5), np.uint8), tmp_path / "mask.png")
    before = (tmp_path / "mask.png").read_bytes()

    def failing_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        _half_then_fail(OSError(28, "No space left on device"))(self, fp)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OutputWriteError, match="could not be written"):
        write_mask_png(np.zeros((4, 5), np.uint8), tmp_path / "mask.png")
    _assert_intact(tmp_path, "mask.png", before)


def test_timing_csv_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    outputs.mkdir()
    np.savez(inputs / "2DBox_US_a.npz", imgs=np.zeros((20, 24, 3), np.uint8), boxes=np.array([[2, 2, 12, 12]]))
    (outputs / "timing.csv").write_text("case,seconds,n_boxes\nold.npz,1.0,1\n")
    before = (outputs / "timing.csv").read_bytes()
    monkeypatch.setattr(infer, "predictor_from_args", lambda args: Predictor(BoxBackend()))

    class FailingWriter:
        def __init__(self, fh: object) -> None:
            self.fh = fh

        def writerow(self, row: object) -> None:
            self.fh.write("case,seconds,n_boxes\n")  # type: ignore[attr-defined]

        def writerows(self, rows: object) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(infer.csv, "writer", FailingWriter)
    code = infer.main(["-i", str(inputs), "-o", str(outputs), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "timing.csv" in lines[0] and "No space left" in lines[0], err
    assert (outputs / "timing.csv").read_bytes() == before
    assert sorted(p.name for p in outputs.iterdir()) == ["2DBox_US_a.npz", "timing.csv"]


def test_eval_csv_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gts, segs, out = tmp_path / "gts", tmp_path / "segs", tmp_path / "out"
    for folder in (gts, segs, out):
        folder.mkdir()
    gt = np.zeros((12, 12), np.uint8)
    gt[2:8, 3:9] = 1
    np.savez(gts / "2DBox_CT_a.npz", gts=gt)
    np.savez(segs / "2DBox_CT_a.npz", segs=gt)
    argv = ["-s", str(segs), "-g", str(gts), "--csv", str(out / "metrics.csv"), "-q"]
    assert evaluate.main(argv) == 0
    before = (out / "metrics.csv").read_bytes()
    assert next(iter(csv.DictReader(before.decode().splitlines())))["DSC"] == "1.000000"
    capsys.readouterr()

    real_writer = csv.writer

    def failing_writer(fh: object, *args: object, **kwargs: object) -> object:
        writer = real_writer(fh, *args, **kwargs)  # type: ignore[arg-type]

        class Half:
            def writerow(self, row: object) -> None:
                writer.writerow(row)  # type: ignore[arg-type]
                raise OSError(28, "No space left on device")

        return Half()

    monkeypatch.setattr(evaluate.csv, "writer", failing_writer)
    assert evaluate.main(argv) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "metrics.csv" in lines[0], err
    _assert_intact(out, "metrics.csv", before)


def test_save_checkpoint_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("repvit_m0_6")
    save_checkpoint(model, tmp_path / "student.pt", "repvit_m0_6")
    before = (tmp_path / "student.pt").read_bytes()
    monkeypatch.setattr(torch, "save", _half_then_fail(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(model, tmp_path / "student.pt", "repvit_m0_6")
    _assert_intact(tmp_path, "student.pt", before)
    monkeypatch.setattr(torch, "save", _half_then_fail(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tmp_path / "student.pt", "repvit_m0_6")
    _assert_intact(tmp_path, "student.pt", before)
