"""The Swin-T image encoder: SAM embedding shape, gradients, windows and shifted-window masking."""

from __future__ import annotations

import pytest
import torch

from medsam_desktop.model.swin import (
    SWIN_T,
    SWIN_TINY_TEST,
    SwinBlock,
    SwinEncoder,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_swin_t_embedding_shape_and_size() -> None:
    torch.manual_seed(0)
    enc = SwinEncoder(SWIN_T).eval()
    assert SWIN_T.grid_sizes == (64, 32, 16, 8) and SWIN_T.dims == (96, 192, 384, 768)
    assert [len(s.blocks) for s in enc.stages] == [2, 2, 6, 2]
    assert [s.shift for s in enc.stages] == [4, 4, 4, 0]  # the 8x8 grid is one window: never shifted
    assert 27e6 < sum(p.numel() for p in enc.parameters()) < 30e6
    with torch.inference_mode():
        emb = enc(torch.rand(1, 3, 256, 256))
    assert emb.shape == (1, 256, 64, 64) and torch.isfinite(emb).all()


def test_tiny_forward_backward() -> None:
    torch.manual_seed(0)
    enc = SwinEncoder(SWIN_TINY_TEST).train()
    x = torch.rand(2, 3, 256, 256)
    feats = enc.stage_features(x)
    assert [tuple(f.shape) for f in feats] == [(2, 24, 64, 64), (2, 48, 32, 32), (2, 96, 16, 16), (2, 192, 8, 8)]
    emb = enc(x)
    assert emb.shape == (2, 256, 64, 64)
    emb.square().mean().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert enc.stages[0].blocks[0].attn.relative_position_bias_table.grad.abs().sum() > 0


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 16, 24, 5)
    w = window_partition(x, 8)
    assert w.shape == (2 * 2 * 3, 64, 5)
    assert torch.equal(w[1], x[0, :8, 8:16].reshape(64, 5))  # second window: first row, second column
    assert torch.equal(window_reverse(w, 8, 16, 24), x)


def test_relative_position_index() -> None:
    ws = 8
    idx = relative_position_index(ws)
    assert idx.shape == (64, 64) and idx.min() == 0 and idx.max() == (2 * ws - 1) ** 2 - 1
    centre = (ws - 1) * (2 * ws - 1) + (ws - 1)
    assert torch.all(idx.diagonal() == centre)
    # the same offset gives the same index: (0,0)->(1,2) and (3,3)->(4,5)
    assert idx[0, 1 * ws + 2] == idx[3 * ws + 3, 4 * ws + 5]


@pytest.mark.parametrize(("h", "w"), [(16, 16), (32, 24)])
def test_shifted_mask_allows_only_image_neighbours(h: int, w: int) -> None:
    """After the cyclic shift, two tokens of a window may attend iff they were neighbours (< ws apart on both
    axes) in the unshifted image, i.e. never across the wrap-around boundary."""
    ws, s = 8, 4
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.roll(torch.stack([rows, cols], -1)[None].float(), shifts=(-s, -s), dims=(1, 2))
    orig = window_partition(coords, ws)  # (nW, N, 2) original coordinates of the shifted windows
    diff = (orig[:, :, None, :] - orig[:, None, :, :]).abs()
    expected = (diff < ws).all(-1)
    mask = shifted_window_mask(h, w, ws, s)
    assert mask.shape == (h // ws * (w // ws), ws * ws, ws * ws)
    assert torch.equal(mask, expected)
    assert not mask[-1].all() and mask[0].all()  # only edge windows are restricted
    assert shifted_window_mask(h, w, ws, 0).all()


def test_token_cannot_attend_across_shifted_boundary() -> None:
    torch.manual_seed(0)
    blk = SwinBlock(dim=8, num_heads=2, window_size=8, shift=4, mlp_ratio=2.0, drop_path=0.0).eval()
    mask = shifted_window_mask(16, 16, 8, 4)
    x = torch.randn(1, 16, 16, 8)
    x2 = x.clone()
    x2[:, 0] += torch.randn(16, 8)  # top row: shares a shifted window with the bottom row (cyclic shift)
    with torch.no_grad():
        y, y2 = blk(x, mask), blk(x2, mask)
        assert torch.allclose(y[:, 15], y2[:, 15], atol=1e-6)  # bottom row does not see the top row
        assert not torch.allclose(y[:, 1], y2[:, 1])  # the top row's real neighbours do
        everything = torch.ones_like(mask)  # shifted windows without the mask: the check is sensitive
        assert not torch.allclose(blk(x, everything)[:, 15], blk(x2, everything)[:, 15])
