"""Inference-only rewrite of SAM's mask decoder for one mask per box (``multimask_output=False``).

Same function as :meth:`MaskDecoder.predict_masks` followed by taking mask 0, with about half the
multiply-adds per box and far fewer passes over the (B, 4096, 256) image tokens. Every step is an exact
algebraic identity; only the floating-point summation order changes (fp32, LiteMedSAM's weights on a
dev CT slice: max |logit difference| 5e-5 on logits up to 57, no mask pixel changes).

Notation: B boxes, N = 64*64 image tokens, C = 256 channels, T = 7 tokens (IoU, 4 mask tokens, 2 box
corners), H = 8 heads of width d = 16 in the cross-attentions (internal width D = 128). Per head h an
attention projects with W_h (d, C) and bias b_h.

* token -> image (T queries, N keys): the score q_h . (x W_kh^T + b_kh) equals (q_h W_kh) . x plus a term
  constant over the keys, which softmax removes; the output sum_i a_i (x_i W_vh^T + b_vh) equals
  (sum_i a_i x_i) W_vh^T + b_vh because the weights sum to 1. So the N keys are never projected:
  two (B, H*T, C) x (C, N) products replace two (N, C) x (C, D) projections per box.
* image -> token (N queries, T keys): the score (x W_qh^T + b_qh) . k_h equals x . (W_qh^T k_h) + b_qh . k_h,
  and out_proj(sum_t a_t v_t) equals sum_t a_t (v_t W_oh^T) + b_o: the N queries are never projected and the
  per-head output never leaves the token side. Two (N, C) x (C, H*T) products replace two (N, C) x (C, D).
* the final token -> image attention only needs the IoU token and mask token 0.
* the two 2x2 stride-2 transposed convolutions are per-pixel linear maps: they run as matmuls on the
  channels-last token layout (no transpose of the image tokens), and the hypernetwork product is taken
  before the final pixel shuffle, which then moves one channel instead of 32.

Decoding is split in two for callers with many boxes on one image (:func:`prepare_image`, once per image;
:func:`predict_prepared`, per chunk of boxes): the first block's image side does not depend on the boxes, so
the image tokens, their sum with the no-mask embedding and, transposed, with the grid encoding are made once.

Under autocast the image tokens are kept in the autocast dtype from the start (bf16: half the memory traffic,
no repeated casts); the reference path keeps them fp32 between layers, so bf16 masks differ slightly (dev set:
label IoU 0.994 against the reference in bf16, DSC unchanged; fp32 masks are identical).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .mask_decoder import MaskDecoder
    from .transformer import Attention, TwoWayAttentionBlock


def _head_weights(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Projection weight (D, C) -> (H, d, C)."""
    return w.reshape(heads, w.shape[0] // heads, w.shape[1])


def token_to_image(attn: Attention, queries: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Tokens (B, T, C) attend to image tokens: keys transposed (B or 1, C, N), values (B or 1, N, C) -> (B, T, C)."""
    h = attn.num_heads
    b, t, _ = queries.shape
    q = attn.q_proj(queries)  # (B, T, D)
    d = q.shape[-1] // h
    wk = _head_weights(attn.k_proj.weight, h)  # (H, d, C)
    # (B, T, H, d) x (H, d, C) -> (B, H, T, C): the query moved into the image's channel space
    q_img = torch.einsum("bthd,hdc->bhtc", q.reshape(b, t, h, d), wk.to(q.dtype)) * (d**-0.5)
    scores = _bmm_shared(q_img.reshape(b, h * t, -1), keys_t)  # (B, H*T, N)
    weights = scores.softmax(dim=-1)
    pooled = _bmm_shared(weights, values).reshape(b, h, t, -1)  # (B, H, T, C)
    wv = _head_weights(attn.v_proj.weight, h)
    out = torch.einsum("bhtc,hdc->bthd", pooled, wv.to(pooled.dtype)).reshape(b, t, h * d) + attn.v_proj.bias
    return attn.out_proj(out)


def image_to_token(
    attn: Attention, queries_t: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """``residual`` (B or 1, N, C) + image tokens attending to tokens: queries transposed (B or 1, C, N), keys,
    values (B, T, C) -> (B, N, C).

    Scores are laid out (B, H, T, N), so the softmax over the T tokens runs along a long contiguous axis.
    """
    h = attn.num_heads
    b, t, c = keys.shape
    k = attn.k_proj(keys)  # (B, T, D)
    v = attn.v_proj(values)
    d = k.shape[-1] // h
    k = k.reshape(b, t, h, d)
    wq = _head_weights(attn.q_proj.weight, h)  # (H, d, C)
    scale = d**-0.5
    k_img = torch.einsum("bthd,hdc->bhtc", k, wq.to(k.dtype)) * scale  # (B, H, T, C)
    bias = torch.einsum("bthd,hd->bht", k, attn.q_proj.bias.reshape(h, d).to(k.dtype)) * scale  # (B, H, T)
    k_img, bias = k_img.reshape(b, h * t, c), bias.reshape(b, h * t, 1)
    if queries_t.shape[0] == 1:  # a shared image: one (B*H*T, C) x (C, N) product
        scores = torch.addmm(bias.reshape(b * h * t, 1), k_img.reshape(b * h * t, c), queries_t[0])
    else:
        scores = torch.baddbmm(bias, k_img, queries_t)
    weights = scores.reshape(b, h, t, -1).softmax(dim=2)  # over the tokens, per head and image token
    wo = attn.out_proj.weight.reshape(c, h, d)  # (C, H, d)
    per_token = torch.einsum("bthd,chd->bhtc", v.reshape(b, t, h, d), wo.to(v.dtype))  # (B, H, T, C)
    # each head's weights sum to 1 over the tokens, so adding b_o / H to every row adds b_o once
    per_token = per_token + attn.out_proj.bias.to(per_token.dtype) / h
    n = weights.shape[-1]
    return torch.baddbmm(
        residual.expand(b, n, c), weights.reshape(b, h * t, n).transpose(1, 2), per_token.reshape(b, h * t, c)
    )


def _bmm_shared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, M, K) x (B or 1, K, N) -> (B, M, N); a shared ``b`` takes one big product, not a broadcast copy."""
    if b.shape[0] == a.shape[0]:
        return torch.bmm(a, b)
    batch, m, k = a.shape
    return torch.mm(a.reshape(batch * m, k), b[0]).reshape(batch, m, -1)


def _block(
    layer: TwoWayAttentionBlock,
    queries: torch.Tensor,
    keys: torch.Tensor,
    keys_pe_t: torch.Tensor,
    query_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One two-way block; keys (B or 1, N, C) and (keys + grid encoding) transposed (B or 1, C, N) -> (B, N, C)."""
    queries = layer.token_self_attention(queries, query_pe)
    attn = token_to_image(layer.cross_attn_token_to_image, queries + query_pe, keys_pe_t, keys)
    queries = layer.norm2(queries + attn)
    queries = layer.norm3(queries + layer.mlp(queries))
    # a shared (1, N, C) image becomes (B, N, C) here, where it first depends on the box
    keys = layer.norm4(image_to_token(layer.cross_attn_image_to_token, keys_pe_t, queries + query_pe, queries, keys))
    return queries, keys


def _upscaled_mask(decoder: MaskDecoder, image: torch.Tensor, hyper: torch.Tensor, side: int) -> torch.Tensor:
    """Image tokens (B, N, C), row-major over a side x side grid, and hypernetwork weights (B, C/8)
    -> mask logits (B, 4 side, 4 side)."""
    up1, norm, _, up2, _ = decoder.output_upscaling
    b, n, c = image.shape
    o1, o2 = up1.out_channels, up2.out_channels
    # ConvTranspose2d(k=2, s=2) weight (in, out, 2, 2) -> a (in, 2*2*out) matmul; columns ordered (a, b, out)
    w1 = up1.weight.permute(0, 2, 3, 1).reshape(c, 4 * o1)
    x = F.linear(image.reshape(b * n, c), w1.t(), up1.bias.repeat(4))
    x = F.gelu(F.layer_norm(x.reshape(b * n * 4, o1), (o1,), norm.weight, norm.bias, norm.eps))
    w2 = up2.weight.permute(0, 2, 3, 1).reshape(o1, 4 * o2)
    x = F.gelu(F.linear(x, w2.t(), up2.bias.repeat(4)))  # (B*N*4, 4*o2): sub-pixels (a, b), then (c, d)
    m = torch.bmm(x.reshape(b, n * 16, o2), hyper.to(x.dtype).unsqueeze(-1))  # (B, N*16, 1)
    # (B, i, j, a, b, c, d) -> rows 4i + 2a + c, columns 4j + 2b + d
    m = m.reshape(b, side, side, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
    return m.reshape(b, 4 * side, 4 * side)


def _tokens(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, C, H, W) -> contiguous (B, H*W, C) in ``dtype`` (default x's), row-major over the grid; a view of
    ``x`` when it is channels-last in its own dtype, so never write into the result.

    Cast first, in x's own layout (one contiguous pass), then transpose (see :func:`_transposed`).
    """
    b, c, h, w = x.shape
    if dtype is not None and dtype != x.dtype:
        x = x.to(dtype)
    return _transposed(x.reshape(b, c, h * w))


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """(B, M, K) -> contiguous (B, K, M); no copy when x already is the transpose of a contiguous tensor. For one
    image torch's 2-D transpose copy is ~3x faster than the batched one (bf16, 256 x 4096: 0.55 vs 1.6 ms, and
    1.75 ms for the 4-D permute copy used before; session 6). An exported graph keeps the batched (3-D) one:
    OpenVINO's CPU plugin runs a 2-D transpose of 4096 x 256 ~4x slower than the same 3-D one (15 vs 3.5 ms, f32,
    2 threads, beside another job; session 12): the 3-D form took the shipped ``prepare`` from 10.7 to 4.8 ms per
    slice and the click network from 20.9 to 13.8 ms (docs/performance.md). Either form gives the same values."""
    if x.shape[0] == 1 and not torch.onnx.is_in_onnx_export():
        return x[0].t().contiguous().unsqueeze(0)
    return x.transpose(1, 2).contiguous()


def _key_pe(decoder: MaskDecoder, image_pe: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Token layout of the grid encoding in ``dtype``, kept while the caller passes the same tensor (a fused
    prompt encoder returns one tensor every time)."""
    memo = decoder._key_pe_memo
    if memo is not None and memo[0] is image_pe and memo[1].dtype == dtype:
        return memo[1]
    key_pe = _tokens(image_pe, dtype)
    decoder._key_pe_memo = (image_pe, key_pe)
    return key_pe


def _image_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the (B, N, C) image tokens are kept in: the autocast dtype when autocast is on for x's device
    (every product would cast them anyway; kept once, they also halve the memory traffic of the adds and
    LayerNorms), else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class PreparedImage(NamedTuple):
    """The box-independent decoder inputs of one image (or one per box), in the image token dtype.

    ``keys`` (B or 1, N, C): image tokens plus the dense prompt (the no-mask embedding);
    ``keys_pe_t`` (B or 1, C, N): ``keys`` plus the grid encoding, transposed (how both cross-attentions of
    the first block read it).
    """

    keys: torch.Tensor
    keys_pe_t: torch.Tensor


def prepare_image(
    decoder: MaskDecoder, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
) -> PreparedImage:
    """Embeddings (B or 1, C, 64, 64), grid encoding (1, C, 64, 64), dense prompt (B or 1, C, 64, 64) ->
    :class:`PreparedImage` for :func:`predict_prepared`; made once per image, whatever the number of boxes."""
    dtype = _image_dtype(image_embeddings)
    keys = _tokens(image_embeddings, dtype)  # (1|B, N, C)
    dense = dense_prompt_embeddings
    if dense.stride(-1) == 0 and dense.stride(-2) == 0:
        keys = keys + dense[:, :, 0, 0].unsqueeze(1).to(dtype)  # the no-mask embedding: one vector per image
    else:
        keys = keys + _tokens(dense, dtype)
    keys_pe_t = _transposed(keys + _key_pe(decoder, image_pe, dtype))
    return PreparedImage(keys, keys_pe_t)


def predict_prepared(
    decoder: MaskDecoder, image: PreparedImage, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A :class:`PreparedImage` and B boxes' sparse prompt embeddings (B, P, C) -> logits (B, 1, 256, 256) in the
    model frame and IoU (B, 1); ``image_pe`` is the grid encoding (1, C, 64, 64) the image was prepared with."""
    tokens = decoder.prompt_tokens(sparse_prompt_embeddings, image.keys.shape[0])
    n = tokens.shape[0]
    side = math.isqrt(image.keys.shape[1])
    key_pe = _key_pe(decoder, image_pe, image.keys.dtype)
    transformer = decoder.transformer
    queries, keys, keys_pe_t = tokens, image.keys, image.keys_pe_t
    for i, layer in enumerate(transformer.layers):
        if i:
            keys_pe_t = (keys + key_pe).transpose(1, 2)
        queries, keys = _block(layer, queries, keys, keys_pe_t, tokens)
    # final attention: only the IoU token and mask token 0 are read out
    q2 = queries[:, :2]
    attn = token_to_image(
        transformer.final_attn_token_to_image, q2 + tokens[:, :2], (keys + key_pe).transpose(1, 2), keys
    )
    q2 = transformer.norm_final_attn(q2 + attn)
    hyper = decoder.output_hypernetworks_mlps[0](q2[:, 1])  # (B, C/8)
    # two boxes at a time: the 4x upscaled features are 8 MB per box in fp32; blocks under 32 MB are reused by
    # the allocator instead of being mapped and faulted in afresh on every call
    masks = torch.cat(
        [_upscaled_mask(decoder, keys[i : i + 2], hyper[i : i + 2], side) for i in range(0, n, 2)]
    ).unsqueeze(1)
    iou = decoder.iou_prediction_head(q2[:, 0])[:, :1]
    return masks, iou


def predict_single_mask(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same inputs as :meth:`MaskDecoder.predict_masks`; returns logits (B, 1, 256, 256) and IoU (B, 1)."""
    image = prepare_image(decoder, image_embeddings, image_pe, dense_prompt_embeddings)
    return predict_prepared(decoder, image, image_pe, sparse_prompt_embeddings)
