"""Algorithm 1 (fairness-aware KD finetuning) against naive oracles."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fairsweep.data import GroupedData, Splits
from fairsweep.models import create_model
from fairsweep.spec import FinetuneConfig
from fairsweep.train.losses import fair_kd_loss, fairness_penalty, group_means, kd_per_sample
from fairsweep.train.stages import finetune

T = 4.0


def naive_kd(student, teacher, y, t):
    """One sample at a time: CE + t²·Σ p_teacher·(log p_teacher − log p_student)."""
    out = []
    for s_i, t_i, y_i in zip(student, teacher, y):
        ce = -torch.log_softmax(s_i, 0)[y_i]
        p_t = torch.softmax(t_i / t, 0)
        kl = (p_t * (torch.log(p_t) - torch.log_softmax(s_i / t, 0))).sum()
        out.append(ce + t * t * kl)
    return torch.stack(out)


def naive_penalty(per_sample, groups, multipliers):
    overall = per_sample.mean()
    total = per_sample.new_zeros(())
    for a in range(len(multipliers)):
        members = per_sample[groups == a]
        if len(members):
            total = total + multipliers[a] * (overall - members.mean()).abs()
    return total


def test_kd_matches_per_sample_oracle():
    torch.manual_seed(0)
    s, t, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 5, (7,))
    assert torch.allclose(kd_per_sample(s, t, y, T), naive_kd(s, t, y, T))
    assert torch.allclose(kd_per_sample(s, s, y, T), F.cross_entropy(s, y, reduction="none"))  # KL(p‖p) = 0


def test_group_means_and_penalty_match_a_loop_and_skip_absent_groups():
    torch.manual_seed(0)
    values = torch.rand(11, dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 0, 2, 2, 2, 0, 3, 3, 0, 2, 3])  # group 1 absent
    means, counts = group_means(values, groups, 4)
    assert counts.tolist() == [4, 0, 4, 3]
    for a in (0, 2, 3):
        assert torch.allclose(means[a], values[groups == a].mean())
    assert means[1] == 0
    lam = torch.tensor([0.3, 5.0, 0.7, 1.1], dtype=torch.float64)
    fast, slow = fairness_penalty(values, groups, lam), naive_penalty(values, groups, lam)
    assert torch.allclose(fast, slow)
    g_fast, = torch.autograd.grad(fast, values)
    g_slow, = torch.autograd.grad(naive_penalty(values, groups, lam), values)
    assert torch.allclose(g_fast, g_slow) and torch.isfinite(g_fast).all()
    # the absent group's huge multiplier changes nothing
    assert torch.allclose(fast, fairness_penalty(values, groups, lam * torch.tensor([1, 0, 1, 1.0])))


def _problem(seed=0, n=48, groups=3):
    torch.manual_seed(seed)
    x = torch.randn(n, 2)
    y = (x[:, 0] > 0).long()
    g = torch.arange(n) % groups
    g[: n // 2] = 0  # an imbalanced group split
    data = GroupedData(x, y, g, ("a", "b"), tuple(f"g{i}" for i in range(groups)))
    student = create_model("mlp", 2, 2, width=8)
    teacher = create_model("mlp", 2, 2, width=8)
    return data, student, teacher


def _grads(model, objective):
    model.zero_grad()
    objective.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_zero_multipliers_give_plain_kd_exactly():
    data, student, teacher = _problem()
    s, t = student(data.x), teacher(data.x).detach()
    objective, per_sample = fair_kd_loss(s, t, data.y, data.g, torch.zeros(3), T)
    assert torch.equal(objective, kd_per_sample(s, t, data.y, T).mean())


def test_penalty_carries_gradient_and_reduces_the_violation():
    data, student, teacher = _problem()
    t = teacher(data.x).detach()
    plain = _grads(student, fair_kd_loss(student(data.x), t, data.y, data.g, torch.zeros(3), T)[0])
    lam = torch.tensor([0.0, 2.0, 2.0])
    fair = _grads(student, fair_kd_loss(student(data.x), t, data.y, data.g, lam, T)[0])
    assert not torch.allclose(plain, fair)  # µ > 0 changes the update once a multiplier is non-zero
    # the extra gradient is exactly the naive penalty's gradient
    per = kd_per_sample(student(data.x), t, data.y, T)
    assert torch.allclose(fair - plain, _grads(student, naive_penalty(per, data.g, lam)), atol=1e-6)

    def violation(model):
        with torch.no_grad():
            per = kd_per_sample(model(data.x), t, data.y, T)
            return float(naive_penalty(per, data.g, torch.tensor([0.0, 1.0, 1.0])))

    steps = {}
    for name, grad in (("plain", plain), ("fair", fair)):
        model = copy.deepcopy(student)
        with torch.no_grad():
            offset = 0
            for p in model.parameters():
                p -= 0.05 * grad[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        steps[name] = violation(model)
    assert steps["fair"] < steps["plain"]


def _splits(data):
    return Splits(data, data, data)


def test_mu_zero_finetune_equals_plain_kd_loop():
    data, student, teacher = _problem()
    cfg = FinetuneConfig(epochs=3, lr=0.05, mu=0.0, schedule="constant", batch_size=16)
    ours = copy.deepcopy(student)
    finetune(ours, copy.deepcopy(teacher), _splits(data), cfg, 16, torch.Generator().manual_seed(3))
    # the oracle: plain KD written out by hand with the same batch order
    oracle = copy.deepcopy(student)
    opt = torch.optim.SGD(oracle.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        oracle.train()
        for idx in torch.randperm(len(data), generator=gen).split(16):
            loss = kd_per_sample(oracle(data.x[idx]), teacher.eval()(data.x[idx]).detach(), data.y[idx], T).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(ours.parameters(), oracle.parameters()):
        assert torch.equal(a, b)


def test_mu_positive_changes_the_finetuned_model():
    data, student, teacher = _problem()
    results = {}
    for mu in (0.0, 1.0):
        model = copy.deepcopy(student)
        cfg = FinetuneConfig(epochs=3, lr=0.05, mu=mu, schedule="constant", batch_size=16)
        results[mu] = (model, finetune(model, copy.deepcopy(teacher), _splits(data), cfg, 16,
                                       torch.Generator().manual_seed(3)))
    history0, history1 = results[0.0][1], results[1.0][1]
    assert all(v == 0 for k, v in history0[-1].items() if k.startswith("multiplier/"))
    assert any(v > 0 for k, v in history1[0].items() if k.startswith("multiplier/"))
    # epoch 1 runs with zero multipliers, so both agree until the first multiplier update
    assert history0[0]["loss"] == history1[0]["loss"]
    assert not all(torch.equal(a, b) for a, b in zip(results[0.0][0].parameters(), results[1.0][0].parameters()))


def test_multiplier_update_equals_hand_computation_on_a_two_batch_epoch():
    data, student, teacher = _problem(n=8, groups=2)
    data = GroupedData(data.x, data.y, torch.tensor([0, 0, 0, 1, 0, 0, 1, 1]), data.class_names, data.group_names)
    mu = 0.5
    cfg = FinetuneConfig(epochs=1, lr=0.1, mu=mu, schedule="constant", momentum=0.0, weight_decay=0.0,
                         batch_size=4)
    # by hand: the per-sample KD losses of each batch, computed before that batch's step
    hand = copy.deepcopy(student)
    opt = torch.optim.SGD(hand.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(5)
    losses, groups = [], []
    for idx in torch.randperm(8, generator=gen).split(4):
        per = kd_per_sample(hand(data.x[idx]), teacher.eval()(data.x[idx]).detach(), data.y[idx], T)
        losses.append(per.detach())
        groups.append(data.g[idx])
        opt.zero_grad()
        per.mean().backward()
        opt.step()
    per, g = torch.cat(losses), torch.cat(groups)
    expected = [mu * abs(float(per.mean() - per[g == a].mean())) for a in (0, 1)]
    history = finetune(copy.deepcopy(student), copy.deepcopy(teacher), _splits(data), cfg, 4,
                       torch.Generator().manual_seed(5))
    assert history[0]["multiplier/g0"] == pytest.approx(expected[0], rel=1e-5)
    assert history[0]["multiplier/g1"] == pytest.approx(expected[1], rel=1e-5)


def test_no_nan_when_a_batch_misses_a_group():
    data, student, teacher = _problem(groups=3)
    data = GroupedData(data.x, data.y, torch.where(torch.arange(48) < 2, 2, 0), data.class_names, data.group_names)
    cfg = FinetuneConfig(epochs=3, lr=0.05, mu=1.0, schedule="constant", batch_size=8)
    history = finetune(student, teacher, _splits(data), cfg, 8, torch.Generator().manual_seed(0))
    assert history[-1]["multiplier/g1"] == 0.0  # group 1 never appears
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert all(v == v for row in history for v in row.values())


def test_divergence_fails_the_stage_instead_of_storing_nan():
    from fairsweep.errors import StageError

    data, student, teacher = _problem()
    cfg = FinetuneConfig(epochs=3, lr=1e6, mu=0.0, schedule="constant", batch_size=16)
    with pytest.raises(StageError, match="training diverged: the mean loss of epoch"):
        finetune(student, teacher, _splits(data), cfg, 16, torch.Generator().manual_seed(0))
