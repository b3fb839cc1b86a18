"""Random linearization and training a linearized model from scratch (the paper's Figure 2 setting)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fairsweep.data import GroupedData, Splits
from fairsweep.linearize import count_relus
from fairsweep.linearize.random import proportional_counts
from fairsweep.models import ModelArgs, create_model
from fairsweep.models.sites import relu_sites
from fairsweep.spec import FinetuneConfig, validate_spec
from fairsweep.train.stages import finetune, reinitialize, run_linearizer

ARGS = ModelArgs("small_cnn", 3, 1, {"width": 4})  # the base models below


def method(base, splits, spec, budget, generator):
    return run_linearizer(base, ARGS, splits, spec, budget, generator)


@pytest.mark.parametrize("sizes,budget,expected", [
    ([16, 16], 16, [8, 8]),
    ([4096, 2048, 1024], 100, [57, 29, 14]),  # shares 57.14, 28.57, 14.29: the largest remainder gets the 100th
    ([3, 3, 3], 4, [2, 1, 1]),
    ([5, 1], 100, [5, 1]),
])
def test_proportional_counts_by_hand(sizes, budget, expected):
    counts = proportional_counts(sizes, budget)
    assert sum(counts) == min(budget, sum(sizes)) and all(c <= s for c, s in zip(counts, sizes))
    shares = [min(budget, sum(sizes)) * s / sum(sizes) for s in sizes]
    assert all(abs(c - share) < 1 for c, share in zip(counts, shares))  # largest remainders: within one
    assert counts == expected


def _digits_like(n=48, groups=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    names = tuple(str(i) for i in range(3))
    return GroupedData(torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen),
                       torch.randint(0, groups, (n,), generator=gen), names, tuple(f"g{i}" for i in range(groups)))


def test_random_linearization_keeps_exactly_the_budget_per_site_in_proportion():
    torch.manual_seed(0)
    base = create_model("small_cnn", 3, 1, width=4)
    data = _digits_like()
    spec = validate_spec({"name": "t", "linearize": {"method": "random"}})
    out = method(base, Splits(data, data, data), spec, 300, torch.Generator().manual_seed(1))
    model, history = out.model, out.history
    count = count_relus(model, (1, 8, 8))
    sizes = [4 * 64, 8 * 64, 16 * 16]  # relu1, relu2 at 8×8; relu3 after the 2× pool
    assert count.total == 300 == history[-1]["live_relus"]
    assert list(count.sites.values()) == proportional_counts(sizes, 300)
    assert all(site.mask is None for site in relu_sites(base).values())  # the base model is untouched
    again = method(base, Splits(data, data, data), spec, 300, torch.Generator().manual_seed(1)).model
    other = method(base, Splits(data, data, data), spec, 300, torch.Generator().manual_seed(2)).model
    masks = lambda m: [s.mask for s in relu_sites(m).values()]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(masks(model), masks(again)))
    assert not all(torch.equal(a, b) for a, b in zip(masks(model), masks(other)))


def test_from_scratch_reinitializes_keeps_masks_and_trains_with_cross_entropy_only():
    torch.manual_seed(0)
    data = _digits_like(n=40)
    spec = validate_spec({"name": "t", "linearize": {"method": "random"}})
    student = method(create_model("small_cnn", 3, 1, width=4), Splits(data, data, data), spec, 200,
                     torch.Generator().manual_seed(0)).model
    cfg = FinetuneConfig(epochs=2, lr=0.05, schedule="constant", batch_size=16, from_scratch=True)
    results = []
    for teacher_seed in (1, 2):  # the teacher plays no part
        torch.manual_seed(teacher_seed)
        teacher = create_model("small_cnn", 3, 1, width=4)
        ours = copy.deepcopy(student)
        torch.manual_seed(7)
        finetune(ours, teacher, Splits(data, data, data), cfg, 64, torch.Generator().manual_seed(3))
        results.append(ours)
    # the oracle: fresh weights from the same global seed, then plain cross-entropy SGD, same batch order
    oracle = copy.deepcopy(student)
    torch.manual_seed(7)
    reinitialize(oracle)
    opt = torch.optim.SGD(oracle.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        oracle.train()
        for idx in torch.randperm(len(data), generator=gen).split(16):
            loss = F.cross_entropy(oracle(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for ours in results:
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), oracle.state_dict().values()))
        assert count_relus(ours, (1, 8, 8)).total == 200
    start = dict(student.named_parameters())
    assert not torch.equal(dict(oracle.named_parameters())["head.weight"], start["head.weight"])
