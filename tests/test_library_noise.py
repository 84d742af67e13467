"""What native libraries print while a file is read (OpenJPEG inside GDCM) reaches the debug log, never the user's
terminal: the reader's one-line error is all that is shown."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from medsam_desktop.io import CorruptFileError, read_image
from medsam_desktop.io.native_output import native_stderr_to_log

pydicom_data = pytest.importorskip("pydicom.data")


def _damaged_j2k(tmp: Path, offset: int, length: int) -> Path:
    """pydicom's JPEG 2000 lossless MR with bytes of its codestream's SIZ header overwritten."""
    data = bytearray(Path(pydicom_data.get_testdata_file("MR_small_jp2klossless.dcm")).read_bytes())
    soc = data.find(b"\xff\x4f\xff\x51")  # start of codestream, then the SIZ marker
    assert soc > 0
    data[soc + offset : soc + offset + length] = b"\xff" * length
    path = tmp / "damaged_j2k.dcm"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("offset", "length", "said"), [(6, 8, "tiles"), (20, 10, "SIZ")])
def test_a_damaged_jpeg2000_dicom_gives_one_error_and_no_native_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, offset: int, length: int,
    said: str,
) -> None:  # fmt: skip
    path = _damaged_j2k(tmp_path, offset, length)
    level = caplog.at_level(logging.DEBUG, logger="medsam_desktop.io.native_output")
    with level, pytest.raises(CorruptFileError, match="could not be decoded"):
        read_image(path)
    out, err = capfd.readouterr()
    # nothing raw on the terminal: at most a log handler's echo of the debug record (a CLI's -v handler may
    # still be installed by an earlier test)
    assert out == "" and all("native output" in line for line in err.splitlines() if line.strip())
    logged = [r.getMessage() for r in caplog.records if "native output" in r.getMessage()]
    assert logged and said in logged[0]  # ...at debug level


def test_a_dicom_folder_opened_as_the_app_does_gives_no_native_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The app reads folders through ``files.read_source`` (series list, then the series), not ``read_image``."""
    from medsam_desktop.core.document.files import read_source
    from medsam_desktop.io import MedSAMIOError

    folder = tmp_path / "series"
    folder.mkdir()
    _damaged_j2k(folder, 6, 8)
    with pytest.raises(MedSAMIOError):
        read_source(folder)
    out, err = capfd.readouterr()
    assert out == "" and all("native output" in line for line in err.splitlines() if line.strip())


def test_the_capture_restores_stderr_and_lets_an_inner_capture_pass(capfd: pytest.CaptureFixture[str]) -> None:
    with native_stderr_to_log("outer"):
        with native_stderr_to_log("inner"):
            os.write(2, b"hidden\n")
        os.write(2, b"hidden too\n")
    os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"
