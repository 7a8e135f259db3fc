"""A minimal PyTorch reference of ecgjax's pretraining networks and objectives, for
benchmarks/vs_pytorch.py: the same layers, sizes and losses, written as a PyTorch user would
(eager, channels-first convolutions, `F.scaled_dot_product_attention`, `torch.optim.AdamW`).

Mirrors, by module:
  ViT        ecgjax.models.vit1d.ViT1D, linear stem (a Conv1d, kernel = stride = patch), pre-LN
             blocks (LayerNorm eps 1e-6, fused qkv, tanh-GELU MLP as flax's nn.gelu), final LN
  MAEDecoder ecgjax.models.vit1d.MAEDecoder (mask token scattered to the masked positions)
  ResNet     ecgjax.models.resnet1d.kite_resnet (post-activation basic blocks, average-pool stem)
  Projection ecgjax.models.heads.ProjectionHead (Dense-BN-ReLU x 2, Dense)
  losses     ecgjax.objectives.mae.reconstruction_loss, ecgjax.objectives.contrastive (NT-Xent,
             patient-level, interlead InfoNCE through one masked InfoNCE)

"SAME" convolutions and pools use PyTorch's symmetric padding k // 2: the output lengths and the
FLOPs are those of XLA's SAME (which puts an odd extra sample on the right), the alignment of the
stride-2 grid differs by one sample. Parameter counts equal ecgjax's (vs_pytorch.py checks it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LIMB_LEADS = 6  # I, II, III, aVR, aVL, aVF come first in the canonical order (ecgjax.data.leads)
_MASKED_LOGIT = -1e9


class Block(nn.Module):
    """Pre-LN transformer layer: [batch, tokens, width] -> same."""

    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)

    def forward(self, x):
        b, t, w = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [batch, heads, tokens, head_dim]
        x = x + self.out(y.transpose(1, 2).reshape(b, t, w))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class Stack(nn.Sequential):
    """`depth` blocks then the final LayerNorm."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: int = 4):
        super().__init__(*[Block(width, heads, mlp_ratio * width) for _ in range(depth)],
                         nn.LayerNorm(width, eps=1e-6))


def patchify(x, patch: int):
    """[batch, time, leads] -> [batch, patches, patch * leads], time zero-padded to whole patches."""
    b, t, c = x.shape
    n = math.ceil(t / patch)
    return F.pad(x, (0, 0, 0, n * patch - t)).reshape(b, n, patch * c)


def gather_tokens(tokens, index):
    """tokens [batch, n, d], index [batch, k] -> [batch, k, d]."""
    return torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))


class ViT(nn.Module):
    """x [batch, time, leads] -> tokens [batch, n, width] (of the kept patches if `keep` is given)."""

    def __init__(self, num_samples: int, patch: int, width: int, depth: int, heads: int, leads: int = 12):
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv1d(leads, width, patch, stride=patch)
        self.position = nn.Parameter(0.02 * torch.randn(1, math.ceil(num_samples / patch), width))
        self.stack = Stack(width, depth, heads)

    def forward(self, x, keep=None):
        patches = patchify(x, self.patch)  # [batch, n, patch * leads]
        b, n, _ = patches.shape
        position = self.position[:, :n].expand(b, -1, -1)
        if keep is not None:
            patches, position = gather_tokens(patches, keep), gather_tokens(position, keep)
        signal = patches.reshape(b, -1, x.shape[-1]).transpose(1, 2)  # [batch, leads, kept time]
        return self.stack(self.embed(signal).transpose(1, 2) + position)


class MAEDecoder(nn.Module):
    """Visible tokens [batch, k, width] + keep [batch, k] -> predictions [batch, n, patch_dim]."""

    def __init__(self, num_patches: int, patch_dim: int, enc_width: int, width: int, depth: int, heads: int):
        super().__init__()
        self.embed = nn.Linear(enc_width, width)
        self.mask_token = nn.Parameter(0.02 * torch.randn(1, 1, width))
        self.position = nn.Parameter(0.02 * torch.randn(1, num_patches, width))
        self.stack = Stack(width, depth, heads)
        self.predict = nn.Linear(width, patch_dim)

    def forward(self, tokens, keep):
        visible = self.embed(tokens)
        b, n = tokens.shape[0], self.position.shape[1]
        full = self.mask_token.expand(b, n, -1).scatter(1, keep[..., None].expand_as(visible), visible)
        return self.predict(self.stack(full + self.position))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + (projected) shortcut, ReLU: [batch, ch, time] -> [batch, out, time / stride]."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3):
        super().__init__()
        self.conv0 = nn.Conv1d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.conv1 = nn.Conv1d(cout, cout, kernel, 1, kernel // 2, bias=False)
        self.norm0, self.norm1 = nn.BatchNorm1d(cout), nn.BatchNorm1d(cout)
        self.proj = (nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))
                     if cin != cout or stride > 1 else nn.Identity())

    def forward(self, x):
        y = self.norm1(self.conv1(F.relu(self.norm0(self.conv0(x)))))
        return F.relu(y + self.proj(x))


class ResNet(nn.Module):
    """000's ResNet18 (kite_resnet(18, chan_start)): x [batch, time, leads] -> [batch, 8 chan_start]."""

    def __init__(self, chan_start: int, leads: int = 12, stages=(2, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(leads, chan_start, 15, 2, 7, bias=False), nn.BatchNorm1d(chan_start),
                                  nn.ReLU(), nn.AvgPool1d(3, 2, 1))
        blocks, cin = [], chan_start
        for stage, count in enumerate(stages):
            cout = chan_start * 2**stage
            for block in range(count):
                blocks.append(BasicBlock(cin, cout, 2 if stage and not block else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = cin

    def forward(self, x):
        return self.blocks(self.stem(x.transpose(1, 2))).mean(dim=2)


class Projection(nn.Sequential):
    """(Linear without bias, BN, ReLU) x 2, Linear: [batch, d] -> [batch, out]."""

    def __init__(self, d: int, hidden: int, out: int):
        super().__init__(nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


# ------------------------------------------------------------------------------------ losses

def masked_infonce(logits, positive, negative):
    """Mean over anchors with a positive of each positive's -log softmax against the negatives."""
    neg_lse = torch.logsumexp(torch.where(negative, logits, _MASKED_LOGIT), dim=-1, keepdim=True)
    per_pair = torch.logaddexp(logits, neg_lse) - logits
    num_pos = positive.sum(-1)
    per_anchor = torch.where(positive, per_pair, 0.0).sum(-1) / num_pos.clamp(min=1)
    weight = (num_pos > 0).float()
    return (per_anchor * weight).sum() / weight.sum().clamp(min=1)


def two_view_infonce(z1, z2, groups, temperature: float):
    """NT-Xent over [z1; z2] with same-group pairs as positives (ids all distinct: SimCLR's)."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1, eps=1e-6)
    g = torch.cat([groups, groups])
    same = g[:, None] == g[None, :]
    not_self = ~torch.eye(len(g), dtype=torch.bool)
    return masked_infonce(z @ z.T / temperature, same & not_self, ~same)


def interlead_infonce(z_leads, temperature: float):
    """z_leads [batch, lead groups, d]: the same segment's other group is the positive."""
    b, leads, _ = z_leads.shape
    z = F.normalize(z_leads, dim=-1, eps=1e-6)
    logits = torch.einsum("ild,jmd->lmij", z, z) / temperature
    same = torch.eye(b, dtype=torch.bool)
    valid = ~torch.eye(leads, dtype=torch.bool)[:, :, None, None]
    flat = lambda x: x.expand(leads, leads, b, b).reshape(-1, b)  # noqa: E731
    return masked_infonce(flat(logits), flat(valid & same), flat(valid & ~same))


def random_masking(batch: int, num_patches: int, mask_ratio: float):
    """(keep [batch, n_keep] sorted, mask [batch, n] True = masked), as ecgjax.objectives.mae."""
    n_keep = int(num_patches * (1.0 - mask_ratio))
    keep = torch.argsort(torch.rand(batch, num_patches), dim=1)[:, :n_keep].sort(dim=1).values
    mask = torch.ones(batch, num_patches, dtype=torch.bool).scatter(1, keep, False)
    return keep, mask


# ------------------------------------------------------------------------------------ models

class GL(nn.Module):
    """MAE (003 GL): L1 on the masked patches of batch['segment'] [batch, time, leads]."""

    def __init__(self, c):
        super().__init__()
        enc, dec = c.model.encoder, c.model.decoder
        self.patch, self.mask_ratio = enc.patch, c.objective.mask_ratio
        self.encoder = ViT(enc.num_samples, enc.patch, enc.width, enc.depth, enc.heads, enc.in_leads)
        n = math.ceil(enc.num_samples / enc.patch)
        self.decoder = MAEDecoder(n, enc.patch * enc.in_leads, enc.width, dec.width, dec.depth, dec.heads)

    def forward(self, batch):
        x = batch["segment"]
        keep, mask = random_masking(x.shape[0], self.decoder.position.shape[1], self.mask_ratio)
        pred = self.decoder(self.encoder(x, keep), keep)
        target = patchify(x, self.patch)
        w = patchify(torch.ones_like(x), self.patch) * mask[..., None]  # padding and visible patches unscored
        return ((pred - target).abs() * w).sum() / w.sum().clamp(min=1)


class PooledViT(nn.Module):
    """ViT tokens averaged: x [batch, time, leads] -> [batch, width] (ViT1D's default output)."""

    def __init__(self, enc):
        super().__init__()
        self.vit = ViT(enc.num_samples, enc.patch, enc.width, enc.depth, enc.heads, enc.in_leads)
        self.feature_dim = enc.width

    def forward(self, x):
        return self.vit(x).mean(dim=1)


class CL(nn.Module):
    """003 CL (patient + sample InfoNCE), with 002's interlead term when its weight is non-zero."""

    def __init__(self, c):
        super().__init__()
        enc, proj = c.model.encoder, c.model.projection
        self.t = c.objective.temperature
        self.interlead = c.objective.weights.interlead > 0
        if enc.name not in ("vit1d", "resnet18"):
            raise ValueError(f"no PyTorch reference for encoder {enc.name!r}: vit1d or resnet18")
        self.encoder = PooledViT(enc) if enc.name == "vit1d" else ResNet(enc.chan_start, enc.in_leads)
        self.projection = Projection(self.encoder.feature_dim, proj.hidden, proj.out)

    def forward(self, batch):
        seg = batch["segment"]
        views = [seg, batch["segment_aug"], batch["patient_segment"]]
        if self.interlead:
            limb = (torch.arange(seg.shape[-1]) < LIMB_LEADS).float()
            views += [seg * limb, seg * (1 - limb)]
        z = self.projection(self.encoder(torch.cat(views))).reshape(len(views), seg.shape[0], -1)
        ids = torch.arange(seg.shape[0])
        loss = two_view_infonce(z[0], z[1], ids, self.t) + two_view_infonce(z[0], z[2], batch["patient"], self.t)
        if self.interlead:
            loss = loss + interlead_infonce(z[3:].transpose(0, 1), self.t)
        return loss


def build(config) -> nn.Module:
    """The reference of a GL or CL config (ecgjax's configs/generative.py, contrastive.py, cl_resnet.py)."""
    method = config.objective.method
    if method == "gl":
        return GL(config)
    if method == "cl" and not config.objective.moco.enabled:
        return CL(config)
    raise ValueError(f"no PyTorch reference for objective.method={method!r}")


def make_step(model: nn.Module, config):
    """One training step on a batch: forward, backward, global-norm clip, AdamW (optax's defaults)."""
    optim = config.optim
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=optim.weight_decay)

    def step(batch):
        opt.zero_grad(set_to_none=True)
        loss = model(batch)
        loss.backward()
        if optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        return loss.detach()
    return step


def batch_of(config, batch_size: int, seed: int = 0) -> dict:
    """N(0, 1) views [batch, time, leads] and distinct patient ids, like cost.random_host_batch."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.model.encoder.num_samples, config.model.encoder.in_leads)
    names = ["segment"] if config.objective.method == "gl" else ["segment", "segment_aug", "patient_segment"]
    return {**{k: torch.randn(shape, generator=g) for k in names}, "patient": torch.arange(batch_size)}
