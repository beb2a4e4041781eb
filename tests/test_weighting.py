"""Loss weighting: equal weights and FAMO."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from mtlx_core.weighting import FAMO, WEIGHTINGS, EqualWeighting, build_weighting

TASKS = ("segmentation", "depth")


def _flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params])


def test_unknown_weighting_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid weightings: equal, famo"):
        build_weighting("nash", TASKS)
    assert set(WEIGHTINGS) == {"equal", "famo"}


def test_equal_weighting_backward_is_gradient_of_the_sum() -> None:
    theta = torch.tensor([1.0, -2.0], requires_grad=True)
    w = build_weighting("equal", TASKS)
    total = w.backward(torch.stack([theta[0] ** 2, 3 * theta[1]]))
    assert total.item() == pytest.approx(-5.0)  # 1 + 3 * (-2)
    assert theta.grad.tolist() == [2.0, 3.0]
    assert w.weights() == {"segmentation": 1.0, "depth": 1.0}


def test_famo_moves_weight_to_the_task_whose_loss_falls_more_slowly() -> None:
    # task 0's loss falls by 10 % per step, task 1's by 1 %: FAMO must shift weight onto task 1
    theta = torch.ones(2, requires_grad=True)
    w = build_weighting("famo", TASKS, gamma=0.0)
    history = []
    for step in range(20):
        losses = torch.stack([0.9**step * theta[0], 0.99**step * theta[1]])
        w.backward(losses)
        w.update(torch.tensor([0.9 ** (step + 1), 0.99 ** (step + 1)]))
        history.append(w.softmax_weights()["depth"])
    assert history[0] > 0.5
    assert all(b > a for a, b in itertools.pairwise(history))


def test_famo_gradient_weights_are_z_over_c_times_loss() -> None:
    theta = torch.ones(3, requires_grad=True)
    w = FAMO(("segmentation", "depth", "normals"))
    with torch.no_grad():
        w.w.copy_(torch.tensor([0.3, -0.2, 0.1]))
    losses = torch.tensor([2.0, 0.5, 1.0])
    w.backward(losses * theta)
    z = F.softmax(torch.tensor([0.3, -0.2, 0.1]), dim=0)
    c = (z / losses).sum()
    expected = z / (c * losses)  # d(objective)/d(theta_i) = z_i / (c D_i) * l_i
    torch.testing.assert_close(theta.grad, expected * losses)
    assert sum(w.weights().values()) == pytest.approx(1.0)
    torch.testing.assert_close(torch.tensor(list(w.weights().values())), expected)


@pytest.mark.parametrize("logits", [(0.0, 0.0), (1.5, -0.7)])
def test_famo_and_equal_give_the_same_direction_for_identical_losses(logits: tuple[float, float]) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    params = list(net.parameters())

    def losses() -> torch.Tensor:
        loss = F.mse_loss(net(x), y)
        return torch.stack([loss, F.mse_loss(net(x), y)])

    net.zero_grad()
    EqualWeighting(TASKS).backward(losses())
    g_equal = _flat_grad(params).clone()
    net.zero_grad()
    famo = FAMO(TASKS)
    with torch.no_grad():
        famo.w.copy_(torch.tensor(logits))
    famo.backward(losses())
    g_famo = _flat_grad(params)
    assert F.cosine_similarity(g_equal, g_famo, dim=0).item() == pytest.approx(1.0, abs=1e-6)


def _famo_steps(w: FAMO, start: int, n: int) -> list[torch.Tensor]:
    out = []
    for step in range(start, start + n):
        theta = torch.ones(2, requires_grad=True)
        w.backward(torch.stack([0.8**step * theta[0], 0.95**step * theta[1] + 0.1]))
        w.update(torch.tensor([0.8 ** (step + 1), 0.95 ** (step + 1) + 0.1]))
        out.append(w.w.detach().clone())
    return out


def test_famo_state_dict_round_trip_gives_identical_updates() -> None:
    a = FAMO(TASKS, gamma=0.01, w_lr=0.025)
    _famo_steps(a, 0, 5)
    state = copy.deepcopy(a.state_dict())
    b = FAMO(TASKS, gamma=0.01, w_lr=0.025)
    b.load_state_dict(state)
    assert b.weights() == a.weights()
    for wa, wb in zip(_famo_steps(a, 5, 5), _famo_steps(b, 5, 5), strict=True):
        assert torch.equal(wa, wb)


def test_famo_state_dict_is_a_snapshot() -> None:
    a = FAMO(TASKS)
    _famo_steps(a, 0, 2)
    state = a.state_dict()
    w_before = state["w"].clone()
    exp_avg = state["w_opt"]["state"][0]["exp_avg"].clone()
    _famo_steps(a, 2, 2)
    assert torch.equal(state["w"], w_before)
    assert torch.equal(state["w_opt"]["state"][0]["exp_avg"], exp_avg)


def test_famo_update_before_backward_raises() -> None:
    with pytest.raises(RuntimeError, match="before backward"):
        FAMO(TASKS).update(torch.ones(2))


def test_backward_rejects_wrong_number_of_losses() -> None:
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        build_weighting("equal", TASKS).backward(torch.ones(3, requires_grad=True))


def test_gradient_clipping_applies_after_backward() -> None:
    theta = torch.tensor([3.0, 4.0], requires_grad=True)
    w = build_weighting("equal", TASKS, max_norm=1.0)
    w.backward(torch.stack([theta[0] ** 2 / 2, theta[1] ** 2 / 2]), parameters=[theta])
    torch.testing.assert_close(theta.grad, torch.tensor([0.6, 0.8]))  # (3, 4) clipped to norm 1


def test_clipping_without_parameters_raises() -> None:
    theta = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="parameters"):
        build_weighting("famo", TASKS, max_norm=1.0).backward(theta * 2)
