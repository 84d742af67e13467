"""Export a :class:`~medsam_desktop.model.MedSAMLite` to ONNX (needs torch) and keep one export per checkpoint.

``export_onnx`` writes the files of :mod:`.layout` (``encoder.onnx``, ``prepare.onnx``, ``decoder.onnx``,
``decoder_b2.onnx``); :func:`cached_export` keeps one export per (checkpoint sha256, architecture, exporter
version) in the user cache folder, written atomically (docs/engine.md, "Runtimes"). The app does not need this
module when the weights come with their shipped OpenVINO files (:mod:`.shipped`); ``training/export_runtime.py``
makes those from an export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from ...atomic import move_aside
from .layout import DECODER_SIZES, ENCODER, IMAGE_TENSORS, PREPARE, decoder_stem

log = logging.getLogger(__name__)

ENCODER_FILE, PREPARE_FILE, DECODER_FILE = f"{ENCODER}.onnx", f"{PREPARE}.onnx", f"{decoder_stem(1)}.onnx"
MANIFEST_FILE = "export.json"  # written last: a folder without a valid manifest is never used
OPSET = 17
EXPORT_FORMAT = 8  # bump whenever export_onnx changes what it writes: old cached exports are then ignored
STALE_TMP_SECONDS = 24 * 3600  # temp folders of exports killed mid-way are removed after this


def exporter_version() -> str:
    """Identifies the exporter in cache folder names: our export format, the opset and the torch version."""
    import torch

    return f"onnx{EXPORT_FORMAT}-opset{OPSET}-torch{torch.__version__}"


def export_onnx(model: object, folder: Path, opset: int = OPSET) -> tuple[Path, ...]:
    """Export a :class:`~medsam_desktop.model.MedSAMLite` (fused for inference) to ``folder``: the encoder, the
    decoder's image preparation, then one decoder per size in :data:`DECODER_SIZES`."""
    import torch

    from ...model.fuse import fuse_for_inference
    from ...model.single_mask import PreparedImage

    net = fuse_for_inference(model).eval()  # type: ignore[arg-type]

    class _Prepare(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return tuple(self.net.prepare_decode(embedding))

    class _Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(
            self, keys: torch.Tensor, keys_pe_t: torch.Tensor, boxes: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            logits, iou = self.net.decode_prepared(PreparedImage(keys, keys_pe_t), boxes)
            return logits[:, 0], iou[:, 0]

    folder.mkdir(parents=True, exist_ok=True)
    enc_path = folder / ENCODER_FILE
    x = torch.zeros(1, 3, 256, 256)
    emb = torch.zeros(1, 256, 64, 64)
    paths = [enc_path, folder / PREPARE_FILE]
    with torch.inference_mode():
        torch.onnx.export(
            net.image_encoder,
            (x,),
            str(enc_path),
            input_names=["image"],
            output_names=["embedding"],
            opset_version=opset,
            dynamo=False,
        )
        torch.onnx.export(
            _Prepare(),
            (emb,),
            str(paths[1]),
            input_names=["embedding"],
            output_names=list(IMAGE_TENSORS),
            opset_version=opset,
            dynamo=False,
        )
        image = net.prepare_decode(emb)
        # static shapes, one file per box count: the traced graph is the decoder's single-mask rewrite
        # specialised to that count (its shape-dependent branches are taken at trace time)
        for size in sorted(DECODER_SIZES):
            box = torch.tensor([[10.0, 10.0, 100.0, 100.0]]).repeat(size, 1) + torch.arange(size)[:, None]
            path = folder / f"{decoder_stem(size)}.onnx"
            torch.onnx.export(
                _Decoder(),
                (*image, box),
                str(path),
                input_names=[*IMAGE_TENSORS, "boxes"],
                output_names=["logits", "iou"],
                opset_version=opset,
                dynamo=False,
            )
            paths.append(path)
    return tuple(paths)


def exports_root() -> Path:
    """``<user cache>/exported``: one subfolder per cached export."""
    from ...paths import user_cache_dir

    return user_cache_dir() / "exported"


def export_key(checkpoint_sha256: str, arch: str) -> str:
    """Cache folder name: first 16 hex of the checkpoint's sha256, the architecture, the exporter version."""
    return f"{checkpoint_sha256[:16]}-{arch}-{exporter_version()}"


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def is_complete_export(folder: Path) -> bool:
    """True when ``folder`` holds a finished export: the manifest exists and every file has its recorded size."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        files = manifest["files"]
        return bool(files) and all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remove_stale_temps(root: Path) -> None:
    """Delete temp folders left by exports that were killed (older than ``STALE_TMP_SECONDS``)."""
    now = time.time()
    for tmp in root.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)


def cached_export(model: object, checkpoint_sha256: str, arch: str, root: Path | None = None) -> Path:
    """The folder of ``model`` exported to ONNX, exporting it only when no finished export is cached.

    The export is written into a fresh temp folder beside the final one, the manifest last, then renamed into
    place in one step: a crash or an exception mid-export never leaves a folder that passes
    :func:`is_complete_export`, and two processes exporting at once both end up with one complete folder
    (the loser of the rename discards its copy).
    """
    root = Path(root) if root is not None else exports_root()
    final = root / export_key(checkpoint_sha256, arch)
    if is_complete_export(final):
        log.debug("reusing exported model %s", final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        log.info("exporting %s to ONNX (once per checkpoint) in %s", arch, final)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # tracer chatter about shape-dependent branches: harmless here
            warnings.simplefilter("ignore")
            paths = export_onnx(model, tmp)
        files = {}
        for path in paths:
            _fsync(path)
            files[path.name] = path.stat().st_size
        manifest = {
            "arch": arch,
            "checkpoint_sha256": checkpoint_sha256,
            "exporter": exporter_version(),
            "files": files,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
        _fsync(tmp / MANIFEST_FILE)
        if final.exists() and not is_complete_export(final):  # damaged leftover: move it out of the way
            move_aside(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete_export(final):  # not a lost race with another exporter: a real failure
                raise
            log.debug("another process finished the export of %s first", final.name)
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported %s in %.1f s", arch, time.perf_counter() - t0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
