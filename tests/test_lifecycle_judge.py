"""The canary judge (app/lifecycle/judge.py), by property: guardrails at the exact bar, the soft
rules only when significant and beyond the tolerance, never before min_trades, and a state that
survives JSON."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.lifecycle.judge import (
    METRICS,
    Judge,
    JudgeRules,
    Outcome,
    PairedBar,
    Verdict,
    evidence,
)
from app.settings import LifecycleSettings
from tests.conftest import ROOT

GUARDRAILS = ("non_finite", "loss_limit", "max_drawdown", "stuck")
ACTIONS = ("sell", "hold", "buy")
NO_LIMITS = {"loss_limit": 1e9, "max_drawdown": 1e9}  # the loss guardrails off

small_returns = st.floats(-2e-4, 2e-4, allow_nan=False)
actions = st.sampled_from(ACTIONS)


def cycling(t: int) -> str:
    """An action that changes every bar (never stuck)."""
    return ACTIONS[t % 3]


def run(judge: Judge, bars: Sequence[PairedBar]) -> Verdict | None:
    """Observe every bar; the first verdict (checking that later bars keep returning it)."""
    first = None
    for bar in bars:
        verdict = judge.observe(bar)
        if first is None:
            first = verdict
        elif verdict is not first:
            raise AssertionError("a FAIL verdict changed after it was given")
    return first


def profitable(rng: random.Random, bars: int, sharpe: float = 0.3) -> list[float]:
    """An incumbent's per-bar net returns with a per-bar Sharpe of about `sharpe`."""
    sigma = 1e-3
    return [rng.gauss(sharpe * sigma, sigma) for _ in range(bars)]


def paired(candidate: Sequence[float], incumbent: Sequence[float], trade_every: int = 3):
    return [
        PairedBar(c, i, cycling(t), cycling(t + 1), True, t % trade_every == 0)
        for t, (c, i) in enumerate(zip(candidate, incumbent, strict=True))
    ]


# -- identical models ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-0.01, 0.01, allow_nan=False), actions, st.booleans()),
        max_size=400,
    ),
    st.integers(0, 30),
    st.integers(1, 500),
)
def test_identical_models_never_fail(
    bars: list[tuple[float, str, bool]], min_trades: int, horizon: int
) -> None:
    rules = JudgeRules(min_trades=min_trades, horizon_bars=horizon, **NO_LIMITS)
    judge = Judge(rules)
    series = [PairedBar(r, r, a, a, True, closed) for r, a, closed in bars]

    assert run(judge, series) is None
    verdict = judge.conclude()
    trades = sum(closed for _, _, closed in bars)
    if trades >= min_trades:
        assert (verdict.outcome, verdict.rule) == (Outcome.PASS, "window")
    else:
        assert (verdict.outcome, verdict.rule) == (Outcome.INCONCLUSIVE, "min_trades")


def test_identical_models_never_fail_however_long() -> None:
    rng = random.Random(5)
    judge = Judge(JudgeRules(min_trades=1, horizon_bars=60))  # default guardrails
    for t in range(100_000):
        r = rng.gauss(1e-5, 1e-4)
        assert judge.observe(PairedBar(r, r, cycling(t), cycling(t), True, t % 2 == 0)) is None
    assert judge.conclude().outcome is Outcome.PASS
    assert all(judge.figures[f"{m}_evidence"] == 1.0 for m in METRICS)  # no evidence at all


# -- guardrails ---------------------------------------------------------------------------------


def benign(prefix: list[float]) -> list[PairedBar]:
    """Bars that breach nothing: small returns, actions that keep changing."""
    return [PairedBar(r, r, cycling(t), cycling(t + 1)) for t, r in enumerate(prefix)]


@settings(max_examples=150, deadline=None)
@given(st.lists(small_returns, max_size=80), st.floats(0.0, 0.05), st.lists(small_returns))
def test_a_loss_past_the_limit_fails_at_that_bar(
    prefix: list[float], beyond: float, after: list[float]
) -> None:
    rules = JudgeRules()
    cumulative = math.fsum(prefix)
    loss = -rules.loss_limit - cumulative - beyond - 1e-9
    bars = [*benign(prefix), PairedBar(loss, 0.0, "sell", "buy"), *benign(after)]

    verdict = run(Judge(rules), bars)

    assert verdict is not None
    assert (verdict.outcome, verdict.rule, verdict.bars) == (
        Outcome.FAIL,
        "loss_limit",
        len(prefix) + 1,
    )
    assert "reached the loss limit -2.00%" in verdict.reason


@settings(max_examples=150, deadline=None)
@given(
    st.lists(small_returns, max_size=40),
    st.lists(small_returns, max_size=40),
    st.floats(0.0, 0.01),
)
def test_a_drawdown_past_the_limit_fails_at_that_bar(
    before: list[float], between: list[float], beyond: float
) -> None:
    """A 4% gain, then a fall of over 3% from the peak: the drawdown, not the loss limit."""
    rules = JudgeRules()
    returns = [*before, 0.04, *between]
    equity = math.prod(1 + r for r in returns)
    peak = max(math.prod(1 + r for r in returns[: k + 1]) for k in range(len(returns)))
    fall = peak * (1 - rules.max_drawdown - beyond - 1e-9) / equity - 1
    bars = [*benign(returns), PairedBar(fall, 0.0, "sell", "buy"), *benign(before)]

    verdict = run(Judge(rules), bars)

    assert verdict is not None
    assert (verdict.rule, verdict.bars) == ("max_drawdown", len(returns) + 1)
    assert verdict.figures["candidate_max_drawdown"] >= rules.max_drawdown


@settings(max_examples=100, deadline=None)
@given(st.lists(small_returns, max_size=60), st.booleans())
def test_a_non_finite_output_fails_at_that_bar(prefix: list[float], nan_return: bool) -> None:
    broken = (
        PairedBar(math.nan, 0.0, "hold", "buy")  # a return that is not a number
        if nan_return
        else PairedBar(0.0, 0.0, "hold", "buy", candidate_valid=False)  # made a hold
    )
    bars = [*benign(prefix), broken, *benign(prefix)]

    verdict = run(Judge(JudgeRules()), bars)

    assert verdict is not None
    assert (verdict.rule, verdict.bars) == ("non_finite", len(prefix) + 1)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(small_returns, max_size=60),
    st.integers(2, 40),
    st.lists(actions, min_size=40, max_size=40),
    actions,
)
def test_one_action_while_the_incumbent_moves_fails_at_the_stuck_bars_th_bar(
    prefix: list[float], stuck: int, incumbent: list[str], action: str
) -> None:
    incumbent = incumbent[:stuck]
    if len(set(incumbent)) < 2:
        incumbent[-1] = "sell" if incumbent[0] != "sell" else "buy"
    rules = JudgeRules(stuck_bars=stuck)
    # Before the run of `action`: the two other actions in turn (never stuck, never `action`).
    others = [a for a in ACTIONS if a != action]
    start = [PairedBar(r, r, others[t % 2], cycling(t)) for t, r in enumerate(prefix)]
    run_bars = [PairedBar(0.0, 0.0, action, i) for i in incumbent]
    bars = [*start, *run_bars, *run_bars]

    verdict = run(Judge(rules), bars)

    assert verdict is not None
    assert (verdict.rule, verdict.bars) == ("stuck", len(prefix) + stuck)
    # Not stuck while the incumbent does not move either, nor with the guardrail off.
    calm = [PairedBar(0.0, 0.0, action, "hold") for _ in range(3 * stuck)]
    assert run(Judge(rules), calm) is None
    assert run(Judge(JudgeRules(stuck_bars=0)), bars) is None


def reference_breach(bars: Sequence[PairedBar], rules: JudgeRules) -> tuple[int, str] | None:
    """The guardrails as written, from whole prefixes (not the judge's running counters)."""
    cumulative, equity, peak = 0.0, 1.0, 1.0
    for t, bar in enumerate(bars, start=1):
        if not bar.candidate_valid or not math.isfinite(bar.candidate):
            return t, "non_finite"
        cumulative += bar.candidate
        equity *= 1.0 + bar.candidate
        peak = max(peak, equity)
        if cumulative <= -rules.loss_limit:
            return t, "loss_limit"
        if 1.0 - equity / peak >= rules.max_drawdown:
            return t, "max_drawdown"
        k = rules.stuck_bars
        if k and t >= k:
            window = bars[t - k : t]
            if len({b.candidate_action for b in window}) == 1 and (
                len({b.incumbent_action for b in window}) >= 2
            ):
                return t, "stuck"
    return None


bar_strategy = st.builds(
    PairedBar,
    candidate=st.one_of(
        st.floats(-0.004, 0.004, allow_nan=False),
        st.just(math.nan),
        st.floats(-0.05, 0.05, allow_nan=False),
    ),
    incumbent=st.floats(-0.01, 0.01, allow_nan=False),
    candidate_action=st.sampled_from(("hold", "hold", "hold", "buy")),
    incumbent_action=actions,
    candidate_valid=st.integers(0, 9).map(lambda k: k > 0),  # 1 in 10 invalid
    candidate_closed_trade=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(bar_strategy, max_size=120),
    st.floats(0.005, 0.05),
    st.floats(0.005, 0.08),
    st.integers(0, 8),
)
def test_the_first_guardrail_breached_is_the_verdict_at_its_bar(
    bars: list[PairedBar], loss_limit: float, drawdown: float, stuck: int
) -> None:
    rules = JudgeRules(
        loss_limit=loss_limit, max_drawdown=drawdown, stuck_bars=stuck, min_trades=10**9
    )

    verdict = run(Judge(rules), bars)

    expected = reference_breach(bars, rules)
    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert (verdict.bars, verdict.rule) == expected
        assert verdict.rule in GUARDRAILS


# -- the evidence -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "total", "squares", "horizon"),
    [(10, -3.0, 10.0, 60), (60, -10.0, 60.0, 60), (200, 5.0, 180.0, 60), (720, -40.0, 700.0, 720)],
)
def test_the_evidence_is_the_half_normal_mixture_of_likelihood_ratios(
    n: int, total: float, squares: float, horizon: int
) -> None:
    """The closed form against the integral it stands for, over theta < 0 (the worse side)."""
    variance = squares / n  # the plug-in sigma^2
    tau = math.sqrt(variance / horizon)
    theta = np.linspace(-12 * tau, 0.0, 200_001)
    ratio = np.exp(theta * total / variance - n * theta**2 / (2 * variance))
    prior = 2 * np.exp(-(theta**2) / (2 * tau**2)) / (tau * math.sqrt(2 * math.pi))
    integral = float(np.sum(ratio * prior) * (theta[1] - theta[0]))

    assert evidence(n, total, squares, horizon) == pytest.approx(integral, rel=1e-3)


def test_the_evidence_keeps_its_promise_under_continuous_monitoring() -> None:
    """Ville: a candidate exactly as good crosses 1/a with probability at most a, looking at
    every bar; a clearly worse one crosses it almost always."""
    rng = np.random.default_rng(11)
    runs, bars, horizon, crossing = 400, 500, 60, 10.0  # a = 0.1

    def crossed(x: np.ndarray) -> bool:
        sums, squares = np.cumsum(x), np.cumsum(x * x)
        return any(
            evidence(n, float(sums[n - 1]), float(squares[n - 1]), horizon) >= crossing
            for n in range(1, bars + 1)
        )

    null = sum(crossed(rng.standard_normal(bars)) for _ in range(runs)) / runs
    worse = sum(crossed(rng.standard_normal(bars) - 0.3) for _ in range(runs)) / runs

    assert null <= 0.1
    assert worse >= 0.95


# -- the soft rules -----------------------------------------------------------------------------

SOFT = set(METRICS)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32))
def test_an_inverted_candidate_fails_on_a_soft_rule_within_a_few_hundred_bars(seed: int) -> None:
    incumbent = profitable(random.Random(seed), 300, sharpe=0.5)
    bars = paired([-r for r in incumbent], incumbent)

    verdict = run(Judge(JudgeRules(horizon_bars=60, **NO_LIMITS)), bars)

    assert verdict is not None
    assert verdict.rule in SOFT
    assert verdict.bars <= 300
    assert "worse than the incumbent's (evidence" in verdict.reason


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from((60, 720, 3600)))
def test_a_candidate_3_percent_worse_is_not_rolled_back_one_30_percent_worse_is(
    seed: int, horizon: int
) -> None:
    """The same positions at 97% (70%) of the size: 3% (30%) worse on return on every bar."""
    incumbent = profitable(random.Random(seed), 1500)
    rules = JudgeRules(horizon_bars=horizon, **NO_LIMITS)

    slightly = Judge(rules)
    assert run(slightly, paired([0.97 * r for r in incumbent], incumbent)) is None
    assert slightly.figures["return_evidence"] >= rules.threshold  # significant, yet tolerated
    assert slightly.conclude().outcome is Outcome.PASS

    verdict = run(Judge(rules), paired([0.7 * r for r in incumbent], incumbent))
    assert verdict is not None
    assert verdict.rule == "return"
    assert "return 30% worse" in verdict.reason


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.integers(300, 500))
def test_no_soft_fail_before_min_trades(seed: int, min_trades: int, quiet: int) -> None:
    """An inverted candidate with no closed trade for `quiet` bars, then one a bar."""
    incumbent = profitable(random.Random(seed), quiet + min_trades + 5, sharpe=0.5)
    candidate = [-r for r in incumbent]
    bars = [
        PairedBar(c, i, cycling(t), cycling(t + 1), True, t >= quiet)
        for t, (c, i) in enumerate(zip(candidate, incumbent, strict=True))
    ]

    verdict = run(Judge(JudgeRules(min_trades=min_trades, **NO_LIMITS)), bars)

    assert verdict is not None
    assert verdict.rule in SOFT
    assert verdict.bars == quiet + min_trades  # the bar its min_trades-th trade closed
    assert verdict.figures["candidate_trades"] == min_trades
    # Without the minimum the same bars fail well before any trade closed.
    early = run(Judge(JudgeRules(min_trades=0, **NO_LIMITS)), bars)
    assert early is not None
    assert early.bars < quiet


def test_a_worse_candidate_that_is_not_significant_is_inconclusive() -> None:
    """Half the incumbent's return on every bar, but over only 30 bars: too few to tell."""
    incumbent = profitable(random.Random(3), 30)
    assert sum(incumbent) > 0
    judge = Judge(JudgeRules(**NO_LIMITS))

    assert run(judge, paired([0.5 * r for r in incumbent], incumbent, trade_every=1)) is None
    verdict = judge.conclude()

    assert (verdict.outcome, verdict.rule) == (Outcome.INCONCLUSIVE, "window")
    assert verdict.reason.startswith("return 50% worse than the incumbent's, but not significantly")
    # The same bars, judged long enough, fail.
    longer = profitable(random.Random(3), 600)
    assert run(Judge(JudgeRules(**NO_LIMITS)), paired([0.5 * r for r in longer], longer))


# -- state and figures --------------------------------------------------------------------------

mixed_bar = st.builds(
    PairedBar,
    candidate=st.one_of(
        st.floats(-0.003, 0.003, allow_nan=False), st.floats(-0.03, 0.03, allow_nan=False)
    ),
    incumbent=st.one_of(
        st.floats(-0.003, 0.003, allow_nan=False), st.just(math.nan), st.just(math.inf)
    ),
    candidate_action=actions,
    incumbent_action=actions,
    candidate_valid=st.just(True),
    candidate_closed_trade=st.booleans(),
)


def verdicts(judge: Judge, bars: Sequence[PairedBar]) -> list[dict[str, object] | None]:
    return [None if (v := judge.observe(b)) is None else v.to_json() for b in bars]


@settings(max_examples=200, deadline=None)
@given(st.lists(mixed_bar, max_size=200), st.integers(0, 200), st.integers(0, 12))
def test_a_judge_restored_from_json_gives_the_same_verdicts(
    bars: list[PairedBar], cut: int, min_trades: int
) -> None:
    rules = JudgeRules(min_trades=min_trades, stuck_bars=5, horizon_bars=30)
    cut = min(cut, len(bars))
    whole = Judge(rules)
    expected = verdicts(whole, bars)

    first = Judge(rules)
    got = verdicts(first, bars[:cut])
    text = json.dumps(first.to_json(), allow_nan=False)
    restored = Judge.from_json(rules, json.loads(text))
    assert restored.figures == first.figures
    got += verdicts(restored, bars[cut:])

    assert got == expected
    assert restored.conclude().to_json() == whole.conclude().to_json()
    assert restored.figures == whole.figures


def test_the_state_does_not_grow_with_the_bars() -> None:
    rng = random.Random(1)
    judge = Judge(JudgeRules(**NO_LIMITS))
    sizes = []
    for t in range(20_000):
        r = rng.gauss(0, 1e-3)
        judge.observe(PairedBar(r, -r, cycling(t), cycling(t)))
        if t in (10, 19_999):
            sizes.append(len(json.dumps(judge.to_json())))
    assert sizes[1] < sizes[0] + 64  # a few more digits, nothing per bar


def test_a_state_that_is_not_one_is_refused() -> None:
    state = Judge(JudgeRules()).to_json()
    for broken in (
        {**state, "version": 99},
        {k: v for k, v in state.items() if k != "sums"},
        {**state, "sums": [0.0, 0.0]},
        {**state, "bars": -1},
        {**state, "equity": "1.0"},
        {**state, "verdict": {"outcome": "maybe"}},
    ):
        with pytest.raises(ValueError, match=r"not|version"):
            Judge.from_json(JudgeRules(), broken)


extreme = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(extreme, st.floats(-0.9, 1.0)),
            st.one_of(extreme, st.floats(-0.9, 1.0)),
            actions,
            actions,
            st.booleans(),
        ),
        max_size=60,
    ),
    st.integers(0, 5),
)
def test_figures_are_json_and_finite(bars: list[tuple], min_trades: int) -> None:
    judge = Judge(JudgeRules(min_trades=min_trades, **NO_LIMITS))
    for candidate, incumbent, a, b, closed in [(0.0, 0.0, "hold", "hold", False), *bars]:
        verdict = judge.observe(PairedBar(candidate, incumbent, a, b, True, closed))
        for figures in (judge.figures, judge.conclude().figures):
            json.dumps(figures, allow_nan=False)
            for name, value in figures.items():
                assert value is None or isinstance(value, int | float), name
                assert value is None or math.isfinite(value), name
        if verdict is not None:
            json.dumps(verdict.to_json(), allow_nan=False)
            break
    assert isinstance(judge.figures["bars"], int)


def test_figures_name_every_metric() -> None:
    judge = Judge(JudgeRules())
    assert judge.figures["return_evidence"] is None  # nothing seen yet
    judge.observe(PairedBar(0.001, 0.002, "buy", "buy"))
    figures = judge.figures
    for metric in METRICS:
        for figure in ("mean_difference", "evidence", "degradation"):
            assert f"{metric}_{figure}" in figures
    assert figures["return_mean_difference"] == pytest.approx(-0.001)
    assert figures["return_degradation"] == pytest.approx(0.5)
    assert figures["candidate_net_return"] == pytest.approx(0.001)
    assert figures["evidence_threshold"] == pytest.approx(60.0)


def test_rules_from_the_lifecycle_settings() -> None:
    lifecycle = LifecycleSettings(degradation=0.2, alpha=0.1, min_trades=4, stuck_minutes=0)

    rules = JudgeRules.of(lifecycle, minutes=60, bar_seconds=5)

    assert rules == JudgeRules(0.2, 0.1, 4, 0.02, 0.03, 0, 720)
    assert rules.threshold == pytest.approx(30.0)


def test_the_stuck_guardrail_and_the_window_are_minutes_turned_into_bars() -> None:
    lifecycle = LifecycleSettings(stuck_minutes=30)

    assert JudgeRules.of(lifecycle, minutes=60, bar_seconds=60).stuck_bars == 30
    assert JudgeRules.of(lifecycle, minutes=60, bar_seconds=1).stuck_bars == 1800
    assert JudgeRules.of(lifecycle, minutes=60, bar_seconds=1).horizon_bars == 3600
    assert JudgeRules.of(lifecycle, minutes=0.01, bar_seconds=3600).horizon_bars == 1


def test_the_judge_is_pure() -> None:
    """Beyond the `app` package itself, the judge loads the standard library only: no I/O edge,
    no model runtime, no settings machinery (the controller owns all of those)."""
    probe = (
        "import sys, app; before = set(sys.modules); import app.lifecycle.judge; "
        "print(sorted(set(sys.modules) - before - set(sys.stdlib_module_names)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "['app.lifecycle', 'app.lifecycle.judge']"


def test_a_candidate_flat_more_often_with_the_same_skill_is_not_failed_on_win_rate() -> None:
    """Counting flat bars as lost ones would judge exposure, not skill: a candidate in the
    market half the time (no edge, as the incumbent) was failed on win rate in every run."""
    rng = random.Random(7)
    rules = JudgeRules(min_trades=10, horizon_bars=720, stuck_bars=0, loss_limit=1, max_drawdown=1)
    failed_on_win_rate = 0
    for _ in range(40):
        judge = Judge(rules)
        candidate_position = incumbent_position = 0
        for t in range(720):
            move = rng.gauss(0.0, 0.0008 / 12**0.5)
            next_candidate = 1 if (t // 10) % 2 == 0 else 0  # in 10 bars, out 10 bars
            verdict = judge.observe(
                PairedBar(
                    candidate_position * move,
                    incumbent_position * move,
                    "buy" if next_candidate else "hold",
                    "buy",
                    candidate_closed_trade=candidate_position != 0 and next_candidate == 0,
                    candidate_position=candidate_position,
                    incumbent_position=incumbent_position,
                )
            )
            candidate_position, incumbent_position = next_candidate, 1
            if verdict is not None:
                break
        final = judge.verdict or judge.conclude()
        failed_on_win_rate += final.rule == "win_rate"

    assert failed_on_win_rate == 0
