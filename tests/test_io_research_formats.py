"""MINC, AFNI and PAR/REC open through nibabel with their geometry (RAS -> LPS), NIfTI-2 through the NIfTI path;
a pair missing its other file and MINC 2 without h5py are refused in one line. Test files are nibabel's own
(shipped with it); the tests skip without them."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsam_desktop.io import MedSAMIOError, read_image
from medsam_desktop.io.readers import detect_format
from medsam_desktop.io.readers_nibabel import affine_ras_to_itk

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def _nib_file(name: str) -> Path:
    path = NIB_DATA / name
    if not path.is_file():
        pytest.skip(f"nibabel's test file {name} is not installed")
    return path


def _same_geometry(volume, img) -> None:
    spacing, origin, direction = affine_ras_to_itk(img.affine)
    np.testing.assert_allclose(volume.spacing, spacing)
    np.testing.assert_allclose(volume.origin, origin)
    np.testing.assert_allclose(volume.direction, direction, atol=1e-12)
    data = np.asanyarray(img.dataobj)
    np.testing.assert_allclose(volume.array, data.reshape(data.shape[:3]).transpose(2, 1, 0))


def test_minc1_opens_with_its_geometry(tmp_path: Path) -> None:
    src = _nib_file("minc1_1_scale.mnc")
    path = shutil.copy(src, tmp_path / "scan.MNC")  # any case
    assert detect_format(Path(path)) == "minc"
    _same_geometry(read_image(path), nib.load(str(src)))


def test_minc2_needs_h5py_and_says_so(tmp_path: Path) -> None:
    src = _nib_file("minc2_1_scale.mnc")
    if importlib.util.find_spec("h5py") is not None:
        _same_geometry(read_image(src), nib.load(str(src)))
        return
    with pytest.raises(MedSAMIOError, match="MINC 2 file, which needs the h5py package") as err:
        read_image(src)
    assert "\n" not in str(err.value)


def test_afni_pair_opens_from_either_file_and_a_4d_one_is_refused(tmp_path: Path) -> None:
    head = _nib_file("example4d+orig.HEAD")
    img = nib.load(str(head))
    data = np.asanyarray(img.dataobj)[..., 1]  # one sub-brick: a 3D AFNI dataset
    brik = tmp_path / "one+orig.BRIK"
    order = ">" if "MSB" in head.read_text() else "<"
    data.transpose(2, 1, 0).astype(data.dtype.newbyteorder(order)).tofile(brik)  # x fastest, as AFNI stores it
    text = head.read_text()
    text = _afni_single_brick(text)
    (tmp_path / "one+orig.HEAD").write_text(text)
    for path in (tmp_path / "one+orig.HEAD", brik):
        volume = read_image(path)
        assert volume.array.shape == data.shape[::-1]
        np.testing.assert_array_equal(volume.array, data.transpose(2, 1, 0))
        spacing, origin, _ = affine_ras_to_itk(img.affine)
        np.testing.assert_allclose(volume.spacing, spacing)
        np.testing.assert_allclose(volume.origin, origin)
    shutil.copy(head, tmp_path / "four+orig.HEAD")
    shutil.copy(NIB_DATA / "example4d+orig.BRIK.gz", tmp_path / "four+orig.BRIK.gz")
    with pytest.raises(MedSAMIOError, match="4D image"):
        read_image(tmp_path / "four+orig.HEAD")
    brik.unlink()
    with pytest.raises(MedSAMIOError, match=r"data file beside one\+orig\.HEAD is missing"):
        read_image(tmp_path / "one+orig.HEAD")


def _afni_single_brick(text: str) -> str:
    """An AFNI header of example4d reduced to its second sub-brick (rank line, types, stats, scale factors)."""
    blocks = text.split("\ntype = ")
    out = []
    for block in blocks:
        lines = block.split("\n")
        name = next((ln.split("=", 1)[1].strip() for ln in lines if ln.startswith("name")), "")
        if name in ("DATASET_RANK", "BRICK_TYPES", "BRICK_STATS", "BRICK_FLOAT_FACS"):
            count_i = next(i for i, ln in enumerate(lines) if ln.startswith("count"))
            values = " ".join(lines[count_i + 1 :]).split()
            if name == "DATASET_RANK":
                values[1] = "1"
            elif name == "BRICK_STATS":
                values = values[2:4]
            else:
                values = values[1:2]
            lines = [*lines[:count_i], f"count = {len(values)}", " ".join(values), ""]
        out.append("\n".join(lines))
    return "\ntype = ".join(out)


def test_parrec_opens_as_mr_from_either_file(tmp_path: Path) -> None:
    par = _nib_file("T1.PAR")
    shutil.copy(par, tmp_path / "t1.PAR")
    with open(par) as fh:
        header = nib.parrec.PARRECHeader.from_fileobj(fh)
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    rng = np.random.default_rng(0)
    rng.integers(0, 1000, int(np.prod(shape))).astype(dtype).tofile(tmp_path / "t1.REC")
    img = nib.load(str(tmp_path / "t1.PAR"))
    for path in (tmp_path / "t1.PAR", tmp_path / "t1.REC"):
        volume = read_image(path)
        assert volume.modality == "MR" and volume.source_path == path
        _same_geometry(volume, img)
    (tmp_path / "t1.REC").unlink()
    with pytest.raises(MedSAMIOError, match=r"data file beside t1\.PAR is missing"):
        read_image(tmp_path / "t1.PAR")


def test_nifti2_opens_with_its_geometry(tmp_path: Path) -> None:
    affine = np.array([[0.8, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    nib.save(nib.Nifti2Image(data, affine), tmp_path / "v2.nii")
    assert detect_format(tmp_path / "v2.nii") == "nifti"
    _same_geometry(read_image(tmp_path / "v2.nii"), nib.load(str(tmp_path / "v2.nii")))
