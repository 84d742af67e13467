"""The shipped OpenVINO files: the default runtime everywhere, verified against their cards, run without torch.

The real files in ``models/`` are used (they are part of the repository); damaged copies go into a temporary
models folder (``MEDSAM_MODELS_DIR``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.core.backends import (
    DEFAULT,
    default_configuration,
    describe,
    load_backend,
)
from medsam_desktop.core.backends.clicks import CLICKS_STEM, REFINER_STEM
from medsam_desktop.core.backends.cpu import cpu_class
from medsam_desktop.core.backends.loader import SHIPPED_DEFAULTS
from medsam_desktop.core.backends.shipped import SHIPPED_STEMS, ShippedFilesUnavailable, shipped_files
from medsam_desktop.model_files import (
    ModelNotAvailableError,
    card_path,
    runtime_folder,
    student_available,
    student_checkpoint_path,
    student_weights_path,
)

STUDENT = "repvit_m0_6"
REAL_WEIGHTS = student_checkpoint_path()  # before any test points MEDSAM_MODELS_DIR elsewhere
pytestmark = pytest.mark.skipif(
    not runtime_folder(student_weights_path()).is_dir(), reason="no shipped OpenVINO files in models/"
)
openvino = pytest.importorskip("openvino")

#: run before anything else in a child interpreter: any import of torch raises
BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name == "scipy" or name.startswith("scipy."):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, _NoTorch())
""")


@pytest.fixture
def models_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped card and OpenVINO files (no .pt: as in the packaged app) as the models folder."""
    weights = student_weights_path()
    folder = tmp_path / "models"
    shutil.copytree(runtime_folder(weights), folder / runtime_folder(weights).name)
    shutil.copy(card_path(weights), folder / card_path(weights).name)
    monkeypatch.setenv("MEDSAM_MODELS_DIR", str(folder))
    return folder


def _shipped_precision() -> str:
    """The encoder precision the shipped default runs on this CPU (int8 with VNNI, else fp32)."""
    return SHIPPED_DEFAULTS[cpu_class()]


def _image() -> np.ndarray:
    yy, xx = np.mgrid[:256, :256]
    image = np.full((1, 3, 256, 256), 0.1, np.float32)
    image[:, :, (yy - 128) ** 2 + (xx - 120) ** 2 < 40**2] = 0.8
    return image


def test_the_default_is_openvino_on_the_shipped_files_int8_with_vnni() -> None:
    """int8 where the CPU has VNNI, fp32 without (AVX2: int8 fails the quality gate there, performance.md)."""
    precision = _shipped_precision()
    assert default_configuration(STUDENT) == ("openvino", precision)
    assert default_configuration("litemedsam") == ("torch", "auto")  # the teacher has no shipped files
    backend = load_backend(STUDENT, threads=2)
    assert backend.fallback_reason is None
    assert backend.name.startswith("repvit_m0_6+openvino" + ("+int8" if precision == "int8" else ""))
    assert describe(backend).startswith(f"OpenVINO {precision}")
    explicit = load_backend(STUDENT, threads=2, runtime="openvino", precision=precision)
    x = _image()
    np.testing.assert_array_equal(backend.encode(x), explicit.encode(x))  # "default" is exactly that


def test_without_openvino_the_default_is_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert default_configuration(STUDENT) == ("torch", "auto")


def test_shipped_int8_stays_close_to_torch_fp32() -> None:
    """The shipped int8 encoder and fp16-stored decoders, against the same weights in torch fp32: the same mask."""
    if REAL_WEIGHTS is None:
        pytest.skip("no .pt in models/")
    ref = load_backend(STUDENT, threads=2, runtime="torch", precision="fp32")
    ours = load_backend(STUDENT, threads=2)
    x = _image()
    e_ref, e_ours = ref.encode(x), ours.encode(x)
    assert np.linalg.norm(e_ours - e_ref) / np.linalg.norm(e_ref) < 0.1
    boxes = np.array([[80, 80, 170, 170], [100, 100, 100, 150]], np.float32)  # one of them degenerate
    (l_ref, _), (l_ours, _) = ref.decode(e_ref, boxes), ours.decode(e_ref, boxes)
    assert np.mean((l_ref > 0) == (l_ours > 0)) > 0.995


@pytest.mark.parametrize("damage", ["bin", "xml", "card-source"])
def test_a_damaged_or_foreign_file_is_refused(models_copy: Path, damage: str) -> None:
    weights = models_copy / student_weights_path().name
    folder = runtime_folder(weights)
    shipped_files(weights, int8=True)  # the copy itself is fine
    if damage == "card-source":
        card = folder / "decoder.md"
        card.write_text(re.sub(r"(source weights sha256\*\*: `)[0-9a-f]{64}", r"\g<1>" + "0" * 64, card.read_text()))
    else:
        path = folder / f"prepare.{damage}"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(ShippedFilesUnavailable) as err:
        shipped_files(weights, int8=True)
    message = str(err.value)
    assert "\n" not in message
    assert ("other weights" in message) if damage == "card-source" else ("does not match the sha256" in message)


def test_a_refused_file_is_said_in_the_source_install(models_copy: Path) -> None:
    """With torch (a source install) a damaged shipped file makes the loader export the weights, and say so."""
    if REAL_WEIGHTS is None:
        pytest.skip("no .pt in models/")
    shutil.copy(REAL_WEIGHTS, models_copy / REAL_WEIGHTS.name)
    (runtime_folder(models_copy / REAL_WEIGHTS.name) / "decoder.bin").write_bytes(b"truncated")
    backend = load_backend(STUDENT, threads=1)
    assert backend.fallback_reason is not None and "does not match the sha256" in backend.fallback_reason


def _run_without_torch(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


@pytest.mark.slow
def test_self_test_passes_where_importing_torch_raises() -> None:
    """The app's whole path (window, model, first mask) with torch and scipy unimportable, as in the bundle."""
    proc = _run_without_torch("""
        from medsam_desktop.ui.app import main
        code = main(["--self-test"])
        assert "torch" not in sys.modules and "scipy" not in sys.modules, sorted(sys.modules)
        sys.exit(code)
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"self-test OK: OpenVINO {_shipped_precision()}" in proc.stdout


def test_without_torch_other_requests_run_the_shipped_default(models_copy: Path) -> None:
    """No torch, no .pt (the packaged app): torch or fp32 requests run the shipped files and say why; damaged
    files give one clear error instead of a traceback."""
    proc = _run_without_torch(
        """
        from medsam_desktop.core.backends import load_backend
        from medsam_desktop.model_files import student_available
        assert student_available()
        b = load_backend("repvit_m0_6", runtime="torch", precision="fp32")
        print("NAME", b.name)
        print("WHY", b.fallback_reason)
    """,
        {"MEDSAM_MODELS_DIR": str(models_copy)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "NAME repvit_m0_6+openvino+int8" in proc.stdout
    assert "WHY PyTorch is not installed: running OpenVINO int8 instead of PyTorch fp32" in proc.stdout
    folder = runtime_folder(models_copy / student_weights_path().name)
    code = """
        from medsam_desktop.core.backends import load_backend
        from medsam_desktop.model_files import ModelNotAvailableError
        try:
            b = load_backend("repvit_m0_6", precision="int8")
            print("NAME", b.name, "WHY", b.fallback_reason)
        except ModelNotAvailableError as exc:
            print("ERROR", exc)
    """
    (folder / "encoder-int8.bin").write_bytes(b"x")  # a damaged int8 encoder: the fp32 one runs, and says why
    proc = _run_without_torch(code, {"MEDSAM_MODELS_DIR": str(models_copy)})
    assert "NAME repvit_m0_6+openvino WHY" in proc.stdout and "does not match the sha256" in proc.stdout
    (folder / "decoder.bin").write_bytes(b"x")  # every configuration needs it: one clear error
    proc = _run_without_torch(code, {"MEDSAM_MODELS_DIR": str(models_copy)})
    assert "ERROR cannot run repvit_m0_6" in proc.stdout and "does not match the sha256" in proc.stdout


def test_the_packaged_layout_counts_as_a_bundled_student(models_copy: Path) -> None:
    assert student_available() and student_checkpoint_path() is None  # card + OpenVINO files, no .pt
    stems = {p.stem for p in runtime_folder(models_copy / student_weights_path().name).glob("*.xml")}
    assert sorted(stems) == sorted((*SHIPPED_STEMS, CLICKS_STEM, REFINER_STEM))


def test_the_click_path_runs_without_torch(models_copy: Path) -> None:
    """The packaged app's click path: the shipped IR, verified against its card, torch unimportable."""
    proc = _run_without_torch("""
        import numpy as np
        from medsam_desktop.core.backends.clicks import load_click_backend
        from medsam_desktop.model_files import student_weights_path
        backend = load_click_backend(student_weights_path(), threads=1)
        image = np.zeros((256, 256, 3), np.uint8) if backend.needs_image else None
        logits, iou, shown = backend.decode_clicks(
            np.zeros((1, 256, 64, 64), np.float32), np.array([20, 20, 120, 120]), np.array([[60, 60]]), np.array([1]),
            np.zeros((256, 256), np.float32), image)
        assert "torch" not in sys.modules
        print("NAME", backend.name.split("+")[:2], backend.name.endswith("+refiner"), logits.shape, shown.shape)
    """)
    assert "NAME ['clicks', 'openvino'] True (256, 256) (256, 256)" in proc.stdout, proc.stderr[-2000:]


def test_default_is_a_value_of_both_options() -> None:
    with pytest.raises(ValueError, match="precision must be one of default"):
        load_backend(STUDENT, precision="int4")
    assert DEFAULT == "default"


def test_missing_teacher_without_torch_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsam_desktop.core.backends import loader

    monkeypatch.setattr(loader, "runtime_installed", lambda name: name == "openvino")
    with pytest.raises(ModelNotAvailableError, match="cannot run litemedsam"):
        load_backend("litemedsam", runtime="torch")


@pytest.mark.parametrize(("cap", "cls", "precision"), [("AVX2_VNNI", "avx2_vnni", "int8"), ("AVX2", "avx2", "fp32"),
                                                       ("AVX512_CORE_AMX", "avx512_vnni", "int8"),
                                                       ("AVX512_CORE", "avx512", "fp32")])  # fmt: skip
def test_the_default_precision_follows_the_cpu_class(monkeypatch: pytest.MonkeyPatch, cap, cls, precision) -> None:
    """int8 only where the CPU has VNNI (without it AVX2's saturating int8 products fail the quality gate)."""
    from medsam_desktop.core.backends import cpu

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    cpu.cpu_class.cache_clear()
    try:
        assert cpu.cpu_class() == cls
        assert default_configuration(STUDENT) == ("openvino", precision)
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        cpu.cpu_class.cache_clear()


def test_a_damaged_model_cache_is_compiled_again(cache_dir: Path) -> None:
    """Compiled blobs that cannot be read (damaged, another build) cost a compilation, never the model."""
    load_backend(STUDENT, threads=1)  # fills the cache
    blobs = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert blobs
    for blob in blobs:
        blob.write_bytes(b"not a compiled model")
    backend = load_backend(STUDENT, threads=1)
    assert backend.encode(_image()).shape == (1, 256, 64, 64)


def test_each_isa_cap_has_its_own_model_cache(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    from medsam_desktop.core.backends.openvino_backend import model_cache_dir

    native = model_cache_dir()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert model_cache_dir() != native and str(model_cache_dir()).endswith("-avx2")
