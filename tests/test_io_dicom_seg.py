"""DICOM SEG: written with highdicom onto the CT series with complete UIDs, read back pixel-identical (highdicom
and pydicom) and equal to the NIfTI export, each frame at its source instance's position; sources a SEG cannot
reference are refused in one line, by the writer and by ``medsam-segment -o OUT.dcm`` before any inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from fakes import model_args

from medsam_desktop.cli import segment
from medsam_desktop.io import MedSAMIOError, Volume, read_image, read_labels, write_labels_nifti
from medsam_desktop.io.dicom_seg import SegExportError, Segment, read_dicom_seg, source_files, write_dicom_seg


@pytest.fixture(scope="module")
def ct_series(shared_data: Path) -> Volume:
    folder = shared_data / "dicom" / "ct_series_uids"
    if not folder.is_dir():
        pytest.skip("the CT series with complete UIDs is not in ../shared/data/dicom")
    return read_image(folder)


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[3:10, 100:200, 150:260] = 2
    labels[5:8, 300:350, 300:360] = 7
    return labels


def test_round_trip_is_pixel_identical_and_equals_the_nifti_export(ct_series: Volume, tmp_path: Path) -> None:
    import highdicom as hd

    labels = _labels(ct_series.array.shape)
    segments = [Segment(2, "liver", (200, 80, 60)), Segment(7, "spleen", (10, 200, 30)), Segment(9, "none", (1, 1, 1))]
    out = write_dicom_seg(tmp_path / "seg.dcm", labels, ct_series, segments)
    back, got = read_dicom_seg(out, ct_series)
    assert np.array_equal(back, labels)
    assert [(s.value, s.name) for s in got] == [(2, "liver"), (7, "spleen")]  # the empty label is not a segment
    assert got[0].color == pytest.approx((200, 80, 60), abs=2)
    nifti = write_labels_nifti(labels, ct_series, tmp_path / "labels.nii.gz")
    assert np.array_equal(read_labels(nifti, ct_series), back)
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    sources = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in source_files(ct_series)}
    seg = hd.seg.segread(out)
    assert {str(r[2]) for r in seg.get_source_image_uids()} <= set(sources)
    for frame in ds.PerFrameFunctionalGroupsSequence:  # geometry per frame: the source instance's position
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        source = pydicom.dcmread(sources[uid], stop_before_pixels=True)
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in source.ImagePositionPatient], atol=1e-4)
    assert int(ds.NumberOfFrames) == 7 + 3  # frames with voxels only, one per segment and slice


def test_sources_a_seg_cannot_reference_are_refused_in_one_line(raw_dir: Path, tmp_path: Path) -> None:
    blank = read_image(raw_dir / "ct_dicom_series")  # blank SOP Class and Series UIDs
    with pytest.raises(SegExportError, match="cannot reference it") as err:
        write_dicom_seg(tmp_path / "a.dcm", np.ones(blank.array.shape, np.uint8), blank, [Segment(1, "a", (1, 2, 3))])
    assert "\n" not in str(err.value) and "NIfTI" in str(err.value)
    nifti = read_image(raw_dir / "example_mr_sm.nii.gz")
    with pytest.raises(SegExportError, match="not read from DICOM"):
        write_dicom_seg(tmp_path / "b.dcm", np.ones(nifti.array.shape, np.uint8), nifti, [Segment(1, "a", (1, 2, 3))])
    assert not (tmp_path / "a.dcm").exists() and not (tmp_path / "b.dcm").exists()


def test_a_seg_of_another_series_is_refused(ct_series: Volume, raw_dir: Path, tmp_path: Path) -> None:
    out = write_dicom_seg(tmp_path / "seg.dcm", _labels(ct_series.array.shape), ct_series, [Segment(2, "x", (9, 9, 9))])
    other = read_image(raw_dir / "CT_small.dcm")
    with pytest.raises(MedSAMIOError, match="another series"):
        read_dicom_seg(out, other)


def test_segment_cli_writes_a_seg_and_refuses_early(ct_series: Volume, raw_dir: Path, tmp_path: Path,
                                                   random_weights: Path, capsys) -> None:  # fmt: skip
    folder = Path(ct_series.source_path)
    out = tmp_path / "cli.dcm"
    args = [str(folder), "--box", "100", "100", "300", "300", "--slice", "10", "--label", "3", "-o", str(out)]
    assert segment.main([*args, *model_args(random_weights)]) == 0
    back, segs = read_dicom_seg(out, ct_series)
    assert [s.value for s in segs] == [3] and back[10].any() and not back[:10].any()
    blank = [
        str(raw_dir / "ct_dicom_series"),
        "--box",
        "1",
        "1",
        "30",
        "30",
        "--slice",
        "1",
        "-o",
        str(tmp_path / "x.dcm"),
    ]
    assert segment.main([*blank, *model_args(tmp_path / "no_such_weights.pt")]) == 1  # refused before the model
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reference it" in err[0]


def test_the_app_saves_a_seg_and_opens_it_onto_its_series(ct_series: Volume, tmp_path: Path) -> None:
    from medsam_desktop.core.document import files
    from medsam_desktop.core.document.annotation import AnnotationSession

    session = AnnotationSession(ct_series)
    liver = session.add_label("liver", (200, 80, 60)).id
    session.add_label("unused")
    tumour = session.add_label("tumour", (30, 30, 220)).id
    session.apply_mask(4, _labels(ct_series.array.shape)[4] == 2, label=liver)
    session.apply_mask(6, _labels(ct_series.array.shape)[6] == 7, label=tumour)
    saved = files.save_labels(session, tmp_path / "study_seg.dcm")
    assert not session.dirty and not files.sidecar_path(saved).exists()
    fresh = AnnotationSession(ct_series)
    files.load_mask(fresh, saved)
    assert np.array_equal(fresh.labels, session.labels)
    assert [(lb.id, lb.name) for lb in fresh.table] == [(liver, "liver"), (tumour, "tumour")]
    assert fresh.table.get(tumour).color == pytest.approx((30, 30, 220), abs=2)
