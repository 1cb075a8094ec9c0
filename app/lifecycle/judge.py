"""The canary judge: is the candidate worse than the incumbent it displaced? Pure (stdlib only).

The lifecycle controller feeds it one :class:`PairedBar` a bar: both models' net returns (after
costs, as DESIGN.md defines ``net_return``) over the same bar, and what each decided. The judge
keeps running sums (O(1) state whatever the number of bars) and says FAIL at the bar where the
candidate becomes one; at the end of the window :meth:`Judge.conclude` says PASS or INCONCLUSIVE.

Guardrails, checked first on every bar; any breach FAILs at once, whatever the sample size:

- ``non_finite``: the candidate's output was not a distribution (``candidate_valid`` is False:
  the brain turned it into a hold), or its net return is not a finite number.
- ``loss_limit``: the candidate's net return since the judge started, the sum of its per-bar
  net returns, is at or below ``-loss_limit``.
- ``max_drawdown``: the drawdown of its compounded equity ``prod(1 + r)`` from the running peak
  (the start counts as a peak) reaches ``max_drawdown``.
- ``stuck`` (``stuck_bars`` > 0): its last ``stuck_bars`` actions are all the same while the
  incumbent's over those same bars took at least two distinct values.

The soft judgement (the seed's "win rate, drawdown or Sharpe degrade by more than 15%") is on
PAIRED per-bar series: both models on the same bars, so the market's noise largely cancels in
the difference. Per bar, with ``c``/``i`` the candidate's and incumbent's net returns:

- ``return`` (what the Sharpe ranks on): ``x = c - i``;
- ``win_rate`` (per bar in the market): ``x = w(c) - w(i)``, ``w(r) = 1 if r > 0 else 0``,
  on the bars on which both models hold a position (a model that is flat more often wins on
  fewer bars with the same skill: counting flat bars would judge its exposure, not its skill);
- ``downside`` (the per-bar loss that drives drawdown): ``x = l(i) - l(c)``,
  ``l(r) = max(-r, 0)``.

``x > 0`` is the candidate doing better. The estimated degradation of a metric is
``-mean(x) / |mean(incumbent's metric)|``: for ``return`` ``-mean(c - i) / |mean(i)|``, for
``win_rate`` ``-mean(x) / mean(w(i))``, for ``downside`` ``mean(l(c)) / mean(l(i)) - 1``. When
the incumbent's mean is 0, any negative ``mean(x)`` counts as infinitely degraded (shown as
``None`` in :attr:`Judge.figures`).

The test, per metric: H0 "the candidate is no worse", ``E[x] >= 0``, against ``E[x] < 0``, by
Robbins' normal-mixture sequential probability ratio (the mSPRT of Johari et al. 2017, "Always
valid inference"; the confidence sequences of Howard et al. 2021). With the mixing variance
``tau^2 = sigma^2 / h`` (``h = horizon_bars``, where the test is tightest), ``rho = n / h`` and
``z = mean(x) * sqrt(n) / sigma``, the two-sided mixture is
``L_n = sqrt(1 / (1 + rho)) * exp(z^2 * rho / (2 * (1 + rho)))``. This judge mixes over the
worse side only (a half-normal mixture over ``E[x] < 0``), which has the closed form

    evidence_n = 2 * Phi(-z * sqrt(rho / (1 + rho))) * L_n      (Phi: the standard normal CDF)

Why one-sided: for increments that are normal (or sub-Gaussian) with variance ``sigma^2``,
each component of that mixture, ``exp(theta * S_n / sigma^2 - n * theta^2 / (2 * sigma^2))``
with ``theta < 0`` (``S_n = sum(x)``), is a supermartingale whenever every bar's conditional
mean of ``x`` given the past is ``>= 0``: under the whole composite H0, not only at
``E[x] = 0``. So the evidence is a nonnegative supermartingale starting at 1, and by Ville's
inequality ``P(sup_n evidence_n >= 1/a) <= a`` however often the judge looks. It is about twice
``L_n`` when the candidate is clearly worse (``L_n`` checked only while ``mean(x) < 0`` is valid
too, as ``L_n <= evidence_n`` there, but it spends half the budget on the side that cannot
fail), and it falls below 1 when the candidate is better. The budget ``alpha`` is split over the
three metrics by Bonferroni: each FAILs at ``evidence >= 3 / alpha``.

``sigma^2`` is not known. It is replaced by ``mean(x^2)``, the variance at H0's boundary
``E[x] = 0`` (its maximum-likelihood estimate there), rather than the sample variance: then
``z = sum(x) / sqrt(sum(x^2))``, so ``|z| <= sqrt(n)`` and a few near-equal bars cannot make
overwhelming evidence (with the sample variance, two equal values give ``s = 0``), and a
candidate that is worse by the same amount on every bar is still caught. Under ``E[x] < 0`` it
overstates ``sigma^2`` by about ``mean(x)^2``, which costs power only when the per-bar
difference is large against its noise. ``sigma == 0`` (identical series) is no evidence (1).

A metric FAILs when all hold: ``candidate_trades >= min_trades`` (closed trades); ``mean(x) < 0``;
``evidence >= 3 / alpha``; the estimated degradation ``> degradation``. Significant AND beyond
the 15% tolerance: a candidate 3% worse is not rolled back, however long it runs. At the end:
the FAIL if it failed; INCONCLUSIVE (``min_trades``) with too few closed trades; PASS
(``window``) if no metric's estimated degradation exceeds ``degradation``; else INCONCLUSIVE
(``window``: worse beyond the tolerance, but not significantly).

Honest limits. The plug-in variance makes the guarantee asymptotic (a normal approximation of
the paired differences): with heavy tails or very few non-zero differences it can be off, which
``benchmarks/canary_judge.py`` measures on Student-t markets, and ``min_trades`` keeps the judge
out of the smallest samples. Positions that persist over bars are allowed: the argument needs
each bar's conditional mean given the past, not independent bars. The guarantee is for a
candidate no worse than the incumbent: one 5-15% worse can be rolled back when its estimated
degradation happens to exceed 15% at a significant bar. The win rate is per bar in the market
(a paired per-trade series does not exist: the two models' trades do not align), and drawdown
is judged
by its guardrail plus the per-bar downside: a candidate in the market more often than the
incumbent has more downside, even with a better return.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.settings import LifecycleSettings

METRICS = ("return", "win_rate", "downside")
_LABELS = {
    "return": "return",
    "win_rate": "win rate per bar in the market",
    "downside": "downside per bar",
}
_STATE_VERSION = 2  # 2: per-metric counts (the win rate counts bars both are in the market)
_MAX_LOG_EVIDENCE = 690.0  # exp(690) ~ 1e299: evidence stays a finite float
_SQRT2 = math.sqrt(2.0)


class Outcome(StrEnum):
    PENDING = "pending"
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class JudgeRules:
    """What the judge holds a candidate to (``lifecycle`` settings, plus the window in bars)."""

    degradation: float = 0.15
    alpha: float = 0.05
    min_trades: int = 10
    loss_limit: float = 0.02
    max_drawdown: float = 0.03
    stuck_bars: int = 30  # 0: the stuck guardrail is off
    horizon_bars: int = 60  # where the sequential test is tightest: the window's length in bars

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha {self.alpha} is not in (0, 1)")
        if not self.degradation >= 0:
            raise ValueError(f"degradation {self.degradation} is negative")
        if not (self.loss_limit > 0 and self.max_drawdown > 0):
            raise ValueError("loss_limit and max_drawdown must be positive")
        if self.min_trades < 0 or self.stuck_bars < 0:
            raise ValueError("min_trades and stuck_bars must not be negative")
        if self.horizon_bars < 1:
            raise ValueError(f"horizon_bars {self.horizon_bars} is under 1")

    @classmethod
    def of(cls, settings: LifecycleSettings, *, minutes: float, bar_seconds: float) -> JudgeRules:
        """The rules for a window of `minutes` of market time on bars `bar_seconds` apart: the
        settings' minutes (the window, ``stuck_minutes``) turned into bars."""

        def bars(span_minutes: float) -> int:
            return round(span_minutes * 60 / bar_seconds)

        return cls(
            degradation=settings.degradation,
            alpha=settings.alpha,
            min_trades=settings.min_trades,
            loss_limit=settings.loss_limit,
            max_drawdown=settings.max_drawdown,
            stuck_bars=max(1, bars(settings.stuck_minutes)) if settings.stuck_minutes else 0,
            horizon_bars=max(1, bars(minutes)),
        )

    def spending(self, alpha: float) -> JudgeRules:
        """These rules with another false-rollback budget."""
        return dataclasses.replace(self, alpha=alpha)

    @property
    def threshold(self) -> float:
        """The evidence at which one metric FAILs: 1 / (alpha / 3)."""
        return 3.0 / self.alpha


@dataclass(frozen=True, slots=True)
class PairedBar:
    """One bar, both models: net returns (after costs) of the positions they held over it."""

    candidate: float
    incumbent: float
    candidate_action: str  # sell | hold | buy: what the candidate decided on this bar
    incumbent_action: str
    candidate_valid: bool = True  # False: its output was not a distribution (made a hold)
    candidate_closed_trade: bool = False  # a trade of the candidate closed on this bar
    # The positions that earned this bar's returns (-1, 0, +1); None: not known (taken as in
    # the market). The win rate compares only bars on which both are in the market.
    candidate_position: int | None = None
    incumbent_position: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    rule: str  # loss_limit | max_drawdown | non_finite | stuck | return | win_rate | downside
    # | window (passed or inconclusive at the end) | min_trades (inconclusive: too few trades)
    reason: str  # one line, with the figures
    bars: int  # bars observed when decided
    figures: Mapping[str, float | int | None]  # Judge.figures at that moment (JSON-able)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "rule": self.rule,
            "reason": self.reason,
            "bars": self.bars,
            "figures": dict(self.figures),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        try:
            return cls(
                outcome=Outcome(data["outcome"]),
                rule=str(data["rule"]),
                reason=str(data["reason"]),
                bars=int(data["bars"]),
                figures=dict(data["figures"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a verdict: {error}") from error


def evidence(n: int, total: float, squares: float, horizon: float) -> float:
    """One-sided normal-mixture evidence that ``E[x] < 0`` after `n` values (module docstring).

    `total` is ``sum(x)``, `squares` ``sum(x^2)``. 1 when there is nothing to go on.
    """
    if n <= 0 or not squares > 0:
        return 1.0
    z = total / math.sqrt(squares)
    rho = n / horizon
    share = rho / (1.0 + rho)
    tail = 0.5 * math.erfc(z * math.sqrt(share) / _SQRT2)  # Phi(-z * sqrt(rho / (1 + rho)))
    if tail <= 0.0:
        return 0.0
    log_evidence = math.log(2.0 * tail) - 0.5 * math.log1p(rho) + 0.5 * z * z * share
    return math.exp(min(log_evidence, _MAX_LOG_EVIDENCE))


def degradation(total: float, base: float) -> float:
    """``-mean(x) / |mean(incumbent's metric)|`` from the sums; inf when the base is 0."""
    if base != 0.0:
        return -total / abs(base) + 0.0  # + 0.0: never -0.0
    return math.inf if total < 0.0 else 0.0


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _evidence_text(value: float) -> str:
    return f"{value:.3g}"


class Judge:
    """The sequential, paired judge of one canary (or shadow) window; see the module docstring."""

    __slots__ = (
        "_agreed",
        "_bars",
        "_bases",
        "_candidate_action",
        "_candidate_net",
        "_counts",
        "_equity",
        "_incumbent_action",
        "_incumbent_changed",
        "_incumbent_equity",
        "_incumbent_max_drawdown",
        "_incumbent_peak",
        "_max_drawdown",
        "_paired",
        "_peak",
        "_rules",
        "_run",
        "_squares",
        "_sums",
        "_trades",
        "_verdict",
    )

    def __init__(self, rules: JudgeRules) -> None:
        self._rules = rules
        self._bars = 0  # bars observed
        self._paired = 0  # bars with both returns finite: the paired series' length
        self._trades = 0  # the candidate's closed trades
        self._agreed = 0  # bars where both decided the same
        self._candidate_net = 0.0
        self._equity = 1.0
        self._peak = 1.0
        self._max_drawdown = 0.0
        self._incumbent_equity = 1.0
        self._incumbent_peak = 1.0
        self._incumbent_max_drawdown = 0.0
        # Per metric (METRICS order): the bars counted, sum(x), sum(x^2), and the incumbent's
        # own sum (the base). The win rate counts only bars on which both are in the market.
        self._counts = [0, 0, 0]
        self._sums = [0.0, 0.0, 0.0]
        self._squares = [0.0, 0.0, 0.0]
        self._bases = [0.0, 0.0, 0.0]
        # The stuck guardrail, in O(1): the candidate's current run of one action, and the bar
        # (1-based) at which the incumbent's action last differed from the bar before.
        self._candidate_action: str | None = None
        self._run = 0
        self._incumbent_action: str | None = None
        self._incumbent_changed = 0
        self._verdict: Verdict | None = None

    @property
    def rules(self) -> JudgeRules:
        return self._rules

    @property
    def verdict(self) -> Verdict | None:
        """The FAIL verdict once there is one; None while pending."""
        return self._verdict

    def observe(self, bar: PairedBar) -> Verdict | None:
        """One more paired bar: the FAIL verdict if the candidate has become one, else None."""
        if self._verdict is not None:
            return self._verdict
        self._bars += 1
        candidate, incumbent = bar.candidate, bar.incumbent
        candidate_finite = math.isfinite(candidate)
        incumbent_finite = math.isfinite(incumbent)
        if candidate_finite:
            self._candidate_net += candidate
            self._equity *= 1.0 + candidate
            self._peak = max(self._peak, self._equity)
            drawdown = 1.0 - self._equity / self._peak
            self._max_drawdown = max(self._max_drawdown, drawdown)
        if incumbent_finite:
            self._incumbent_equity *= 1.0 + incumbent
            self._incumbent_peak = max(self._incumbent_peak, self._incumbent_equity)
            drawdown = 1.0 - self._incumbent_equity / self._incumbent_peak
            self._incumbent_max_drawdown = max(self._incumbent_max_drawdown, drawdown)
        if candidate_finite and incumbent_finite:
            in_market = bar.candidate_position != 0 and bar.incumbent_position != 0
            self._pair(candidate, incumbent, in_market=in_market)
        if bar.candidate_closed_trade:
            self._trades += 1
        self._actions(bar.candidate_action, bar.incumbent_action)
        failed = self._guardrails(bar, candidate_finite) or self._soft()
        if failed is not None:
            rule, reason = failed
            self._verdict = Verdict(Outcome.FAIL, rule, reason, self._bars, self.figures)
        return self._verdict

    def _pair(self, candidate: float, incumbent: float, *, in_market: bool) -> None:
        self._paired += 1
        counts, sums, squares, bases = self._counts, self._sums, self._squares, self._bases
        x = candidate - incumbent
        counts[0] += 1
        sums[0] += x
        squares[0] += x * x
        bases[0] += incumbent
        if in_market:  # a flat bar is no loss of skill: a model out of the market wins nothing
            counts[1] += 1
            won_c, won_i = candidate > 0.0, incumbent > 0.0
            if won_c != won_i:
                x = 1.0 if won_c else -1.0
                sums[1] += x
                squares[1] += 1.0
            if won_i:
                bases[1] += 1.0
        counts[2] += 1
        lost_c, lost_i = max(-candidate, 0.0), max(-incumbent, 0.0)
        x = lost_i - lost_c
        sums[2] += x
        squares[2] += x * x
        bases[2] += lost_i

    def _actions(self, candidate: str, incumbent: str) -> None:
        if candidate == self._candidate_action:
            self._run += 1
        else:
            self._candidate_action, self._run = candidate, 1
        if self._incumbent_action is not None and incumbent != self._incumbent_action:
            self._incumbent_changed = self._bars
        self._incumbent_action = incumbent
        if candidate == incumbent:
            self._agreed += 1

    def _guardrails(self, bar: PairedBar, finite: bool) -> tuple[str, str] | None:
        rules = self._rules
        if not bar.candidate_valid:
            return "non_finite", "the candidate's output was not a distribution (made a hold)"
        if not finite:
            return "non_finite", f"the candidate's net return {bar.candidate!r} is not finite"
        if self._candidate_net <= -rules.loss_limit:
            return "loss_limit", (
                f"net return {self._candidate_net:+.2%} reached the loss limit "
                f"{-rules.loss_limit:+.2%}"
            )
        if self._max_drawdown >= rules.max_drawdown:
            return "max_drawdown", (
                f"drawdown {self._max_drawdown:.2%} reached the limit {rules.max_drawdown:.2%}"
            )
        stuck = rules.stuck_bars
        # The incumbent took two values over the last `stuck` bars iff it changed at one of
        # the bars after the first of them.
        if stuck and self._run >= stuck and self._incumbent_changed >= self._bars - stuck + 2:
            return "stuck", (
                f"the candidate decided {self._candidate_action} on each of the last {stuck} "
                "bars while the incumbent changed its decision"
            )
        return None

    def _soft(self) -> tuple[str, str] | None:
        rules = self._rules
        if self._trades < rules.min_trades:
            return None
        for index, metric in enumerate(METRICS):
            total = self._sums[index]
            if not total < 0.0:
                continue
            degraded = degradation(total, self._bases[index])
            if not degraded > rules.degradation:
                continue
            seen = evidence(self._counts[index], total, self._squares[index], rules.horizon_bars)
            if seen >= rules.threshold:
                return metric, (
                    f"{_LABELS[metric]} {self._worse(degraded)} than the incumbent's "
                    f"(evidence {_evidence_text(seen)} >= {_evidence_text(rules.threshold)})"
                )
        return None

    @staticmethod
    def _worse(degraded: float) -> str:
        if math.isinf(degraded):
            return "worse (the incumbent's is 0)"
        return f"{degraded:.0%} worse"

    def conclude(self) -> Verdict:
        """The window has ended: the FAIL if it failed, else PASS or INCONCLUSIVE."""
        if self._verdict is not None:
            return self._verdict
        rules = self._rules
        figures = self.figures
        if self._trades < rules.min_trades:
            return Verdict(
                Outcome.INCONCLUSIVE,
                "min_trades",
                f"{self._trades} closed trades of the {rules.min_trades} needed to judge, "
                f"over {self._bars} bars",
                self._bars,
                figures,
            )
        worst: tuple[float, str] | None = None
        for index, metric in enumerate(METRICS):
            degraded = degradation(self._sums[index], self._bases[index])
            if degraded > rules.degradation and (worst is None or degraded > worst[0]):
                worst = (degraded, metric)
        if worst is None:
            shown = ", ".join(
                f"{_LABELS[m]} {degradation(self._sums[i], self._bases[i]):+.0%}"
                for i, m in enumerate(METRICS)
            )
            return Verdict(
                Outcome.PASS,
                "window",
                f"no metric more than {rules.degradation:.0%} worse than the incumbent's over "
                f"{self._bars} bars (degradation: {shown})",
                self._bars,
                figures,
            )
        degraded, metric = worst
        seen = figures[f"{metric}_evidence"]
        return Verdict(
            Outcome.INCONCLUSIVE,
            "window",
            f"{_LABELS[metric]} {self._worse(degraded)} than the incumbent's, but not "
            f"significantly (evidence {_evidence_text(float(seen or 0))} < "
            f"{_evidence_text(rules.threshold)}) over {self._bars} bars",
            self._bars,
            figures,
        )

    @property
    def figures(self) -> dict[str, float | int | None]:
        """The paired metrics so far, JSON-able: finite floats, ints, or None (no figure)."""
        n = self._paired
        rules = self._rules
        figures: dict[str, float | int | None] = {
            "bars": self._bars,
            "paired_bars": n,
            "candidate_trades": self._trades,
            "agreement": self._agreed / self._bars if self._bars else None,
            "candidate_net_return": _finite(self._candidate_net),
            "incumbent_net_return": _finite(self._bases[0]),
            "candidate_drawdown": _finite(1.0 - self._equity / self._peak),
            "candidate_max_drawdown": _finite(self._max_drawdown),
            "incumbent_max_drawdown": _finite(self._incumbent_max_drawdown),
            "evidence_threshold": rules.threshold,
        }
        for index, metric in enumerate(METRICS):
            total, counted = self._sums[index], self._counts[index]
            figures[f"{metric}_mean_difference"] = _finite(total / counted) if counted else None
            figures[f"{metric}_evidence"] = (
                _finite(evidence(counted, total, self._squares[index], rules.horizon_bars))
                if counted
                else None
            )
            figures[f"{metric}_degradation"] = (
                _finite(degradation(total, self._bases[index])) if counted else None
            )
        return figures

    def to_json(self) -> dict[str, Any]:
        """The whole state, JSON-able (a restarted host resumes with :meth:`from_json`)."""
        return {
            "version": _STATE_VERSION,
            "bars": self._bars,
            "paired_bars": self._paired,
            "trades": self._trades,
            "agreed": self._agreed,
            "candidate_net": self._candidate_net,
            "equity": self._equity,
            "peak": self._peak,
            "max_drawdown": self._max_drawdown,
            "incumbent_equity": self._incumbent_equity,
            "incumbent_peak": self._incumbent_peak,
            "incumbent_max_drawdown": self._incumbent_max_drawdown,
            "counts": list(self._counts),
            "sums": list(self._sums),
            "squares": list(self._squares),
            "bases": list(self._bases),
            "candidate_action": self._candidate_action,
            "run": self._run,
            "incumbent_action": self._incumbent_action,
            "incumbent_changed": self._incumbent_changed,
            "verdict": None if self._verdict is None else self._verdict.to_json(),
        }

    @classmethod
    def from_json(cls, rules: JudgeRules, data: Mapping[str, Any]) -> Judge:
        """A judge in the state `data` (from :meth:`to_json`), held to `rules`."""
        judge = cls(rules)
        try:
            if data["version"] != _STATE_VERSION:
                raise ValueError(f"state version {data['version']!r} is not {_STATE_VERSION}")
            judge._bars = _count(data["bars"])
            judge._paired = _count(data["paired_bars"])
            judge._trades = _count(data["trades"])
            judge._agreed = _count(data["agreed"])
            judge._candidate_net = _number(data["candidate_net"])
            judge._equity = _number(data["equity"])
            judge._peak = _number(data["peak"])
            judge._max_drawdown = _number(data["max_drawdown"])
            judge._incumbent_equity = _number(data["incumbent_equity"])
            judge._incumbent_peak = _number(data["incumbent_peak"])
            judge._incumbent_max_drawdown = _number(data["incumbent_max_drawdown"])
            judge._counts = [_count(count) for count in _triple_of(data["counts"])]
            judge._sums = _triple(data["sums"])
            judge._squares = _triple(data["squares"])
            judge._bases = _triple(data["bases"])
            judge._candidate_action = _action(data["candidate_action"])
            judge._run = _count(data["run"])
            judge._incumbent_action = _action(data["incumbent_action"])
            judge._incumbent_changed = _count(data["incumbent_changed"])
            verdict = data["verdict"]
            judge._verdict = None if verdict is None else Verdict.from_json(verdict)
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a judge's state: {error!r}") from error
        return judge


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")  # noqa: TRY004 - one error for bad state
    return float(value)


def _triple_of(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) != len(METRICS):
        raise ValueError(f"{value!r} is not {len(METRICS)} values")
    return value


def _triple(value: Any) -> list[float]:
    return [_number(item) for item in _triple_of(value)]


def _action(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{value!r} is not an action")
    return value
