"""The click path's weights and runtimes: tied to the student by its card, loaded strictly, the same on torch and
OpenVINO, and never touching the box-only decoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medsam_desktop.core.backends.base import pad_clicks
from medsam_desktop.core.backends.clicks import (
    CLICKS_STEM,
    STUDENT_LABEL,
    ClicksUnavailable,
    click_weights_path,
    load_click_backend,
)
from medsam_desktop.model import load_checkpoint, save_checkpoint
from medsam_desktop.model.checkpoint import sha256_of
from medsam_desktop.model.click_decoder import CLICK_ARCH, MAX_POINTS, ClickDecoder, load_click_decoder, pad_points
from medsam_desktop.model_files import InvalidCheckpointError, card_path, runtime_folder


def _click_weights(student: Path, folder: Path) -> Path:
    """A copy of ``student`` in ``folder`` with an (untrained) click checkpoint and card beside it."""
    weights = folder / student.name
    shutil.copy(student, weights)
    torch.manual_seed(1)
    net = ClickDecoder.from_model(load_checkpoint(weights))
    with torch.no_grad():
        net.prompt_encoder.point_embeddings[1].weight.add_(0.5)  # not the box decoder's values
    out = click_weights_path(weights)
    save_checkpoint(net, out, CLICK_ARCH, {"student_sha256": sha256_of(weights), "max_points": MAX_POINTS})
    card_path(out).write_text(f"- **sha256**: `{sha256_of(out)}`\n- **{STUDENT_LABEL}**: `{sha256_of(weights)}`\n")
    return weights


def test_padding_keeps_the_latest_clicks_and_marks_unused_slots() -> None:
    p, lab = pad_clicks(np.arange(20).reshape(10, 2), np.array([1, 0] * 5), 8)
    assert p.shape == (1, 8, 2) and lab.shape == (1, 8)
    assert p[0, 0].tolist() == [4, 5] and lab[0].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    p, lab = pad_clicks(np.array([[3.0, 4.0]]), np.array([1.0]), 8)
    assert lab[0].tolist() == [1] + [-1] * 7
    tp, tl = pad_points(torch.tensor([[[3.0, 4.0]]]), torch.tensor([[1.0]]))
    assert np.array_equal(tp.numpy(), p) and np.array_equal(tl.numpy(), lab)  # the same padding in training


def test_the_click_path_is_a_copy_and_the_box_decoder_is_untouched(random_weights: Path) -> None:
    model = load_checkpoint(random_weights)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = ClickDecoder.from_model(model)
    for p in net.parameters():
        p.data.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_clicks_load_only_with_their_student(random_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(ClicksUnavailable, match="no click weights"):
        load_click_backend(random_weights, runtime="torch")
    weights = _click_weights(random_weights, tmp_path)
    assert load_click_backend(weights, threads=1, runtime="torch").name == "clicks+torch"
    other = tmp_path / "other"
    other.mkdir()
    moved = other / weights.name
    shutil.copy(weights, moved)
    with torch.no_grad():
        m = load_checkpoint(moved)
        m.mask_decoder.iou_token.weight.add_(1)
    save_checkpoint(m, moved, "repvit_m0_6")  # other student weights under the same name
    for f in (click_weights_path(weights), card_path(click_weights_path(weights))):
        shutil.copy(f, other / f.name)
    with pytest.raises(ClicksUnavailable, match="trained for other weights"):
        load_click_backend(moved, runtime="torch")
    click_weights_path(moved).write_bytes(b"damaged")
    with pytest.raises(ClicksUnavailable, match="does not match the sha256"):
        load_click_backend(moved, runtime="torch")


def test_a_box_checkpoint_is_not_a_click_checkpoint(random_weights: Path) -> None:
    with pytest.raises(InvalidCheckpointError, match="not a click-path checkpoint"):
        load_click_decoder(random_weights)


def test_openvino_matches_torch_and_is_what_the_app_loads(random_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from medsam_desktop.core.backends.clicks import OpenVinoClickBackend
    from medsam_desktop.core.backends.torch_clicks import TorchClickBackend
    from training.export_clicks import export_onnx
    from training.export_runtime import convert, write_card

    weights = _click_weights(random_weights, tmp_path)
    decoder = load_click_decoder(click_weights_path(weights))
    folder = runtime_folder(weights)
    folder.mkdir()
    onnx = tmp_path / "clicks.onnx"
    export_onnx(decoder, onnx)
    xml = folder / f"{CLICKS_STEM}.xml"
    convert(onnx, xml, fp16=False)
    write_card(xml, weights, sha256_of(weights), CLICKS_STEM, click_weights_path(weights).name, "test", "fp32")
    rng = np.random.default_rng(0)
    args = (rng.normal(0, 0.1, (1, 256, 64, 64)).astype(np.float32), np.array([30, 40, 150, 160], np.float32),
            np.array([[90, 100], [40, 60], [120, 130]], np.float32), np.array([1, 0, 1], np.float32),
            rng.normal(0, 3, (256, 256)).astype(np.float32))  # fmt: skip
    ref, ref_iou, ref_shown = TorchClickBackend(decoder, threads=1).decode_clicks(*args)
    got, iou, shown = OpenVinoClickBackend(xml, threads=1, precision="f32").decode_clicks(*args)
    assert np.abs(got - ref).max() < 1e-3 and abs(iou - ref_iou) < 1e-4
    assert np.array_equal(ref_shown, ref) and np.array_equal(shown, got)  # no refiner: the shown mask is the logits'
    assert load_click_backend(weights, threads=1).name.startswith("clicks+openvino")
    xml.with_suffix(".bin").write_bytes(b"\0" * 16)  # damaged: the torch weights take over, said at info level
    assert load_click_backend(weights, threads=1).name == "clicks+torch"


def test_infer_with_clicks_writes_segs_and_a_curve_per_case(tmp_path: Path, random_weights: Path) -> None:
    import csv

    from fakes import model_args

    from medsam_desktop.cli import infer

    weights = _click_weights(random_weights, tmp_path)
    imgs, gts = tmp_path / "imgs", tmp_path / "gts"
    imgs.mkdir()
    gts.mkdir()
    rng = np.random.default_rng(0)
    gt2 = np.zeros((48, 64), np.uint8)
    gt2[10:30, 12:40] = 1
    np.savez(imgs / "2DBox_US_a.npz", imgs=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
             boxes=np.array([[12, 10, 39, 29]]))  # fmt: skip
    np.savez(gts / "2DBox_US_a.npz", gts=gt2)
    gt3 = np.zeros((5, 32, 40), np.uint8)
    gt3[1:4, 5:20, 5:25] = 1
    np.savez(imgs / "3DBox_CT_b.npz", imgs=rng.integers(0, 255, (5, 32, 40), dtype=np.uint8),
             boxes=np.array([[5, 5, 1, 24, 19, 3]]), spacing=np.array([2.0, 1.0, 1.0]))  # fmt: skip
    np.savez(gts / "3DBox_CT_b.npz", gts=gt3, spacing=np.array([2.0, 1.0, 1.0]))
    out = tmp_path / "segs"
    args = ["-i", str(imgs), "-o", str(out), "--clicks", "2", "--gts", str(gts), *model_args(weights)]
    assert infer.main([*args, "--runtime", "torch"]) == 0
    with open(out / "clicks.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["click"]) for r in rows] == [(c, str(k)) for c in ("2DBox_US_a.npz", "3DBox_CT_b.npz")
                                                       for k in range(3)]  # fmt: skip
    assert {r["modality"] for r in rows} == {"US", "CT"}
    assert np.load(out / "2DBox_US_a.npz")["segs"].shape == (48, 64)
    assert np.load(out / "3DBox_CT_b.npz")["segs"].shape == (5, 32, 40)
    with open(out / "clicks_summary.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    with open(out / "clicks_objects.csv") as fh:
        objects = list(csv.DictReader(fh))
    assert [(r["case"], r["label"], r["click"]) for r in objects] == [
        (c, "1", str(k)) for c in ("2DBox_US_a.npz", "3DBox_CT_b.npz") for k in range(3)
    ]
    assert [r["dsc"] for r in objects] == [r["dsc"] for r in rows]  # one object per case: its DSC is the case's


def test_infer_with_clicks_needs_ground_truth(tmp_path: Path, random_weights: Path, capsys) -> None:
    from medsam_desktop.cli import infer

    (tmp_path / "imgs").mkdir()
    np.savez(tmp_path / "imgs" / "2DBox_US_a.npz", imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.array([[1, 1, 5, 5]]))
    assert infer.main(["-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "o"), "--clicks", "3"]) == 2
    err = capsys.readouterr().err
    assert "--gts" in err and len(err.strip().splitlines()) == 1


def test_shipped_box_masks_are_bit_for_bit_unchanged_by_the_click_path() -> None:
    """The shipped model's box-only logits are the same array before and after the click path is loaded and run."""
    from medsam_desktop.core.backends import load_backend
    from medsam_desktop.core.inference.clicks import ClickPoint, ClickRefiner, model_image
    from medsam_desktop.core.inference.predictor import Predictor
    from medsam_desktop.model_files import STUDENT_NAME, student_weights_path

    weights = student_weights_path()
    if not (runtime_folder(weights) / f"{CLICKS_STEM}.xml").is_file():
        pytest.skip("no shipped click path")
    predictor = Predictor(load_backend(STUDENT_NAME, threads=1))
    yy, xx = np.mgrid[:200, :240]
    image = (((yy - 90) ** 2 + (xx - 120) ** 2 < 50**2) * 180 + 30).astype(np.uint8)
    box = np.array([60.0, 30.0, 180.0, 150.0])
    emb = predictor.encode(image)
    before = predictor.decode(emb, box)
    refiner = ClickRefiner(lambda: load_click_backend(weights, threads=1))
    slice_image = model_image(image) if refiner.needs_image else None
    clicks = [ClickPoint(120, 90, True), ClickPoint(70, 40, False)]
    after_click = refiner.refine(emb, box, clicks, before.logits[0], slice_image)
    again = predictor.decode(emb, box)
    assert refiner.backend.name.startswith("clicks+openvino")
    assert np.array_equal(before.logits, again.logits) and np.array_equal(before.masks, again.masks)
    assert after_click.masks[0].any()


def _refining_path(student: Path, folder: Path, seed: int) -> Path:
    """A copy of ``student`` in ``folder`` with a click path carrying a (random) refiner, exported as shipped."""
    from medsam_desktop.model.click_decoder import build_click_decoder
    from training import export_clicks

    folder.mkdir()
    weights = folder / student.name
    shutil.copy(student, weights)
    torch.manual_seed(seed)
    net = build_click_decoder(refiner_width=6)
    net.load_state_dict({**ClickDecoder.from_model(load_checkpoint(weights)).state_dict(),
                         **{k: v for k, v in net.state_dict().items() if k.startswith("refiner.")}})  # fmt: skip
    with torch.no_grad():
        net.refiner.head.weight.normal_()
    ckpt = folder / "best.pt"
    save_checkpoint(net, ckpt, CLICK_ARCH, {"student_sha256": sha256_of(weights), "max_points": MAX_POINTS,
                                            "refiner": 6, "step": 3, "val_1_minus_window_dsc": 0.1})  # fmt: skip
    assert export_clicks.main(["--checkpoint", str(ckpt), "--weights", str(weights), "--threads", "1"]) == 0
    return weights


def test_a_refining_path_ships_its_refiner_beside_the_click_network(
    random_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("openvino")
    weights = _refining_path(random_weights, tmp_path / "a", 2)
    folder = runtime_folder(weights)
    shipped = {f"{stem}{suffix}" for stem in (CLICKS_STEM, "refiner") for suffix in (".xml", ".bin", ".md")}
    assert {p.name for p in folder.iterdir()} == shipped
    backend = load_click_backend(weights, threads=1)
    assert backend.name.startswith("clicks+openvino") and backend.name.endswith("+refiner") and backend.needs_image
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    args = (rng.normal(0, 0.1, (1, 256, 64, 64)).astype(np.float32), np.array([30, 40, 150, 160], np.float32),
            np.array([[90, 100], [40, 60]], np.float32), np.array([1, 0], np.float32),
            rng.normal(0, 3, (256, 256)).astype(np.float32), image)  # fmt: skip
    logits, _, shown = backend.decode_clicks(*args)
    _, _, ref_shown = load_click_backend(weights, threads=1, runtime="torch").decode_clicks(*args)
    assert not np.array_equal(shown, logits)  # the refiner redrew the mask
    assert np.mean((shown > 0) != (ref_shown > 0)) < 1e-3  # fp16 storage, f32 or bf16 compute

    def falls_back_because(reason: str) -> bool:  # the torch path (with its refiner) takes over, and says why
        caplog.clear()
        with caplog.at_level("INFO", logger="medsam_desktop.core.backends.clicks"):
            name = load_click_backend(weights, threads=1).name
        return name == "clicks+torch" and reason in caplog.text

    other = runtime_folder(_refining_path(random_weights, tmp_path / "b", 3))
    for suffix in (".bin", ".md"):  # another path's refiner weights (and card) under this path's graph
        shutil.copy(other / f"refiner{suffix}", folder / f"refiner{suffix}")
    assert falls_back_because("refiner (refiner.xml) is missing or not its own")  # the click card's weights line
    for suffix in (".xml", ".bin", ".md"):  # missing: never the click network without the refiner its card names
        (folder / f"refiner{suffix}").unlink()
    assert falls_back_because("refiner (refiner.xml) is missing or not its own")


def test_a_click_network_of_another_layout_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from medsam_desktop.core.backends.clicks import OpenVinoClickBackend
    from training.export_runtime import convert

    class WithImage(torch.nn.Module):  # session 15's layout: the refiner inside, an image input
        def forward(self, embedding, boxes, points, labels, mask_logits, image):  # type: ignore[no-untyped-def]
            return mask_logits + image.mean(), boxes.sum(dim=1, keepdim=True)

    inputs = (torch.zeros(1, 256, 64, 64), torch.zeros(1, 4), torch.zeros(1, MAX_POINTS, 2),
              torch.zeros(1, MAX_POINTS), torch.zeros(1, 1, 256, 256), torch.zeros(1, 3, 256, 256))  # fmt: skip
    onnx, xml = tmp_path / "old.onnx", tmp_path / "clicks.xml"
    torch.onnx.export(WithImage(), inputs, str(onnx), input_names=["embedding", "boxes", "points", "labels",
                      "mask_logits", "image"], output_names=["logits", "iou"], dynamo=False)  # fmt: skip
    convert(onnx, xml, fp16=False)
    with pytest.raises(ClicksUnavailable, match="another layout"):
        OpenVinoClickBackend(xml, threads=1)


def test_the_shipped_click_card_names_its_refiners_graph_and_weights() -> None:
    """The pair is tied by both files: a refiner .bin swapped under the same graph would not load."""
    from medsam_desktop.core.backends.clicks import REFINER_BIN_LABEL, REFINER_LABEL, REFINER_STEM
    from medsam_desktop.model_files import card_field, student_weights_path

    folder = runtime_folder(student_weights_path())
    card = folder / f"{CLICKS_STEM}.md"
    if not card.is_file():
        pytest.skip("no shipped click path")
    assert card_field(card, REFINER_LABEL) == sha256_of(folder / f"{REFINER_STEM}.xml")
    assert card_field(card, REFINER_BIN_LABEL) == sha256_of(folder / f"{REFINER_STEM}.bin")
