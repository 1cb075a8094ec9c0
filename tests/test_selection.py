"""Which runs may supply a model, and which artifact is installed next."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.services.github_types import Artifact, WorkflowRun
from app.services.selection import (
    ArtifactCandidate,
    SelectionPolicy,
    artifact_matches,
    choose_candidate,
    why_artifact_skipped,
    why_run_ineligible,
)
from app.settings import GitHubSettings

REPOSITORY = "c-trading-bo/trading-bot-c-"

GOOD_RUN = WorkflowRun(
    id=9000,
    run_attempt=1,
    name="Train",
    workflow_id=4242,
    path=".github/workflows/train.yml",
    head_branch="main",
    head_sha="a" * 40,
    event="push",
    status="completed",
    conclusion="success",
    created_at=datetime(2024, 5, 1, tzinfo=UTC),
    repository=REPOSITORY,
    head_repository=REPOSITORY,
)

POLICY = SelectionPolicy(
    repository=REPOSITORY,
    branch="main",
    workflow="train.yml",
    allowed_events=frozenset({"push", "schedule", "workflow_dispatch"}),
    allow_pull_requests=False,
    allow_forks=False,
    artifact_pattern="*model*",
)


def make_run(**changes: object) -> WorkflowRun:
    return dataclasses.replace(GOOD_RUN, **changes)


def make_artifact(
    artifact_id: int = 1, *, run_id: int | None = None, **changes: object
) -> Artifact:
    artifact = Artifact(
        id=artifact_id,
        name="trained-model",
        size_in_bytes=1024,
        expired=False,
        digest=None,
        created_at=None,
        archive_download_url=f"https://api.github.com/x/{artifact_id}/zip",
        workflow_run_id=run_id,
        head_branch="main",
        head_sha=None,
    )
    return dataclasses.replace(artifact, **changes)


def candidate(run_id: int, attempt: int = 1, artifact_id: int = 1, *, expired: bool = False):
    run = make_run(id=run_id, run_attempt=attempt)
    return ArtifactCandidate(run, make_artifact(artifact_id, run_id=run_id, expired=expired))


class TestPolicyFromSettings:
    def test_mirrors_the_github_section(self):
        settings = GitHubSettings(
            owner="Acme",
            repository="bot",
            branch="release",
            workflow="train.yml",
            allowed_events=("push",),
            allow_pull_requests=True,
            allow_forks=True,
            artifact_pattern="brain-*",
        )
        assert SelectionPolicy.from_settings(settings) == SelectionPolicy(
            repository="Acme/bot",
            branch="release",
            workflow="train.yml",
            allowed_events=frozenset({"push"}),
            allow_pull_requests=True,
            allow_forks=True,
            artifact_pattern="brain-*",
        )


class TestRunEligibility:
    def test_a_successful_push_run_of_the_repository_is_eligible(self):
        assert why_run_ineligible(GOOD_RUN, POLICY) is None

    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({"status": "in_progress", "conclusion": None}, "run is in_progress, not completed"),
            ({"status": None}, "run is in an unknown state, not completed"),
            ({"conclusion": "failure"}, "run concluded failure, not success"),
            ({"conclusion": None}, "run concluded without a conclusion, not success"),
            ({"head_branch": "dev"}, "branch 'dev' is not 'main'"),
            ({"head_branch": None}, "branch None is not 'main'"),
            (
                {"path": ".github/workflows/lint.yml"},
                "workflow .github/workflows/lint.yml is not 'train.yml'",
            ),
            (
                {"event": "release"},
                "event 'release' is not allowed (allowed: push, schedule, workflow_dispatch)",
            ),
            (
                {"event": "pull_request"},
                "event 'pull_request' is refused (github.allow_pull_requests is off)",
            ),
            (
                {"event": "pull_request_target"},
                "event 'pull_request_target' is refused (github.allow_pull_requests is off)",
            ),
            (
                {"head_repository": "mallory/trading-bot-c-"},
                f"run is from fork 'mallory/trading-bot-c-', not {REPOSITORY!r}",
            ),
            (
                {"head_repository": None},
                "head repository unknown, refused as a possible fork (github.allow_forks is off)",
            ),
        ],
    )
    def test_each_rule_refuses_with_its_reason(self, changes, reason):
        assert why_run_ineligible(make_run(**changes), POLICY) == reason

    def test_the_first_failing_rule_is_the_reason(self):
        run = make_run(conclusion="cancelled", head_branch="dev", event="pull_request")
        assert why_run_ineligible(run, POLICY) == "run concluded cancelled, not success"

    def test_an_empty_branch_accepts_any_branch(self):
        policy = dataclasses.replace(POLICY, branch="")
        assert why_run_ineligible(make_run(head_branch="feature/x"), policy) is None

    @pytest.mark.parametrize("workflow", ["", "train.yml", ".github/workflows/train.yml", "4242"])
    def test_workflow_matches_by_file_name_path_or_id(self, workflow):
        policy = dataclasses.replace(POLICY, workflow=workflow)
        assert why_run_ineligible(GOOD_RUN, policy) is None

    @pytest.mark.parametrize("workflow", ["Train.yml", "train.yaml", "4243", "Train"])
    def test_workflow_mismatch_is_refused(self, workflow):
        policy = dataclasses.replace(POLICY, workflow=workflow)
        assert why_run_ineligible(GOOD_RUN, policy) is not None

    def test_workflow_path_with_a_ref_suffix_matches_its_file(self):
        run = make_run(path=".github/workflows/train.yml@refs/heads/main")
        assert why_run_ineligible(run, POLICY) is None

    def test_a_mismatched_workflow_id_names_the_id_when_the_path_is_unknown(self):
        policy = dataclasses.replace(POLICY, workflow="1")
        assert why_run_ineligible(make_run(path=""), policy) == "workflow id 4242 is not '1'"

    def test_pull_requests_are_allowed_only_by_their_own_switch(self):
        with_events = dataclasses.replace(
            POLICY, allowed_events=POLICY.allowed_events | {"pull_request"}
        )
        assert why_run_ineligible(make_run(event="pull_request"), with_events) is not None
        switched_on = dataclasses.replace(POLICY, allow_pull_requests=True)
        assert why_run_ineligible(make_run(event="pull_request"), switched_on) is None
        assert why_run_ineligible(make_run(event="pull_request_target"), switched_on) is None

    def test_the_head_repository_compares_case_insensitively(self):
        run = make_run(head_repository=REPOSITORY.upper())
        assert why_run_ineligible(run, POLICY) is None

    @pytest.mark.parametrize("head_repository", ["mallory/trading-bot-c-", None])
    def test_forks_are_allowed_by_their_switch(self, head_repository):
        policy = dataclasses.replace(POLICY, allow_forks=True)
        assert why_run_ineligible(make_run(head_repository=head_repository), policy) is None


class TestArtifactMatches:
    @pytest.mark.parametrize(
        ("pattern", "name", "expected"),
        [
            ("*model*", "trained-model-v3", True),
            ("*model*", "coverage-report", False),
            ("*model*", "Trained-MODEL", False),  # case-sensitive, as GitHub names are
            ("brain-?", "brain-1", True),
            ("brain-?", "brain-12", False),
            ("brain-[0-9]*", "brain-2024", True),
            ("", "anything", True),
        ],
    )
    def test_glob(self, pattern, name, expected):
        policy = dataclasses.replace(POLICY, artifact_pattern=pattern)
        assert artifact_matches(make_artifact(name=name), policy) is expected


class TestArtifactCandidate:
    def test_key_orders_by_run_then_attempt_then_artifact(self):
        keys = [candidate(10, 1, 99).key, candidate(10, 2, 1).key, candidate(11, 1, 1).key]
        assert keys == sorted(keys)
        assert candidate(10, 2, 7).key == (10, 2, 7)

    def test_an_artifact_of_another_run_is_refused(self):
        with pytest.raises(ValueError, match="artifact 5 belongs to run 1, not run 9000"):
            ArtifactCandidate(GOOD_RUN, make_artifact(5, run_id=1))

    def test_an_artifact_without_a_run_id_is_accepted(self):
        assert ArtifactCandidate(GOOD_RUN, make_artifact(5)).run_key == (9000, 1)


class TestWhyArtifactSkipped:
    def test_a_fresh_newer_artifact_is_acceptable(self):
        assert (
            why_artifact_skipped(candidate(11, 1, 2), processed_ids={1}, installed=(10, 1)) is None
        )

    def test_already_processed(self):
        reason = why_artifact_skipped(candidate(11), processed_ids={1}, installed=(10, 1))
        assert reason == "already processed"

    def test_expired(self):
        reason = why_artifact_skipped(candidate(11, expired=True), processed_ids=(), installed=None)
        assert reason == "artifact expired"

    @pytest.mark.parametrize("installed", [(11, 1), (11, 2), (12, 1)])
    def test_not_newer_than_installed(self, installed):
        reason = why_artifact_skipped(candidate(11), processed_ids=(), installed=installed)
        run_id, attempt = installed
        assert reason == f"not newer than the installed model (run {run_id} attempt {attempt})"

    def test_a_rerun_of_the_installed_run_is_newer(self):
        assert why_artifact_skipped(candidate(11, 2), processed_ids=(), installed=(11, 1)) is None

    def test_nothing_installed_from_a_run_accepts_any_run(self):
        assert why_artifact_skipped(candidate(1), processed_ids=(), installed=None) is None


class TestChooseCandidate:
    def test_the_newest_acceptable_wins_and_the_rest_say_why(self):
        newest_expired = candidate(30, artifact_id=300, expired=True)
        newest_processed = candidate(25, artifact_id=250)
        chosen_one = candidate(20, artifact_id=200)
        older = candidate(15, artifact_id=150)
        installed_run = candidate(10, artifact_id=100)

        chosen, skipped = choose_candidate(
            [older, installed_run, newest_expired, chosen_one, newest_processed],
            processed_ids={250},
            installed=(10, 1),
        )

        assert chosen is chosen_one
        assert skipped == [
            (newest_expired, "artifact expired"),
            (newest_processed, "already processed"),
            (older, "superseded by newer artifact 200"),
            (installed_run, "superseded by newer artifact 200"),
        ]

    def test_a_rerun_beats_the_first_attempt_and_a_later_artifact_breaks_ties(self):
        first = candidate(10, 1, artifact_id=5)
        rerun_a = candidate(10, 2, artifact_id=6)
        rerun_b = candidate(10, 2, artifact_id=7)
        chosen, _ = choose_candidate([rerun_b, first, rerun_a], processed_ids=(), installed=None)
        assert chosen is rerun_b

    def test_a_candidate_listed_twice_is_considered_once(self):
        one, again = candidate(10, artifact_id=5), candidate(10, artifact_id=5)
        chosen, skipped = choose_candidate([one, again], processed_ids=(), installed=None)
        assert chosen is one
        assert skipped == [(again, "listed twice")]

    def test_never_older_than_installed(self):
        chosen, skipped = choose_candidate(
            [candidate(8), candidate(9, 3)], processed_ids=(), installed=(9, 3)
        )
        assert chosen is None
        assert [reason for _, reason in skipped] == [
            "not newer than the installed model (run 9 attempt 3)",
            "not newer than the installed model (run 9 attempt 3)",
        ]

    def test_everything_skipped_chooses_nothing(self):
        candidates = [candidate(3, artifact_id=3, expired=True), candidate(2, artifact_id=2)]
        chosen, skipped = choose_candidate(candidates, processed_ids={2}, installed=None)
        assert chosen is None
        assert [reason for _, reason in skipped] == ["artifact expired", "already processed"]

    def test_no_candidates(self):
        assert choose_candidate([], processed_ids=(), installed=None) == (None, [])


@st.composite
def listings(draw: st.DrawFn) -> list[ArtifactCandidate]:
    """Candidates as GitHub lists them: artifact ids unique, the same artifact sometimes twice."""
    # Small ranges, so that shared runs, re-runs and the installed run come up often.
    runs = draw(
        st.lists(st.tuples(st.integers(1, 6), st.integers(1, 3), st.booleans()), max_size=10)
    )
    unique = [
        candidate(run_id, attempt, artifact_id, expired=expired)
        for artifact_id, (run_id, attempt, expired) in enumerate(runs, start=1)
    ]
    repeated = draw(st.lists(st.sampled_from(unique), max_size=3)) if unique else []
    return draw(st.permutations(unique + repeated))


candidates_strategy = listings()
installed_strategy = st.none() | st.tuples(st.integers(1, 6), st.integers(1, 3))
processed_strategy = st.frozensets(st.integers(1, 12), max_size=6)


@given(candidates_strategy, processed_strategy, installed_strategy)
def test_choice_is_the_newest_acceptable_candidate(candidates, processed, installed):
    chosen, _ = choose_candidate(candidates, processed_ids=processed, installed=installed)

    acceptable = [
        each
        for each in candidates
        if why_artifact_skipped(each, processed_ids=processed, installed=installed) is None
    ]
    if not acceptable:
        assert chosen is None
        return
    assert chosen is not None
    assert chosen.key == max(each.key for each in acceptable)
    assert not chosen.artifact.expired
    assert chosen.artifact.id not in processed
    assert installed is None or chosen.run_key > installed


@given(candidates_strategy, processed_strategy, installed_strategy)
def test_every_candidate_is_accounted_for_once_newest_first(candidates, processed, installed):
    chosen, skipped = choose_candidate(candidates, processed_ids=processed, installed=installed)

    answered = [each for each, _ in skipped] + ([chosen] if chosen is not None else [])
    assert sorted(map(id, answered)) == sorted(map(id, candidates))
    skipped_keys = [each.key for each, _ in skipped]
    assert skipped_keys == sorted(skipped_keys, reverse=True)
    assert all(reason for _, reason in skipped)


@given(candidates_strategy, processed_strategy, installed_strategy, st.randoms())
def test_the_choice_does_not_depend_on_listing_order(candidates, processed, installed, random):
    shuffled = list(candidates)
    random.shuffle(shuffled)
    first, _ = choose_candidate(candidates, processed_ids=processed, installed=installed)
    second, _ = choose_candidate(shuffled, processed_ids=processed, installed=installed)
    assert (first.key if first else None) == (second.key if second else None)
