"""Algorithm 1 (fairness-aware KD finetuning) against naive oracles, and the released code's mitigation
(`finetune.mitigation=released_code`) against a port of that code."""

import copy
import typing

import pytest
import torch
import torch.nn.functional as F

from fairsweep.data import GroupedData, Splits
from fairsweep.models import create_model
from fairsweep.spec import FinetuneConfig
from fairsweep.train.checkpoint import EpochCheckpoint
from fairsweep.train.losses import group_means, kd_loss, kd_per_sample
from fairsweep.train.mitigation import MITIGATIONS, ReleasedCode, fair_kd_loss, fair_objective, fairness_penalty
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


# --- finetune.mitigation=released_code against the paper's released code ------------------------
# The oracle is SNLCode/utils.py's train_kd_mitigate (SoftTarget(T, mitigate=True)), one batch at a
# time, ported line by line with its groups taken from our group attribute instead of the labels.

def released_batch(outputs_s, outputs_t, inputs, targets, groups, gamma, num_groups, t=T):
    """(constrained_loss, total_loss, viol) of one batch, as train_kd_mitigate computes them."""
    loss = torch.nn.CrossEntropyLoss(reduction="none")(outputs_s, targets)
    loss_kd = F.kl_div(F.log_softmax(outputs_s / t, dim=1), F.softmax(outputs_t / t, dim=1),
                       reduction="none") * t * t  # SoftTarget(T, mitigate=True): (N, C)
    total_loss = loss.mean() + loss_kd.mean()
    viol = [0] * num_groups
    for g in range(num_groups):
        mask = (groups == g).nonzero().squeeze()  # extract_for_group
        if inputs[mask].dim() < inputs.dim():
            continue
        if inputs[mask].numel() == 0:
            continue
        viol[g] = torch.abs(loss[mask].mean() + loss_kd[mask].mean() - total_loss)
    # torch.tensor(sum(...)).clone().detach(), without torch.tensor's warning about copying a tensor
    penalty_term = torch.as_tensor(sum(gamma[g] * viol[g] for g in range(num_groups))).clone().detach()
    return total_loss + penalty_term, total_loss, viol


def _value(v) -> float:
    """A violation of the released code (0, or a tensor with gradient) as a number."""
    return float(torch.as_tensor(v).detach())


def _logits(n=9, c=4, seed=0):
    torch.manual_seed(seed)
    student = torch.randn(n, c, dtype=torch.float64, requires_grad=True)
    return student, torch.randn(n, c, dtype=torch.float64), torch.randint(0, c, (n,))


def _teacher_of(logits):
    """A 'teacher model' that returns fixed logits, whatever its input (the batch's sample indices)."""
    return lambda index: logits[index]


def test_released_code_kd_term_is_the_kd_loss_divided_by_the_classes():
    s, t, y = _logits()
    index = torch.arange(len(y))
    groups = torch.tensor([0, 0, 1, 1, 1, 0, 2, 2, 0])
    ours = kd_loss(_teacher_of(t), T, kl_over_classes=ReleasedCode.kl_over_classes)(lambda i: s[i], index, y)
    _, total, _ = released_batch(s, t, index, y, groups, [0, 0, 0], 3)
    assert torch.allclose(ours.mean(), total)  # ce.mean() + loss_kd.mean() over N×C elements
    for g in range(3):  # ce[mask].mean() + loss_kd[mask].mean() over n_g×C elements
        mask = (groups == g).nonzero().squeeze()
        ce = F.cross_entropy(s, y, reduction="none")
        kd = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="none") * T * T
        assert torch.allclose(ours[mask].mean(), ce[mask].mean() + kd[mask].mean())
    # the plain finetune's KD is the released plain one (`batchmean`): C times the mitigated KD term
    plain = kd_per_sample(s, t, y, T)
    batchmean = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    assert torch.allclose(plain.mean(), F.cross_entropy(s, y) + batchmean)
    assert torch.allclose(plain - ours, (1 - 1 / 4) * (plain - F.cross_entropy(s, y, reduction="none")))


def test_released_code_penalty_changes_the_value_but_not_the_gradient():
    s, t, y = _logits()
    index = torch.arange(len(y))
    groups = torch.tensor([0, 0, 1, 1, 1, 0, 2, 2, 0])
    gamma = [0.5, 3.0, 1.5]
    mitigation = ReleasedCode(0.1, ("g0", "g1", "g2"))
    mitigation.load_state_dict({"multipliers": torch.tensor(gamma), "violation_sum": torch.zeros(3)})
    per_sample = kd_per_sample(s, t, y, T, kl_over_classes="mean")
    objective = mitigation.objective(per_sample, groups)
    constrained, total, viol = released_batch(s, t, index, y, groups, gamma, 3)
    assert float(objective.detach() - per_sample.mean().detach()) > 0.1  # the penalty is in the value
    assert torch.allclose(objective, constrained)

    def grad(objective):
        return torch.autograd.grad(objective, s, retain_graph=True)[0]

    assert torch.equal(grad(objective), grad(per_sample.mean()))  # exactly CE + KD/C's
    assert torch.allclose(grad(objective), grad(constrained))
    # Algorithm 1, with the same multipliers, puts the penalty in the gradient
    assert not torch.allclose(grad(fair_objective(per_sample, groups, mitigation.multipliers)), grad(objective))


def test_released_code_skips_a_group_with_a_single_sample_in_the_batch():
    s, t, y = _logits()
    index = torch.arange(len(y))
    groups = torch.tensor([0, 0, 1, 0, 0, 0, 2, 2, 0])  # g1: one sample; g3: absent
    mitigation = ReleasedCode(1.0, ("g0", "g1", "g2", "g3"))
    per_sample = kd_per_sample(s, t, y, T, kl_over_classes="mean")
    mitigation.objective(per_sample, groups)
    _, _, viol = released_batch(s, t, index, y, groups, [0] * 4, 4)
    assert viol[1] == 0 and viol[3] == 0 and viol[0] > 0 and viol[2] > 0
    assert mitigation.violation_sum[1] == 0 and mitigation.violation_sum[3] == 0
    assert mitigation.violation_sum.tolist() == pytest.approx([_value(v) for v in viol], rel=1e-6)
    # Algorithm 1 counts the single sample's group
    assert fairness_penalty(per_sample, groups, torch.tensor([0.0, 1, 0, 0], dtype=torch.float64)) > 0


def _batch_order_problem(n=12, batch=4, seed=5):
    """12 samples, 3 groups, 3 batches in the order torch.randperm(seed) gives: batch 0 has groups
    [0, 0, 1, 1], batch 1 [0, 0, 0, 2] (group 2 a single sample, group 1 absent), batch 2 [1, 1, 2, 2]."""
    data, student, teacher = _problem(n=n, groups=3)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    g = torch.empty(n, dtype=torch.long)
    g[order] = torch.tensor([0, 0, 1, 1, 0, 0, 0, 2, 1, 1, 2, 2])
    data = GroupedData(data.x, data.y, g, data.class_names, data.group_names)
    return data, student, teacher


def _released_finetune_by_hand(data, student, teacher, mu, epochs, seed=5, batch=4):
    """snl_finetune_mitigate.py's epoch loop over train_kd_mitigate: the weights, gamma after each
    epoch, and the first epoch's violations |L(S) − L_a(S)| of its per-sample losses (not what it steps by)."""
    model = copy.deepcopy(student)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed)
    gamma, gammas, epoch_violations = [0.0] * 3, [], []
    for _ in range(epochs):
        model.train()
        total_viol, losses, groups = [0] * 3, [], []
        for idx in torch.randperm(len(data), generator=gen).split(batch):
            outputs_s, outputs_t = model(data.x[idx]), teacher.eval()(data.x[idx]).detach()
            constrained, _, viol = released_batch(outputs_s, outputs_t, data.x[idx], data.y[idx], data.g[idx], gamma, 3)
            total_viol = [total_viol[g] + viol[g] for g in range(3)]
            losses.append(kd_per_sample(outputs_s, outputs_t, data.y[idx], T, kl_over_classes="mean").detach())
            groups.append(data.g[idx])
            opt.zero_grad()
            constrained.backward()
            opt.step()
        gamma = [gamma[g] + mu * _value(total_viol[g]) for g in range(3)]
        gammas.append(gamma)
        per, g = torch.cat(losses), torch.cat(groups)
        epoch_violations.append([abs(float(per.mean() - per[g == a].mean())) for a in range(3)])
    return model, gammas, epoch_violations[0]


def _released_cfg(mu, epochs=2):
    return FinetuneConfig(epochs=epochs, lr=0.1, mu=mu, schedule="constant", momentum=0.0, weight_decay=0.0,
                          batch_size=4, mitigation="released_code")


def test_released_code_multipliers_grow_by_mu_times_the_sum_of_the_batch_violations():
    data, student, teacher = _batch_order_problem()
    mu = 0.5
    model, gammas, epoch_violation = _released_finetune_by_hand(data, student, teacher, mu, epochs=2)
    ours = copy.deepcopy(student)
    history = finetune(ours, copy.deepcopy(teacher), _splits(data), _released_cfg(mu), 4,
                       torch.Generator().manual_seed(5))
    for row, gamma in zip(history, gammas):
        assert [row[f"multiplier/g{a}"] for a in range(3)] == pytest.approx(gamma, rel=1e-5, abs=1e-6)  # float32 sums
    assert all(v > 0 for v in gammas[0])
    for a, b in zip(ours.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # neither µ × the epoch's violation (Algorithm 1's step) nor µ × the mean of the batches' violations
    first = [history[0][f"multiplier/g{a}"] for a in range(3)]
    assert first != pytest.approx([mu * v for v in epoch_violation], rel=0.05)
    assert first != pytest.approx([v / 3 for v in gammas[0]], rel=0.05)


def test_released_code_finetunes_the_same_model_whatever_mu():
    # the oracle of sweeps/mitigation_sources.yaml's finding: the released mitigation is CE + KD/C, bit for bit
    data, student, teacher = _batch_order_problem()
    models = []
    for mu in (0.0, 0.5):
        model = copy.deepcopy(student)
        history = finetune(model, copy.deepcopy(teacher), _splits(data), _released_cfg(mu), 4,
                           torch.Generator().manual_seed(5))
        models.append(model)
    assert history[-1]["multiplier/g0"] > 0  # µ moved the multipliers ...
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()))


@pytest.mark.parametrize("mitigation", sorted(MITIGATIONS))
def test_a_resumed_mitigated_finetune_equals_an_uninterrupted_one(tmp_path, monkeypatch, mitigation):
    data, student, teacher = _problem()
    cfg = FinetuneConfig(epochs=4, lr=0.05, mu=0.5, batch_size=16, mitigation=mitigation)

    def run(checkpoint):
        model = copy.deepcopy(student)
        torch.manual_seed(0)
        history = finetune(model, copy.deepcopy(teacher), _splits(data), cfg, 16, torch.Generator().manual_seed(3),
                           checkpoint)
        return model, history

    uninterrupted = run(None)
    save = EpochCheckpoint.save

    def save_then_stop(self, epochs, *args):
        save(self, epochs, *args)
        if epochs == 2:
            raise KeyboardInterrupt  # killed right after the second epoch's checkpoint

    monkeypatch.setattr(EpochCheckpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(EpochCheckpoint(tmp_path / "finetune.pt"))
    monkeypatch.setattr(EpochCheckpoint, "save", save)
    checkpoint = EpochCheckpoint(tmp_path / "finetune.pt")
    resumed = run(checkpoint)
    assert checkpoint.resumed_from == 2 and resumed[1] == uninterrupted[1]
    assert any(v > 0 for k, v in resumed[1][-1].items() if k.startswith("multiplier/"))
    assert all(torch.equal(a, b) for a, b in zip(resumed[0].parameters(), uninterrupted[0].parameters()))


def test_the_spec_names_every_mitigation():
    assert set(typing.get_args(FinetuneConfig.model_fields["mitigation"].annotation)) == set(MITIGATIONS)
    assert FinetuneConfig().mitigation == "algorithm1"
