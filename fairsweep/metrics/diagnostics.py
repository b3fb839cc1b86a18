"""The paper's per-group diagnostics (section 4): gradient norms, margins, top Hessian eigenvalues,
and the two sides of Theorem 4.4.

All of them are taken on the cross-entropy loss in eval mode (batch norm uses its running
statistics, so a group's loss is a function of the parameters alone), over the parameters θ a model
trains (masks are buffers, not parameters).

Cost: one forward and one backward per group over that group's own samples, so all groups together
cost one forward and one backward over the data; a group's gradient is its own backward, never a
per-sample loop. The Hessian's top eigenvalue is power iteration on Hessian-vector products by
double backward through a graph kept for the group's samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fairsweep.metrics.values import GroupMetrics
from fairsweep.spec import DiagnosticsConfig


@dataclass(frozen=True)
class Diagnostics:
    """One model's diagnostics on one split; a disabled diagnostic is None."""

    loss: GroupMetrics  # mean cross-entropy J(θ; S_a)
    grad_norm: GroupMetrics | None  # ‖∇θ J(θ; S_a)‖₂
    margin: GroupMetrics | None  # mean softmax top-1 − top-2 probability
    hessian_eig: GroupMetrics | None  # top eigenvalue of ∇²θ J(θ; S_a); overall is not computed (NaN)

    def to_json(self) -> dict:
        return asdict(self)  # a disabled diagnostic stays None

    @classmethod
    def from_json(cls, content: dict) -> Diagnostics:
        return cls(**{k: None if v is None else GroupMetrics(**v) for k, v in content.items()})

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """MLflow keys `<prefix>group_grad_norm/<g>`, `<prefix>group_margin/<g>`, `<prefix>group_hessian_eig/<g>`."""
        out: dict[str, float] = {}
        for name, values in (("group_grad_norm", self.grad_norm), ("group_margin", self.margin),
                             ("group_hessian_eig", self.hessian_eig)):
            if values is not None:
                out.update(values.keyed(prefix + name))
        return out


def margins(logits: torch.Tensor) -> torch.Tensor:
    """Softmax top-1 minus top-2 probability per sample: (N, C) -> (N,); small near the boundary."""
    top2 = logits.softmax(dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def group_indices(g: torch.Tensor, num_groups: int, cap: int | None, seed: int = 0) -> list[torch.Tensor]:
    """Per group, the positions of its samples, ascending: all of them, or at most `cap` drawn
    uniformly at random without replacement, the draw seeded by `seed` (the same seed, the same
    draw). Never the first `cap` in data order: files are often sorted by an attribute (UTKFace's by
    age), so the first ones of a group are a biased sample of it."""
    counts = torch.bincount(g, minlength=num_groups).tolist()
    n = len(g)
    # (N,) positions in a seeded random order (data order when nothing is capped), then grouped: a
    # stable sort by group keeps that order within each group, so each group's first `cap` are a
    # uniform draw of its members
    order = torch.arange(n) if cap is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    order = order.to(g.device)
    grouped = order[torch.argsort(g[order], stable=True)]
    return [members[:cap].sort().values for members in grouped.split(counts)]


def _trained_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def diagnose(model: nn.Module, data, cfg: DiagnosticsConfig, seed: int = 0, chunk: int = 512) -> Diagnostics:
    """`cfg`'s diagnostics of `model` on a `GroupedData` (eval mode), per group over at most
    `cfg.max_samples_per_group` samples; `seed` seeds which samples those are (`group_indices`: a base
    and a final model measured with the same seed see the same samples) and the power iterations'
    start vectors."""
    was_training = model.training
    model.eval()
    params = _trained_params(model)
    names = data.group_names
    members = group_indices(data.g, len(names), cfg.max_samples_per_group, seed)
    present = [(a, idx) for a, idx in enumerate(members) if len(idx) > 0]
    total = sum(len(idx) for _, idx in present)

    loss, margin, norm, eig = {}, {}, {}, {}
    mean_grad = [torch.zeros_like(p) for p in params] if cfg.grad_norms else None
    for a, idx in present:
        x, y, name = data.inputs(idx), data.y[idx], names[a]  # normalised, never augmented
        group_loss, group_margin, grad = _group_pass(model, params, x, y, cfg.grad_norms, chunk)
        loss[name], margin[name] = group_loss, group_margin
        if grad is not None:
            norm[name] = _norm(grad)
            for acc, part in zip(mean_grad, grad):
                acc.add_(part, alpha=len(idx) / total)
        if cfg.hessian:
            generator = torch.Generator().manual_seed(seed * 1009 + a)
            eig[name] = top_hessian_eigenvalue(model, params, x, y, cfg.hessian_iters, cfg.hessian_tol, generator)
    model.train(was_training)

    counts = {names[a]: len(idx) for a, idx in present}

    def weighted(values: dict[str, float]) -> float:
        return sum(values[n] * counts[n] for n in values) / total

    return Diagnostics(
        loss=GroupMetrics(weighted(loss), loss, counts),
        grad_norm=GroupMetrics(_norm(mean_grad), norm, counts) if cfg.grad_norms else None,
        margin=GroupMetrics(weighted(margin), margin, counts) if cfg.margins else None,
        hessian_eig=GroupMetrics(math.nan, eig, counts) if cfg.hessian else None,
    )


def _group_pass(model, params, x, y, with_grad: bool, chunk: int):
    """Mean loss, mean margin and (optionally) the gradient of the mean loss over (x, y), in chunks."""
    n = len(y)
    loss_sum, margin_sum = 0.0, 0.0
    grad = [torch.zeros_like(p) for p in params] if with_grad else None
    for xc, yc in zip(x.split(chunk), y.split(chunk)):
        with torch.set_grad_enabled(with_grad):
            logits = model(xc)
            per_sample = F.cross_entropy(logits, yc, reduction="none")
        if with_grad:
            for acc, part in zip(grad, torch.autograd.grad(per_sample.sum() / n, params)):
                acc.add_(part)
        loss_sum += float(per_sample.detach().sum())
        margin_sum += float(margins(logits.detach()).sum())
    return loss_sum / n, margin_sum / n, grad


def _norm(vectors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(v.pow(2).sum()) for v in vectors))


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(float((u * v).sum()) for u, v in zip(a, b))


def hessian_vector_product(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor):
    """A function v ↦ ∇²θ J(θ; x, y)·v (J the mean cross-entropy) by double backward.

    The gradient's graph is built once and kept, so each product costs one backward of it.
    """
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))

    return hvp


def power_iteration(hvp, like: list[torch.Tensor], iters: int, tol: float, generator: torch.Generator,
                    shift: float = 0.0) -> float:
    """The eigenvalue of largest magnitude of (H − shift·I), H given by `hvp`, by power iteration.

    Stops when the Rayleigh quotient moves by at most `tol` relative, or after `iters` products.
    """
    v = [torch.randn(p.shape, generator=generator).to(p) for p in like]
    scale = _norm(v)
    v = [t / scale for t in v]
    value = math.nan
    for _ in range(iters):
        hv = [h - shift * t for h, t in zip(hvp(v), v)]
        new = _dot(v, hv)  # Rayleigh quotient, v has unit norm
        size = _norm(hv)
        if size == 0.0:
            return 0.0
        v = [t / size for t in hv]
        if abs(new - value) <= tol * abs(new):
            return new
        value = new
    return value


def top_eigenvalue(hvp, like: list[torch.Tensor], iters: int, tol: float, generator: torch.Generator) -> float:
    """The largest (algebraic) eigenvalue of the symmetric operator `hvp` acting on tensors shaped like `like`.

    Power iteration finds the eigenvalue of largest magnitude; where that one is negative, a second
    power iteration on H − λ·I (whose spectrum is then ≥ 0, the top one largest) finds the top one.
    """
    dominant = power_iteration(hvp, like, iters, tol, generator)
    if dominant >= 0 or math.isnan(dominant):
        return dominant
    return dominant + power_iteration(hvp, like, iters, tol, generator, shift=dominant)


def top_hessian_eigenvalue(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                           iters: int = 50, tol: float = 1e-3, generator: torch.Generator | None = None) -> float:
    """λmax of the Hessian of the mean cross-entropy over (x, y) with respect to `params`."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    return top_eigenvalue(hessian_vector_product(model, params, x, y), params, iters, tol, generator)


def theorem_bound(base: Diagnostics, final: Diagnostics, distance: float) -> dict[str, float]:
    """Theorem 4.4 per group: the bound ‖g_a‖·d + ½·λmax(H_a)·d² (g_a, H_a of the base model, d = ‖θ̃ − θ‖)
    against the actual excess loss J(θ̃; S_a) − J(θ; S_a); keys `bound/<g>`, `excess_loss/<g>` and
    `bound_holds_frac` (the fraction of groups whose excess loss is at most the bound)."""
    bound = {a: base.grad_norm.by_group[a] * distance + 0.5 * base.hessian_eig.by_group[a] * distance ** 2
             for a in base.grad_norm.by_group}
    excess = {a: final.loss.by_group[a] - base.loss.by_group[a] for a in bound if a in final.loss.by_group}
    counts = {a: base.loss.counts[a] for a in excess}
    out = GroupMetrics(math.nan, {a: bound[a] for a in excess}, counts).keyed("bound")
    out.update(GroupMetrics(final.loss.overall - base.loss.overall, excess, counts).keyed("excess_loss"))
    out["bound_holds_frac"] = sum(excess[a] <= bound[a] for a in excess) / len(excess) if excess else math.nan
    return out
