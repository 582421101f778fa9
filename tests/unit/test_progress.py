"""The progress helper: a bar on a terminal, a line at most every N seconds elsewhere, a final line."""

import io
import logging

import numpy as np
import pytest
import scipy.sparse as sp

from armor import progress as P
from armor.errors import ConfigError
from armor.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    monkeypatch.delenv(P.INTERVAL_ENV, raising=False)
    monkeypatch.delenv(P.MODE_ENV, raising=False)
    monkeypatch.setattr(P, "_configured", {})


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "armor.progress" and r.levelno == logging.INFO]


def test_off_a_terminal_it_writes_a_line_at_most_every_interval_and_a_final_line(caplog):
    caplog.set_level(logging.INFO, logger="armor.progress")
    clock, out = Clock(), Pipe()
    with Progress("scrape", total=1000, unit="movie", interval=30, clock=clock, stream=out) as progress:
        assert progress.mode == "log"
        for _ in range(100):  # 100 updates of 10 movies, one every 2 s: 200 s in all
            clock.now += 2
            progress.update(10, ok=progress.n)
    messages = lines(caplog)
    assert len(messages) == 200 // 30 + 1  # six periodic lines (at 30, 60, ... 180 s) and the final one
    assert messages[0] == "scrape: 150/1,000 movies (15.0%), 5.0/s, ETA 2m50s; ok 140"
    assert messages[-1] == "scrape: done, 1,000/1,000 movies in 3m20s, 5.0/s; ok 990"
    assert out.getvalue() == ""  # no bar characters in a log


def test_a_burst_of_updates_within_the_interval_writes_nothing_until_the_end(caplog):
    caplog.set_level(logging.INFO, logger="armor.progress")
    clock = Clock()
    progress = Progress("encode", total=50, unit="movie", interval=30, clock=clock, stream=Pipe())
    for _ in range(50):
        clock.now += 0.5
        progress.update()
    assert lines(caplog) == []
    progress.close()
    progress.close()  # idempotent
    assert lines(caplog) == ["encode: done, 50/50 movies in 25s, 2.0/s"]


def test_a_stopped_run_says_where_it_stopped_and_why(caplog):
    caplog.set_level(logging.INFO, logger="armor.progress")
    clock = Clock()
    progress = Progress("fused", total=50, unit="epoch", initial=10, interval=30, clock=clock, stream=Pipe())
    for _ in range(3):  # resumed after epoch 10; three slow epochs
        clock.now += 125
        progress.update(1, loss=0.51234, **{"val_ndcg@10": 0.0377})
    assert lines(caplog)[0] == ("fused: 11/50 epochs (22.0%), 2m05s/epoch, ETA 1h21m; loss 0.5123, "
                                "val_ndcg@10 0.0377")
    progress.close(note="early stop")
    assert lines(caplog)[-1] == ("fused: stopped at 13/50 epochs (26.0%) after 6m15s, 2m05s/epoch (early stop); "
                                 "loss 0.5123, val_ndcg@10 0.0377")


def test_a_nested_progress_without_summary_writes_only_its_periodic_lines(caplog):
    caplog.set_level(logging.INFO, logger="armor.progress")
    clock = Clock()
    with Progress("fused epoch 1/5", total=None, unit="step", interval=10, summary=False, clock=clock,
                  stream=Pipe()) as steps:
        for _ in range(30):
            clock.now += 1
            steps.update()
    assert lines(caplog) == ["fused epoch 1/5: 10 steps, 1.0/s", "fused epoch 1/5: 20 steps, 1.0/s",
                             "fused epoch 1/5: 30 steps, 1.0/s"]


def test_on_a_terminal_it_draws_a_bar_with_count_rate_and_eta_and_writes_no_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="armor.progress")
    out = Terminal()
    with Progress("evaluate", total=400, unit="user", stream=out) as progress:
        assert progress.mode == "bar"
        for _ in range(4):
            progress.update(100, users=progress.n)
    screen = out.getvalue()
    assert "evaluate" in screen and "400/400" in screen and "user/s" in screen and "100%" in screen
    assert lines(caplog) == []
    assert P._screen == {"bars": 0, "redirect": None}  # the logging redirect ended with the last bar


def test_quiet_logging_turns_progress_off_and_the_environment_chooses_mode_and_interval(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="armor.progress")  # what -q does
    assert Progress("x", total=3, stream=Terminal()).mode == "off"
    caplog.set_level(logging.INFO, logger="armor.progress")
    monkeypatch.setenv(P.MODE_ENV, "log")
    monkeypatch.setenv(P.INTERVAL_ENV, "5")
    forced = Progress("x", total=3, stream=Terminal())
    assert (forced.mode, forced.interval) == ("log", 5.0)
    assert P.settings() == {"interval": 5.0, "mode": "log"}
    P.configure(interval=2, mode="auto")  # a worker applying the driver's settings wins over its environment
    assert P.settings() == {"interval": 2.0, "mode": "auto"}
    monkeypatch.setenv(P.INTERVAL_ENV, "soon")
    monkeypatch.setattr(P, "_configured", {})
    with pytest.raises(ConfigError, match=P.INTERVAL_ENV):
        Progress("x", total=3, stream=Pipe())
    monkeypatch.setenv(P.INTERVAL_ENV, "30")
    monkeypatch.setenv(P.MODE_ENV, "fancy")
    with pytest.raises(ConfigError, match="auto, bar, log, off"):
        Progress("x", total=3, stream=Pipe())


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (44.6, "45s"), (1837, "30m37s"), (7500, "2h05m"),
                                               (3 * 86400 + 4 * 3600 + 59, "3d04h")])
def test_durations(seconds, text):
    assert P.format_duration(seconds) == text


@pytest.mark.parametrize(("count", "seconds", "text"), [(398, 10, "39.8/s"), (12345, 1, "12,345.0/s"),
                                                        (2, 7, "3.5 s/epoch"), (1, 125, "2m05s/epoch"),
                                                        (0, 5, "- /s")])
def test_rates(count, seconds, text):
    assert P.format_rate(count, seconds, "epoch") == text


def test_unknown_total_has_no_share_or_eta():
    clock = Clock()
    progress = Progress("scan", unit="row", clock=clock, stream=Pipe(), mode="log")
    clock.now += 4
    progress.update(12_000)
    assert progress.line() == "scan: 12,000 rows, 3,000.0/s"
    assert progress.final_line() == "scan: done, 12,000 rows in 4s, 3,000.0/s"


def test_the_trainer_reports_epochs_and_the_steps_of_long_epochs_from_rank_0_only(caplog):
    from armor.config import LightGCNConfig, SplitConfig
    from armor.data.splits import build_split_data, split_interactions
    from armor.data.synthetic import SyntheticConfig, SyntheticWorld
    from armor.models.lightgcn import LightGCN
    from armor.training.trainer import Trainer

    world = SyntheticWorld(SyntheticConfig.preset("tiny"))
    data = build_split_data(split_interactions(world.interactions(), SplitConfig(method="random", seed=0)),
                            world.movies()["movie_id"].to_numpy())
    config = LightGCNConfig(dim=8, layers=1, batch_size=64, epochs=3, patience=10)
    caplog.set_level(logging.INFO, logger="armor.progress")
    P.configure(interval=1e-6)  # every update is "long enough" for a line
    model = LightGCN(config, num_threads=1)
    trainer = Trainer(model, data.train, data)
    steps = model.steps_per_epoch()
    assert steps == -(-data.train.nnz // 64) > 1
    trainer.fit()
    messages = lines(caplog)
    assert f"lightgcn epoch 1/3: 1/{steps} steps ({100 / steps:.1f}%)" in messages[0]
    assert sum(m.startswith("lightgcn epoch 2/3:") for m in messages) == steps
    assert messages[-1].startswith("lightgcn: done, 3/3 epochs in ")
    assert "val_ndcg@10" in messages[-1] and "best " in messages[-1]
    assert model._step_hook is None  # no hook outlives its epoch
    caplog.clear()
    Trainer(LightGCN(config, num_threads=1), data.train, rank=1).run_epoch()  # rank 1 of a group: rank 0 reports
    Trainer(LightGCN(config, num_threads=1), data.train, progress=False).run_epoch()
    assert lines(caplog) == []


def test_an_epoch_that_fails_says_where_training_stopped(caplog):
    from armor.config import LightGCNConfig
    from armor.models.lightgcn import LightGCN
    from armor.training.trainer import Trainer

    caplog.set_level(logging.INFO, logger="armor.progress")
    rng = np.random.default_rng(0)
    train = sp.random(40, 30, density=0.2, random_state=rng, format="csr")
    model = LightGCN(LightGCNConfig(dim=4, layers=1, batch_size=16, epochs=5), num_threads=1)
    trainer = Trainer(model, train)
    trainer.run_epoch()

    def broken(epoch, streams):
        raise FloatingPointError("loss is nan")

    model.train_epoch = broken
    with pytest.raises(FloatingPointError):
        trainer.run_epoch()
    assert lines(caplog)[-1].startswith("lightgcn: stopped at 1/5 epochs (20.0%) after ")
    assert "(FloatingPointError in epoch 2)" in lines(caplog)[-1]
    assert model._step_hook is None
