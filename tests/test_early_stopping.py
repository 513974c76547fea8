"""Early stopping: a run stops on "solved" and on "plateau" at the step its known validation curve
dictates, and trains to the cap when the rule is off. The validation curve is scripted, so the expected
stopping step is known exactly; the model is real and trains on real data meanwhile."""

import pytest
import torch

from suite import harness
from suite.errors import ConfigError
from suite.jobs import Recipe
from suite.models.lstm_library import LibraryLSTM
from suite.models.sequence_model import SequenceModel
from tasks.adding_problem import AddingProblem


class ScriptedAdding(AddingProblem):
    """The adding task, except that its validation MSE follows a script (one value per evaluation)."""

    def __init__(self, script, **kw):
        super().__init__(seq_len=8, **kw)
        self.script, self.calls = list(script), 0

    def evaluate(self, predict, split, batch_size=256, device="cpu"):
        if split != "val":
            return super().evaluate(predict, split, batch_size, device)
        value = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return {"loss": value, "mse": value, "mae": value}


def _fit(script, floor=None, **recipe):
    task = ScriptedAdding(script)
    torch.manual_seed(0)
    model = SequenceModel(task.spec, LibraryLSTM(8, 8, 1), 8)
    cfg = Recipe.from_dict({"steps": 100, "batch_size": 4, "eval_every": 5, "warmup": 0, **recipe})
    thresholds = {"val": 0.01, "test": 0.01, "floor": floor}
    return harness.fit(cfg, 0, task, model, torch.device("cpu"), torch.float32, thresholds)


# evaluations at steps 5, 10, 15, ...: the script's i-th value is the evaluation at step 5 (i + 1)
FALLING = [0.2, 0.19, 0.1, 0.05, 0.009, 0.008, 0.001]  # reaches 0.01 at the 5th evaluation: step 25
PLATEAU = [0.2, 0.1, 0.099, 0.0995, 0.0992, 0.1, 0.05]  # no 1% gain after 0.1 (step 10) for 3 evaluations


def test_stops_when_solved_at_the_first_evaluation_that_reaches_the_threshold():
    fit = _fit(FALLING, until_solved=True)
    assert (fit.stop_reason, fit.steps_done, fit.time_to_threshold_steps) == ("solved", 25, 25)
    assert [p["step"] for p in fit.curve] == [5, 10, 15, 20, 25]


def test_stops_on_a_plateau_after_patience_evaluations_without_a_relative_gain():
    fit = _fit(PLATEAU, patience=3)
    # 0.1 at step 10 is the reference; 0.099, 0.0995, 0.0992 each fail to beat 0.099 (1% below 0.1)
    assert (fit.stop_reason, fit.steps_done) == ("plateau", 25)


def test_a_longer_patience_outlasts_the_plateau_and_then_solves():
    fit = _fit(PLATEAU + [0.005], patience=5, until_solved=True)
    assert (fit.stop_reason, fit.steps_done) == ("solved", 40)


def test_a_long_wait_at_the_baseline_is_not_a_plateau():
    """At the baseline (1/6) for 8 evaluations, then learning, then a real plateau of 3 evaluations."""
    at_chance = [
        0.166,
        0.167,
        0.16,
        0.166,
        0.1668,
        0.166,
        0.1665,
        0.166,
    ]  # 0.16: noise, not a tenth of the way
    learned = [0.1, 0.05, 0.0499, 0.0498, 0.0497]
    fit = _fit(at_chance + learned, floor=1 / 6, patience=3)
    assert (fit.stop_reason, fit.steps_done) == ("plateau", 5 * (len(at_chance) + len(learned)))
    blind = _fit(at_chance + learned, patience=3)  # without the floor the wait would end the run
    assert (blind.stop_reason, blind.steps_done) == ("plateau", 30)


def test_small_gains_that_add_up_reset_the_patience():
    slow = [1.0 * 0.996**i for i in range(20)]  # 0.4% per evaluation: 1% below a reference every 3
    fit = _fit(slow, patience=3)
    assert fit.stop_reason == "budget" and fit.steps_done == 100


def test_without_a_rule_the_run_uses_its_whole_budget():
    fit = _fit(FALLING)
    assert (fit.stop_reason, fit.steps_done, fit.time_to_threshold_steps) == ("budget", 100, 25)


def test_the_stopper_ignores_non_finite_scores_for_the_reference():
    stop = harness.Stopper(Recipe(patience=2), threshold=None, higher=True)
    assert [stop.add(v) for v in (0.5, float("nan"), float("nan"))] == [None, None, "plateau"]


@pytest.mark.parametrize(
    "setting",
    [{"patience": -1}, {"patience": 1.5}, {"until_solved": "yes"}, {"min_improvement": 1.5}],
)
def test_bad_stopping_settings_are_one_line_errors(setting):
    with pytest.raises(ConfigError, match="training setting"):
        Recipe.from_dict(setting)
