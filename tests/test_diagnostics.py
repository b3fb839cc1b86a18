"""The paper's diagnostics against exact and naive oracles: full Hessians, per-sample loops, hand sums."""

import math

import pytest
import torch
import torch.nn.functional as F

from fairsweep.data import GroupedData
from fairsweep.metrics.diagnostics import (Diagnostics, diagnose, group_indices, margins, theorem_bound,
                                           top_eigenvalue, top_hessian_eigenvalue)
from fairsweep.metrics.groups import GroupMetrics
from fairsweep.models import create_model
from fairsweep.spec import DiagnosticsConfig


def _data(n=40, groups=3, features=2, classes=3, seed=0) -> GroupedData:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    g = torch.randint(0, groups, (n,), generator=gen)
    return GroupedData(x, y, g, tuple(f"c{i}" for i in range(classes)), tuple(f"g{i}" for i in range(groups)))


def _mlp(seed=0, width=4):
    torch.manual_seed(seed)
    return create_model("mlp", 3, 2, width=width).double()


def _flat_params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _exact_top_eigenvalue(model, x, y) -> float:
    """λmax of the full Hessian of the mean cross-entropy, built by torch.autograd.functional.hessian."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def loss(flat):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = flat[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, _flat_params(model))
    return float(torch.linalg.eigvalsh(hessian).max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hessian_top_eigenvalue_equals_the_full_hessians(seed):
    model = _mlp(seed)
    data = _data(seed=seed)
    x, y = data.x.double(), data.y
    exact = _exact_top_eigenvalue(model, x, y)
    ours = top_hessian_eigenvalue(model, list(model.parameters()), x, y, iters=2000, tol=1e-10,
                                  generator=torch.Generator().manual_seed(seed))
    assert ours == pytest.approx(exact, rel=1e-3)


def test_top_eigenvalue_is_the_largest_not_the_largest_magnitude():
    # eigenvalues −5, 2, 1: plain power iteration converges to −5; the top one is 2
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    matrix = q @ torch.diag(torch.tensor([-5.0, 2.0, 1.0], dtype=torch.float64)) @ q.T
    like = [torch.zeros(3, dtype=torch.float64)]
    value = top_eigenvalue(lambda v: [matrix @ v[0]], like, iters=5000, tol=1e-12,
                           generator=torch.Generator().manual_seed(1))
    assert value == pytest.approx(2.0, rel=1e-6)


def _naive(model, data: GroupedData, drawn=None):
    """Per group (over all its samples, or the positions `drawn[a]`): mean loss, gradient norm of the mean
    loss from one backward per sample, mean margin by sorting each sample's probabilities."""
    out = {"loss": {}, "grad": {}, "margin": {}}
    for a, name in enumerate(data.group_names):
        members = [i for i in range(len(data)) if int(data.g[i]) == a] if drawn is None else drawn[a]
        if not members:
            continue
        grads, losses, gaps = [], [], []
        for i in members:
            model.zero_grad()
            logits = model(data.x[i:i + 1])
            loss = F.cross_entropy(logits, data.y[i:i + 1])
            loss.backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
            losses.append(float(loss.detach()))
            probs = sorted(logits.softmax(1)[0].tolist(), reverse=True)
            gaps.append(probs[0] - probs[1])
        out["loss"][name] = sum(losses) / len(losses)
        out["grad"][name] = float(torch.stack(grads).mean(0).norm())
        out["margin"][name] = sum(gaps) / len(gaps)
    return out


@pytest.mark.parametrize("cap", [None, 5])
def test_grad_norms_losses_and_margins_equal_per_sample_loops(cap):
    model, data = _mlp(3), _data(n=50, seed=3)
    data = GroupedData(data.x.double(), data.y, data.g, data.class_names, data.group_names)
    cfg = DiagnosticsConfig(hessian=False, bound=False, max_samples_per_group=cap)
    ours = diagnose(model, data, cfg, seed=3, chunk=7)  # chunks smaller than a group: sums across chunks
    naive = _naive(model, data, None if cap is None else [m.tolist() for m in group_indices(data.g, 3, cap, seed=3)])
    for key, values in (("loss", ours.loss), ("grad", ours.grad_norm), ("margin", ours.margin)):
        assert values.by_group == pytest.approx(naive[key], rel=1e-9)
    assert ours.hessian_eig is None
    counts = ours.loss.counts
    total = sum(counts.values())
    assert ours.loss.overall == pytest.approx(sum(naive["loss"][a] * counts[a] for a in counts) / total)


def test_margin_is_top1_minus_top2_probability():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    p = torch.softmax(torch.tensor([2.0, 0.0, 1.0]), 0)
    assert margins(logits).tolist() == pytest.approx([float(p[0] - p[2]), 0.0])


def test_group_indices_draw_each_groups_cap_from_its_own_members_per_seed():
    g = torch.tensor([1, 0, 1, 1, 2, 0, 1])
    assert [t.tolist() for t in group_indices(g, 4, cap=None)] == [[1, 5], [0, 2, 3, 6], [4], []]
    assert [t.tolist() for t in group_indices(g, 4, cap=4, seed=9)] == [[1, 5], [0, 2, 3, 6], [4], []]
    g = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(0))
    members = [torch.nonzero(g == a).flatten().tolist() for a in range(3)]
    draws = {seed: [t.tolist() for t in group_indices(g, 3, cap=20, seed=seed)] for seed in range(200)}
    for drawn in draws.values():
        for a in range(3):
            assert len(drawn[a]) == 20 == len(set(drawn[a])) and set(drawn[a]) <= set(members[a])
            assert drawn[a] == sorted(drawn[a])
    assert [t.tolist() for t in group_indices(g, 3, cap=20, seed=5)] == draws[5]  # same seed, same draw
    assert len({str(drawn) for drawn in draws.values()}) == 200  # different seeds, different draws
    # uniform: over 200 draws every member of a group is drawn about cap / size of the time, the first
    # ones in data order no more often than the others (each count is binomial, sd about 5)
    size = len(members[0])
    times = torch.bincount(torch.tensor([i for drawn in draws.values() for i in drawn[0]]), minlength=300)[members[0]]
    assert times.sum() == 200 * 20 and (times - 200 * 20 / size).abs().max() < 25


def test_data_sorted_by_a_nuisance_attribute_gives_the_estimate_of_a_shuffled_copy():
    """A group whose samples are sorted by their loss (files sorted by, say, age): its first N are its
    hardest. A capped estimate of the sorted data agrees with that of a shuffled copy within the
    noise of the estimator, which the first N's estimate does not (by many standard errors)."""
    torch.manual_seed(0)
    model = create_model("mlp", 3, 2, width=16).double()
    n, cap, draws = 1200, 64, 20
    gen = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    g = (torch.rand(n, generator=gen) < 0.3).long()  # group 1: the minority
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y, reduction="none")
    order = torch.argsort(torch.where(g == 0, -loss, 0.0), stable=True)  # group 0's hardest first
    shuffled = torch.randperm(n, generator=gen)
    cfg = DiagnosticsConfig(grad_norms=False, hessian=False, bound=False, max_samples_per_group=cap)

    def estimates(index):
        data = GroupedData(x[index], y[index], g[index], ("a", "b", "c"), ("g0", "g1"))
        return torch.tensor([diagnose(model, data, cfg, seed=seed).loss.by_group["g0"] for seed in range(draws)],
                            dtype=torch.float64)

    on_sorted, on_shuffled = estimates(order), estimates(shuffled)
    # the standard error of one estimate, from the spread of each set of draws
    se = float(((on_sorted.var() + on_shuffled.var()) / 2).sqrt())
    group = loss[g == 0]
    # sampling theory for a mean of `cap` of the group's losses drawn without replacement
    expected_se = float(group.std() / cap ** 0.5 * ((len(group) - cap) / (len(group) - 1)) ** 0.5)
    assert 0.6 * expected_se < se < 1.5 * expected_se
    first = float(loss[order][:cap].mean())  # the first N in the sorted data's order: its hardest
    assert abs(first - float(group.mean())) > 8 * se
    assert abs(float(on_sorted[0] - on_shuffled[0])) < 4 * se * 2 ** 0.5  # one draw each, seed 0
    assert abs(float(on_sorted.mean() - on_shuffled.mean())) < 4 * se * (2 / draws) ** 0.5
    assert abs(float(on_sorted.mean()) - float(group.mean())) < 4 * se / draws ** 0.5


def test_diagnostics_on_a_batch_norm_model_are_deterministic_and_finite():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 1, width=2)
    gen = torch.Generator().manual_seed(0)
    data = GroupedData(torch.randn(30, 1, 8, 8, generator=gen), torch.randint(0, 3, (30,), generator=gen),
                       torch.arange(30) % 2, ("a", "b", "c"), ("maj", "min"))
    cfg = DiagnosticsConfig(max_samples_per_group=10, hessian_iters=20)
    first, second = diagnose(model, data, cfg, seed=4), diagnose(model, data, cfg, seed=4)
    assert first == second
    assert model.training  # restored
    values = [v for m in (first.loss, first.grad_norm, first.margin, first.hessian_eig) for v in m.by_group.values()]
    assert all(math.isfinite(v) for v in values) and len(values) == 8
    assert Diagnostics.from_json(first.to_json()) == first
    assert set(first.metrics("base_")) == {f"base_group_{k}/{g}" for k in ("grad_norm", "margin", "hessian_eig")
                                           for g in ("maj", "min")}


def test_theorem_bound_by_hand():
    counts = {"maj": 30, "min": 10}
    base = Diagnostics(loss=GroupMetrics(0.25, {"maj": 0.2, "min": 0.4}, counts),
                       grad_norm=GroupMetrics(0.1, {"maj": 0.1, "min": 0.5}, counts), margin=None,
                       hessian_eig=GroupMetrics(math.nan, {"maj": 2.0, "min": 8.0}, counts))
    final = Diagnostics(loss=GroupMetrics(0.5, {"maj": 0.3, "min": 1.1}, counts), grad_norm=None, margin=None,
                        hessian_eig=None)
    out = theorem_bound(base, final, distance=0.5)
    # maj: 0.1·0.5 + ½·2·0.25 = 0.3 ≥ 0.1 holds; min: 0.5·0.5 + ½·8·0.25 = 1.25 ≥ 0.7 holds
    assert out["bound/maj"] == pytest.approx(0.3) and out["bound/min"] == pytest.approx(1.25)
    assert out["excess_loss/maj"] == pytest.approx(0.1) and out["excess_loss/min"] == pytest.approx(0.7)
    assert out["bound_holds_frac"] == 1.0
    assert theorem_bound(base, final, distance=0.1)["bound_holds_frac"] == 0.0  # 0.02 < 0.1, 0.09 < 0.7


def test_bound_needs_gradients_and_hessian():
    with pytest.raises(ValueError, match="`bound` needs"):
        DiagnosticsConfig(hessian=False)
