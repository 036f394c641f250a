"""`train_one_epoch` on a tiny model: a NaN/inf loss is reported at the batch where it appeared, however seldom the
loop checks, and an epoch cut short by `should_stop` and continued with `resume_from` ends exactly as an uncut one."""

import math

import pytest
import torch
from torch import nn

from metaformer.engine.loop import Stepper, train_one_epoch


def stepper(loss_fn=None) -> Stepper:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Stepper(model, model, optimizer, loss_fn or nn.CrossEntropyLoss(), torch.device("cpu"))


def batches(n: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.randn(4, 3, 2, 2, generator=gen), torch.randint(0, 3, (4,), generator=gen)) for _ in range(n)
    ]


class NaNFrom:
    """Cross-entropy that turns NaN from call `first` (1-based) on."""

    def __init__(self, first: int) -> None:
        self.first, self.calls = first, 0

    def __call__(self, logits, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, target)
        return loss * math.nan if self.calls >= self.first else loss


@pytest.mark.parametrize("log_interval", [1, 4, 50])
def test_a_nan_loss_is_reported_at_its_batch(log_interval):
    stats = train_one_epoch(stepper(NaNFrom(7)), batches(), 10, log_interval=log_interval)
    assert stats.diverged and stats.diverged_batch == 7 and math.isnan(stats.loss)


def test_an_epoch_cut_by_should_stop_and_resumed_ends_as_an_uncut_one():
    whole = stepper()
    full = train_one_epoch(whole, batches(), 10, log_interval=3)

    cut_short = stepper()
    cut = train_one_epoch(
        cut_short, batches(), 10, log_interval=3, should_stop=lambda: cut_short.num_updates == 4
    )
    assert (cut.stopped_after, cut.images, cut_short.num_updates) == (4, 16, 4) and not cut.diverged
    rest = train_one_epoch(
        cut_short, batches()[4:], 10, log_interval=3, resume_from=cut
    )  # the loader starts there
    assert rest.stopped_after is None and cut_short.num_updates == 10
    assert (rest.loss, rest.images) == (full.loss, full.images)
    for a, b in zip(whole.module.parameters(), cut_short.module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_should_stop_is_asked_after_each_optimizer_step_but_the_epochs_last():
    s = stepper()
    asked: list[int] = []
    stats = train_one_epoch(s, batches(3), 3, should_stop=lambda: asked.append(s.num_updates) or False)
    assert asked == [1, 2] and stats.stopped_after is None and stats.images == 12
    s.accumulation, asked[:] = 2, []
    train_one_epoch(s, batches(5), 5, should_stop=lambda: asked.append(s.num_updates) or False)
    assert asked == [4, 5]  # after the steps that end an accumulation group: batches 2 and 4
