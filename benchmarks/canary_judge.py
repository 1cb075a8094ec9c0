"""The canary judge against the naive rule, on synthetic paired series: false rollbacks, power,
and the guardrails.

    python benchmarks/canary_judge.py [--runs 2000] [--seed 1]

Seeded Monte Carlo. Each run is one canary window of paired bars (the candidate trading, the
incumbent deciding beside it on the same bars); the judge (`app.lifecycle.judge`) looks at every
bar, and so, in the same run, does the naive rule: "roll back as soon as the candidate's win rate,
max drawdown or Sharpe is 15% worse than the incumbent's", from the candidate's 10th closed trade
on, with DESIGN.md's definitions (win rate over closed trades, max drawdown of the compounded
equity, Sharpe = mean / standard deviation of per-bar net returns).

The generator (the same per-bar process at every bar spacing, except the market's volatility):

- the market: a hidden trend signal ``s`` (+1 or -1, runs of 20 bars on average) worth
  ``m * sigma`` a bar, plus Student-t noise with 3 degrees of freedom scaled to ``sigma``: 8 bps
  a minute (``app/trading/synthetic.py``'s base volatility), scaled to the bar by the square
  root of its length, so that an hour moves as much at any spacing;
- the incumbent: in the market 70% of the bars (runs of 15 in, 6 out), on the right side of
  ``s`` 75% of those (wrong for runs of 5 bars); ``m`` is set so that its per-bar net Sharpe is
  0.03 at every spacing (the same edge per decision, which is what lets faster bars help at
  all; at minute bars about 22 annualised: the default model makes 0.033 a bar on the synthetic
  market, which is built to have an edge, and real strategies make well under 0.01);
- the candidate: holds the incumbent's position on 70% of the bars (runs of 14 shared, 6 on its
  own); on its own bars it is in the market as often, with its own view of ``s``, whose accuracy
  is set so that its mean per-bar net return is 100%, 85% or 70% of the incumbent's; for
  contrast, one that takes the opposite of every incumbent position;
- costs: 1 bp per unit change of position; trades: runs of one non-zero position.

``m`` and the candidate's accuracy are solved for on the runs' own paths with the noise
integrated out, so each scenario holds on the bars judged (the ``net c/i`` column). Windows: 60
bars (the default 60-minute canary of 1-minute bars), 720 (5-second bars) and 3600 (1-second
bars), judged with the shipped settings turned into bars at the spacing (``JudgeRules.of``:
the window, and ``stuck_minutes`` 60 = 60, 720, 3600 bars; a row with the stuck guardrail at a
fixed 30 bars shows why it is set in minutes); longer windows have fewer runs
(N). The last column is computed, not measured: the paired return difference's mean over its
root mean square, which is what the judge's ``z`` gains per square root of a bar, and the bars
it would take to reach ``z = -4``. The guardrails: an as-good candidate over 60 bars with, at a
random bar, a loss past the loss limit, an output that is not a distribution, or (after a 2%
gain earlier) a fall of over 3% from the peak. Rates carry 95% Wilson intervals; the exit
status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import print_table  # noqa: E402 - beside this script

from app.lifecycle.judge import Judge, JudgeRules, Outcome, PairedBar, Verdict  # noqa: E402
from app.settings import LifecycleSettings  # noqa: E402
from app.trading.positions import trade_table  # noqa: E402

SIGMA = 0.0008  # the market's volatility over a minute: 8 bps
COST_BPS = 1.0
SHARPE = 0.03  # the incumbent's per-bar net Sharpe
SIGNAL_RUN = 20.0  # mean bars of one trend sign
IN_MARKET, OUT_OF_MARKET = 15.0, 6.0  # mean run lengths of being in and out of the market
WRONG_RUN = 5.0  # mean run of bars on the wrong side of the signal
INCUMBENT_RIGHT = 0.75
SHARED, OWN = 14.0, 6.0  # the candidate's runs of sharing the incumbent's position / its own
EDGES = (1.0, 0.85, 0.70)  # candidate mean net / incumbent mean net
# bars, bar spacing (s), runs divisor: 60 minutes of 1-minute, 5-second and 1-second bars
WINDOWS = ((60, 60, 1), (720, 5, 2), (3600, 1, 5))
TOLERANCE = 0.15
NAIVE_FROM_TRADES = 10
ACTIONS = ("sell", "hold", "buy")


# -- the generator ------------------------------------------------------------------------------


def runs(uniform: np.ndarray, first: float, mean_on: float, mean_off: float, n: int) -> np.ndarray:
    """A two-state chain as alternating geometric runs (means `mean_on`, `mean_off`), from the
    uniforms given (so a calibration can vary a mean on the same draws); True = on."""
    on = first < mean_on / (mean_on + mean_off)
    means = np.array([mean_on, mean_off] if on else [mean_off, mean_on])
    u = uniform.reshape(-1, 2)
    lengths = 1 + np.floor(np.log1p(-u) / np.log1p(-1.0 / np.maximum(means, 1.0 + 1e-12)))
    lengths = lengths.astype(np.int64).ravel()
    if lengths.sum() < n:
        raise ValueError("not enough uniforms for the chain")
    states = np.tile(np.array([on, not on]), len(u))
    return np.repeat(states, lengths)[:n]


def chain(rng: np.random.Generator, mean_on: float, mean_off: float, n: int) -> np.ndarray:
    pairs = int(3 * n / (mean_on + mean_off)) + 50
    return runs(rng.random(2 * pairs), rng.random(), mean_on, mean_off, n)


@dataclass(frozen=True, slots=True)
class Paths:
    """Everything but the candidate's own accuracy: shared by every scenario of a window."""

    signal: np.ndarray  # +1 / -1
    noise: np.ndarray  # unit-variance Student-t(3)
    incumbent: np.ndarray  # positions
    shared: np.ndarray  # bool: the candidate holds the incumbent's position
    active: np.ndarray  # bool: on its own bars, the candidate is in the market
    uniforms: np.ndarray  # the draws of the candidate's right/wrong chain
    first: float


def paths(rng: np.random.Generator, n: int) -> Paths:
    signal = np.where(chain(rng, SIGNAL_RUN, SIGNAL_RUN, n), 1, -1)
    noise = rng.standard_t(3, n) / math.sqrt(3.0)
    right = chain(rng, WRONG_RUN * INCUMBENT_RIGHT / (1 - INCUMBENT_RIGHT), WRONG_RUN, n)
    incumbent = chain(rng, IN_MARKET, OUT_OF_MARKET, n) * signal * np.where(right, 1, -1)
    pairs = int(3 * n / (1.0 + WRONG_RUN)) + 50
    return Paths(
        signal=signal,
        noise=noise,
        incumbent=incumbent.astype(np.int64),
        shared=chain(rng, SHARED, OWN, n),
        active=chain(rng, IN_MARKET, OUT_OF_MARKET, n),
        uniforms=rng.random(2 * pairs),
        first=float(rng.random()),
    )


def candidate_positions(p: Paths, right_share: float | None) -> np.ndarray:
    """The candidate: the incumbent's position on shared bars, its own view elsewhere (right a
    share `right_share` of the time); None: the opposite of every incumbent position."""
    if right_share is None:
        return -p.incumbent
    right_run = WRONG_RUN * right_share / (1 - right_share)
    right = runs(p.uniforms, p.first, right_run, WRONG_RUN, len(p.signal))
    own = p.active * p.signal * np.where(right, 1, -1)
    return np.where(p.shared, p.incumbent, own).astype(np.int64)


def costs(positions: np.ndarray) -> np.ndarray:
    before = np.concatenate(([0], positions[:-1]))
    return COST_BPS / 10000.0 * np.abs(positions - before)


def expected_net(
    positions: np.ndarray, signal: np.ndarray, drift: float, sigma: float
) -> np.ndarray:
    """Per-bar net return with the market's noise integrated out (its mean is 0)."""
    return positions * signal * drift * sigma - costs(positions)


def sharpe_of(positions: np.ndarray, signal: np.ndarray, drift: float, sigma: float) -> float:
    mean_part = expected_net(positions, signal, drift, sigma)
    variance = np.var(mean_part) + np.mean(positions**2) * sigma**2
    return float(np.mean(mean_part) / math.sqrt(variance))


def expected_z(
    candidate: np.ndarray, incumbent: np.ndarray, signal: np.ndarray, drift: float, sigma: float
) -> float:
    """The paired return difference's mean over its root mean square, a bar: what the judge's
    z grows by per square root of a bar (noise integrated out)."""
    mean_part = expected_net(candidate, signal, drift, sigma) - expected_net(
        incumbent, signal, drift, sigma
    )
    noise = (candidate - incumbent).astype(np.float64) ** 2 * sigma**2
    return float(np.mean(mean_part) / math.sqrt(np.mean(mean_part**2) + np.mean(noise)))


def bisect(f: Callable[[float], float], low: float, high: float, target: float) -> float:
    """x in [low, high] with f(x) = target, f increasing."""
    if not f(low) <= target <= f(high):
        raise ValueError(f"target {target} is out of reach in [{low}, {high}]")
    for _ in range(36):
        middle = (low + high) / 2
        low, high = (middle, high) if f(middle) < target else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True, slots=True)
class Calibration:
    drift: float  # m: the signal's worth, in units of sigma
    right: dict[float, float]  # edge -> the candidate's share of right bars on its own


def calibrate(p: Paths, sigma: float) -> Calibration:
    """The signal's worth for the incumbent's Sharpe, and the candidate's accuracy per edge, on
    the paths of the runs themselves, with the market's noise integrated out: the scenarios
    hold exactly on the bars judged (in expectation over the noise)."""
    drift = bisect(lambda m: sharpe_of(p.incumbent, p.signal, m, sigma), 0.0, 5.0, SHARPE)
    incumbent = float(np.mean(expected_net(p.incumbent, p.signal, drift, sigma)))

    def edge_of(right_share: float) -> float:
        positions = candidate_positions(p, right_share)
        return float(np.mean(expected_net(positions, p.signal, drift, sigma))) / incumbent

    right = {edge: bisect(edge_of, 0.2, 0.99, edge) for edge in EDGES}
    return Calibration(drift, right)


# -- the naive rule -----------------------------------------------------------------------------


def closed_trades(positions: np.ndarray, gross: np.ndarray, previous: int) -> tuple:
    """Per bar of the window: closed trades so far and the winners among them."""
    trades = trade_table(positions, gross, COST_BPS, previous=previous)
    closed = trades.closed
    ends = trades.end[closed]
    count = np.cumsum(np.bincount(ends, minlength=len(positions) + 1)[: len(positions)])
    won = ends[trades.net_return[closed] > 0]
    wins = np.cumsum(np.bincount(won, minlength=len(positions) + 1)[: len(positions)])
    return count, wins


def running_figures(net: np.ndarray, count: np.ndarray, wins: np.ndarray) -> tuple:
    """Win rate, max drawdown, Sharpe of every prefix of the window (DESIGN.md's figures)."""
    n = np.arange(1, len(net) + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(count > 0, wins / np.maximum(count, 1), np.nan)
        equity = np.cumprod(1.0 + net)
        peak = np.maximum.accumulate(np.maximum(equity, 1.0))
        drawdown = np.maximum.accumulate(1.0 - equity / peak)
        total, squares = np.cumsum(net), np.cumsum(net * net)
        variance = (squares - total * total / n) / np.maximum(n - 1, 1)
        spread = np.sqrt(np.maximum(variance, 0.0))
        sharpe = np.where((n >= 2) & (spread > 0), total / n / spread, 0.0)
    return win_rate, drawdown, sharpe


def naive_rollback(
    candidate: tuple[np.ndarray, np.ndarray, np.ndarray],
    incumbent: tuple[np.ndarray, np.ndarray, np.ndarray],
    trades: np.ndarray,
) -> int | None:
    """The first bar (1-based) at which any figure is 15% worse, from 10 closed trades on."""
    (win_c, dd_c, sharpe_c), (win_i, dd_i, sharpe_i) = candidate, incumbent
    with np.errstate(invalid="ignore"):
        worse = (
            (win_c < (1 - TOLERANCE) * win_i)
            | (dd_c > (1 + TOLERANCE) * dd_i)
            | (sharpe_c < sharpe_i - TOLERANCE * np.abs(sharpe_i))
        )
    hits = np.flatnonzero(worse & (trades >= NAIVE_FROM_TRADES))
    return int(hits[0]) + 1 if len(hits) else None


# -- one window of paired bars ------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """One run: both models' per-bar net returns and positions, and the candidate's closed
    trades, over `bars` consecutive bars of the paths."""

    net_c: np.ndarray
    net_i: np.ndarray
    pos_c: np.ndarray
    pos_i: np.ndarray
    trades_c: np.ndarray  # closed trades so far, per bar
    wins_c: np.ndarray
    trades_i: np.ndarray
    wins_i: np.ndarray

    def paired_bars(self, valid: list[bool] | None = None) -> list[PairedBar]:
        closed = np.diff(self.trades_c, prepend=0) > 0
        valid = valid or [True] * len(self.net_c)
        return [
            PairedBar(
                c,
                i,
                ACTIONS[a + 1],
                ACTIONS[b + 1],
                ok,
                shut,
                candidate_position=a,
                incumbent_position=b,
            )
            for c, i, a, b, ok, shut in zip(
                self.net_c.tolist(),
                self.net_i.tolist(),
                self.pos_c.tolist(),
                self.pos_i.tolist(),
                valid,
                closed.tolist(),
                strict=True,
            )
        ]


class Series:
    """Both models over the whole paths, cut into windows."""

    def __init__(self, p: Paths, market: np.ndarray, pos_c: np.ndarray) -> None:
        self.pos_c, self.pos_i = pos_c, p.incumbent
        self.gross_c, self.gross_i = pos_c * market, p.incumbent * market
        self.net_c = self.gross_c - costs(pos_c)
        self.net_i = self.gross_i - costs(p.incumbent)

    def window(self, run: int, bars: int) -> Window:
        cut = slice(run * bars, (run + 1) * bars)
        before = run * bars - 1
        trades_c, wins_c = closed_trades(
            self.pos_c[cut], self.gross_c[cut], int(self.pos_c[before]) if before >= 0 else 0
        )
        trades_i, wins_i = closed_trades(
            self.pos_i[cut], self.gross_i[cut], int(self.pos_i[before]) if before >= 0 else 0
        )
        return Window(
            self.net_c[cut].copy(),
            self.net_i[cut],
            self.pos_c[cut].copy(),
            self.pos_i[cut],
            trades_c,
            wins_c,
            trades_i,
            wins_i,
        )


def first_verdict(rules: JudgeRules, bars: list[PairedBar]) -> tuple[Judge, Verdict | None]:
    judge = Judge(rules)
    for bar in bars:
        verdict = judge.observe(bar)
        if verdict is not None:
            return judge, verdict
    return judge, None


# -- the scenarios ------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    runs: int = 0
    judge_bars: list[int] = field(default_factory=list)  # where the judge failed, per failure
    rules: dict[str, int] = field(default_factory=dict)
    passed: int = 0
    inconclusive: int = 0
    naive_bars: list[int] = field(default_factory=list)
    bars: int = 0
    agreed: int = 0


def scenario(series: Series, rules: JudgeRules, runs_n: int) -> Tally:
    tally = Tally()
    for run in range(runs_n):
        w = series.window(run, rules.horizon_bars)
        judge, verdict = first_verdict(rules, w.paired_bars())
        naive = naive_rollback(
            running_figures(w.net_c, w.trades_c, w.wins_c),
            running_figures(w.net_i, w.trades_i, w.wins_i),
            w.trades_c,
        )
        tally.runs += 1
        if verdict is not None:
            tally.judge_bars.append(verdict.bars)
            tally.rules[verdict.rule] = tally.rules.get(verdict.rule, 0) + 1
        else:
            outcome = judge.conclude().outcome
            tally.passed += outcome is Outcome.PASS
            tally.inconclusive += outcome is Outcome.INCONCLUSIVE
        if naive is not None:
            tally.naive_bars.append(naive)
        tally.bars += len(w.net_c)
        tally.agreed += int(np.count_nonzero(w.pos_c == w.pos_i))
    return tally


def guardrail_runs(series: Series, runs_n: int, seed: int) -> dict[str, tuple[int, ...]]:
    """Per breach: runs that reached the breach bar, failed exactly there, of which by the
    breach's own rule, and runs that had failed before it (another rule; excluded)."""
    bars = 60
    rules = JudgeRules(horizon_bars=bars)
    rng = np.random.default_rng(seed + 20_000)
    results = {}
    for kind, rule in (
        ("loss", "loss_limit"),
        ("not a distribution", "non_finite"),
        ("drawdown", "max_drawdown"),
    ):
        reached = exact = own = earlier = 0
        for run in range(runs_n):
            w = series.window(run, bars)
            at = int(rng.integers(1, bars))  # 0-based, after at least one bar (for the gain)
            valid = [True] * bars
            net = w.net_c
            if kind == "loss":
                net[at] = -rules.loss_limit - math.fsum(net[:at].tolist()) - 0.001
            elif kind == "not a distribution":  # the brain makes it a hold: flat, paying to go
                valid[at] = False
                net[at] = -COST_BPS / 10000.0 * abs(int(w.pos_c[at - 1]))
                w.pos_c[at] = 0
            else:  # a 2% gain somewhere before, then a fall of over 3% from the peak
                net[int(rng.integers(0, at))] = 0.02
                equity = np.cumprod(1.0 + net[:at])
                peak = max(1.0, float(equity.max()))
                net[at] = peak * (1 - rules.max_drawdown - 0.001) / float(equity[-1]) - 1
            _, verdict = first_verdict(rules, w.paired_bars(valid))
            if verdict is not None and verdict.bars <= at:
                earlier += 1
                continue
            reached += 1
            if verdict is not None and verdict.bars == at + 1:
                exact += 1
                own += verdict.rule == rule
        results[kind] = (reached, exact, own, earlier)
    return results


# -- reporting ----------------------------------------------------------------------------------


def wilson(hits: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial rate."""
    z = 1.959963984540054
    share = hits / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{hits / n:.1%} ({low:.1%}-{high:.1%})"


def median(values: list[int]) -> str:
    return f"{float(np.median(values)):.0f}" if values else "-"


def edge_name(edge: float | None) -> str:
    if edge is None:
        return "opposite (contrast)"
    return "as good" if edge == 1.0 else f"{1 - edge:.0%} worse"


HEADER = (
    "window (bars)",
    "candidate",
    "N",
    "net c/i",
    "agree",
    "judge: rolled back (95% CI)",
    "by rule",
    "median bar",
    "end: pass / inconcl.",
    "naive: rolled back (95% CI)",
    "median bar",
    "z a bar (bars to z -4)",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs of the 60-bar window")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"market: Student-t (3 df), {SIGMA * 1e4:.0f} bps a minute; incumbent per-bar net "
        f"Sharpe {SHARPE}, right {INCUMBENT_RIGHT:.0%} of its bars in the market; the candidate "
        f"shares its position on {SHARED / (SHARED + OWN):.0%} of the bars; costs "
        f"{COST_BPS:g} bp per unit change; seed {args.seed}"
    )
    rows = []
    targets: list[tuple[str, bool]] = []
    for bars, spacing, divisor in WINDOWS:
        runs_n = max(20, args.runs // divisor)
        sigma = SIGMA * math.sqrt(spacing / 60)  # an hour moves as much at any spacing
        p = paths(np.random.default_rng(args.seed * 1000 + bars), bars * runs_n)
        calibration = calibrate(p, sigma)
        market = sigma * (calibration.drift * p.signal + p.noise)
        print(
            f"{spacing:>2} s bars: sigma {sigma * 1e4:.2f} bps a bar, signal worth "
            f"{calibration.drift:.3f} sigma; the candidate's accuracy on its own bars for "
            + "/".join(f"{e:.0%}" for e in EDGES)
            + ": "
            + ", ".join(f"{calibration.right[e]:.3f}" for e in EDGES)
        )
        # The shipped defaults, turned into bars at this spacing as the host does.
        shipped = JudgeRules.of(LifecycleSettings(), minutes=60, bar_seconds=spacing)
        scenarios = [(edge_name(edge), edge, shipped) for edge in (*EDGES, None)]
        if bars > 60:
            unscaled = dataclasses.replace(shipped, stuck_bars=30)
            scenarios.insert(1, ("as good, stuck at 30 bars", 1.0, unscaled))
        for name, edge, rules in scenarios:
            pos_c = candidate_positions(p, None if edge is None else calibration.right[edge])
            tally = scenario(Series(p, market, pos_c), rules, runs_n)
            ratio = np.mean(expected_net(pos_c, p.signal, calibration.drift, sigma)) / np.mean(
                expected_net(p.incumbent, p.signal, calibration.drift, sigma)
            )
            z = expected_z(pos_c, p.incumbent, p.signal, calibration.drift, sigma)
            judge, naive = rate(len(tally.judge_bars), runs_n), rate(len(tally.naive_bars), runs_n)
            rows.append(
                (
                    f"{bars} ({spacing} s)",
                    name,
                    str(runs_n),
                    f"{ratio:.2f}",
                    f"{tally.agreed / tally.bars:.0%}",
                    judge,
                    ", ".join(f"{k} {v}" for k, v in sorted(tally.rules.items())) or "-",
                    median(tally.judge_bars),
                    f"{tally.passed / runs_n:.0%} / {tally.inconclusive / runs_n:.0%}",
                    naive,
                    median(tally.naive_bars),
                    f"{z:+.4f}" + (f" ({(4 / z) ** 2:,.0f})" if edge != 1.0 and z < 0 else ""),
                )
            )
            share = len(tally.judge_bars) / runs_n
            where = f"{bars} bars ({spacing} s bars)"
            if name == "as good":
                line = f"as good, {where}: judge false rollbacks <= 5%: {judge} (naive {naive})"
                targets.append((line, share <= 0.05))
            elif edge == 0.70:
                line = (
                    f"30% worse, {where}: rolled back >= 80%: {judge}, median bar "
                    f"{median(tally.judge_bars)} (naive {naive})"
                )
                targets.append((line, share >= 0.80))
    print()
    print_table(HEADER, rows)
    print()
    guard_runs = max(20, args.runs // 2)
    p = paths(np.random.default_rng(args.seed * 1000 + 7), 60 * guard_runs)
    calibration = calibrate(p, SIGMA)
    market = SIGMA * (calibration.drift * p.signal + p.noise)
    series = Series(p, market, candidate_positions(p, calibration.right[1.0]))
    guard_rows = []
    for kind, (reached, exact, own, earlier) in guardrail_runs(
        series, guard_runs, args.seed
    ).items():
        guard_rows.append((kind, str(reached), rate(exact, reached), str(own), str(earlier)))
        line = f"guardrail, {kind}: failed at exactly the breach bar = 100%: {exact}/{reached}"
        targets.append((line, exact == reached))
    print_table(
        (
            "guardrail breach (60 bars, as good)",
            "N",
            "failed at exactly that bar",
            "of which by its own rule",
            "failed before it (excluded)",
        ),
        guard_rows,
    )
    print()
    for line, met in targets:
        print(f"{'PASS' if met else 'MISS'}  {line}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0 if all(met for _, met in targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
