"""Download, extract and verify a large artifact; print each figure against its target.

    python benchmarks/download.py [--size-mb 200] [--repeats 5] [--workdir DIR]

Everything is measured in one run, on this machine, against the test fake of GitHub
(``tests/fakes/github.py``: API on 127.0.0.1, signed-URL blob host on 127.0.0.2):

1. Wall time. An artifact zip of at least ``--size-mb`` MiB (a real ONNX decision model padded
   with random weights, plus its ``metadata.json`` with the SHA-256; deflated, and random floats
   barely compress, as real weights do) is served by the fake in a separate process. The
   project's path (``GitHubActionsClient.download_artifact`` to a file, hashing as it streams,
   then ``extract_artifact`` and ``build_manifest``: download, hash, extract, verify) is timed
   against ``curl -sSL -o`` of a fresh signed URL plus ``unzip -q`` of the same artifact. Both
   get one untimed warm-up, then run alternately; the median of each is compared.
2. Peak memory. The project's path runs again in a child process, which resets its RSS high-water
   mark (``5`` into ``/proc/self/clear_refs``, checked to work first) and reports ``VmHWM`` after
   minus ``VmRSS`` before. For contrast, the same with the blob read whole into memory
   (``await response.read()``), as the original C# service did.
3. Poll cost. The sync service (``Core`` with a started brain, as the host assembles it) polls a
   fake with several pages of runs: the first poll, an idle one, and an idle one after a restart
   (the ETag cache is the persistent sync state). Requests per poll, and how many the fake charged
   against the rate limit (a 304 costs nothing).

Needs ``curl`` and ``unzip`` on PATH (Debian/Ubuntu: ``apt-get install -y curl unzip``). Files live
in a temporary folder (under ``--workdir`` when given) that is removed at the end, and the server
process stops with it. Exit status 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import numpy as np
import onnx
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make `tests` importable

from _report import Figure, print_table  # noqa: E402 - beside this script

from app.containers import Core, http_session, resolve, trading_brain  # noqa: E402
from app.fsutil import sha256_of_file  # noqa: E402
from app.services.extraction import ExtractionLimits, extract_artifact  # noqa: E402
from app.services.github import GitHubActionsClient  # noqa: E402
from app.services.github_types import Artifact  # noqa: E402
from app.services.manifest import ArtifactManifest, build_manifest  # noqa: E402
from app.services.sync import SyncReport  # noqa: E402
from app.settings import GitHubSettings, ModelsSettings  # noqa: E402
from tests.artifacts import MODEL_NAME, metadata_json, model_artifact  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.fakes.github import FakeGitHub, running_fake_github  # noqa: E402
from tests.onnx_models import decision_model  # noqa: E402

MIB = 1 << 20
EMBEDDED_MODEL = ROOT / "models" / MODEL_NAME
ARTIFACT_NAME = "trained-model"
# Random float32 weights deflate to about 93 % of their size: pad enough that the zip is the size.
EXPECTED_DEFLATE_RATIO = 0.9
HTTP_TIMEOUT_SECONDS = 60.0
RATIO_TARGET = 1.25
RSS_TARGET_MIB = 64.0
PROBE_BYTES = 32 * MIB  # allocated and freed to check that the high-water mark really resets
POLL_RUNS = 12
POLL_PER_PAGE = 5  # 12 runs: three pages, as a busy repository would have
INSTALL_HINT = "Debian/Ubuntu: apt-get install -y curl unzip"


# -- the artifact and the server ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltArtifact:
    """The artifact zip on disk and what its model must hash to once extracted."""

    path: Path
    zip_bytes: int
    model_bytes: int
    model_sha256: str


def build_artifact(folder: Path, size_mb: float) -> BuiltArtifact:
    """A deflated zip of a padded decision model and its metadata.json, at least ``size_mb``."""
    model = decision_model(seed=7, version="bench-1", padding_mb=size_mb / EXPECTED_DEFLATE_RATIO)
    content = model.SerializeToString()
    del model
    path = folder / "artifact.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MODEL_NAME, content)
        archive.writestr("metadata.json", metadata_json("bench-1", model=content))
    built = BuiltArtifact(
        path, path.stat().st_size, len(content), hashlib.sha256(content).hexdigest()
    )
    if built.zip_bytes < size_mb * MIB:
        raise SystemExit(f"the artifact came out at {built.zip_bytes / MIB:.0f} MiB, not {size_mb}")
    return built


@dataclass(frozen=True, slots=True)
class ServedArtifact:
    """Where the server process serves the artifact, and the credentials to ask for it."""

    api_url: str
    token: str
    owner: str
    repository: str
    run_id: int
    artifact_id: int

    def settings(self) -> GitHubSettings:
        return GitHubSettings(
            owner=self.owner,
            repository=self.repository,
            token=SecretStr(self.token),
            api_url=self.api_url,
        )

    @property
    def zip_url(self) -> str:
        """The API endpoint that redirects to a fresh signed URL."""
        return (
            f"{self.api_url}/repos/{self.owner}/{self.repository}"
            f"/actions/artifacts/{self.artifact_id}/zip"
        )


async def serve(zip_path: Path) -> None:
    """The server process: serve ``zip_path`` until stdin closes (the parent ends or exits)."""
    content = await asyncio.to_thread(zip_path.read_bytes)
    async with running_fake_github() as fake:
        run = fake.add_run()
        artifact = fake.add_artifact(run, ARTIFACT_NAME, content)
        served = ServedArtifact(
            fake.api_url, fake.token, fake.owner, fake.repository, run.id, artifact.id
        )
        print(json.dumps(asdict(served)), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@contextlib.contextmanager
def server_process(zip_path: Path) -> Iterator[ServedArtifact]:
    """The fake GitHub in its own process, so it takes no CPU time from the measured client."""
    command = [sys.executable, __file__, "--serve", str(zip_path)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("the fake GitHub server process did not start")
            yield ServedArtifact(**json.loads(line))
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- the project's path and the baselines ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phases:
    """Seconds spent in each step of one download-extract-verify."""

    download: float
    extract: float
    verify: float

    @property
    def total(self) -> float:
        return self.download + self.extract + self.verify


async def find_artifact(client: GitHubActionsClient, served: ServedArtifact) -> Artifact:
    """The artifact as the sync service sees it: from the run's artifact list."""
    artifacts = await client.list_artifacts(served.run_id)
    return next(a for a in artifacts if a.id == served.artifact_id)


def extraction_limits() -> ExtractionLimits:
    return ExtractionLimits.from_settings(ModelsSettings())


async def extract_and_verify(
    zip_path: Path, staging: Path, expected_sha256: str
) -> tuple[float, float]:
    """The installer's extract and verify steps, off the event loop as it runs them; seconds."""
    started = time.perf_counter()
    extracted = await asyncio.to_thread(extract_artifact, zip_path, staging, extraction_limits())
    extracted_at = time.perf_counter()
    manifest = await asyncio.to_thread(build_manifest, extracted, require_checksums=True)
    verified_at = time.perf_counter()
    _check_manifest(manifest, expected_sha256)
    return extracted_at - started, verified_at - extracted_at


def _check_manifest(manifest: ArtifactManifest, expected_sha256: str) -> None:
    (model,) = manifest.models
    if model.sha256 != expected_sha256 or model.declared_sha256 != expected_sha256:
        raise SystemExit(f"the extracted model hashes to {model.sha256}, not {expected_sha256}")


async def project_path(
    client: GitHubActionsClient, artifact: Artifact, work: Path, expected_sha256: str
) -> Phases:
    """Download (fresh signed URL, streamed, hashed, digest checked), extract, verify."""
    zip_path = work / "artifact.zip"
    started = time.perf_counter()
    await client.download_artifact(artifact, zip_path, max_bytes=artifact.size_in_bytes)
    downloaded = time.perf_counter() - started
    extracted, verified = await extract_and_verify(zip_path, work / "staging", expected_sha256)
    return Phases(downloaded, extracted, verified)


async def buffered_path(
    session: aiohttp.ClientSession,
    served: ServedArtifact,
    artifact: Artifact,
    work: Path,
    expected_sha256: str,
) -> Phases:
    """The original service's way: the whole blob read into memory, then written out."""
    zip_path = work / "artifact.zip"
    started = time.perf_counter()
    location = await signed_url(session, served)
    async with session.get(location) as response:
        response.raise_for_status()
        body = await response.read()
    if artifact.sha256 is not None and hashlib.sha256(body).hexdigest() != artifact.sha256:
        raise SystemExit("the buffered download does not match the artifact's digest")
    await asyncio.to_thread(zip_path.write_bytes, body)
    del body
    downloaded = time.perf_counter() - started
    extracted, verified = await extract_and_verify(zip_path, work / "staging", expected_sha256)
    return Phases(downloaded, extracted, verified)


async def signed_url(session: aiohttp.ClientSession, served: ServedArtifact) -> str:
    """The blob host's signed URL, from the API's redirect."""
    headers = {"Authorization": f"Bearer {served.token}"}
    async with session.get(served.zip_url, headers=headers, allow_redirects=False) as response:
        location = response.headers.get("Location")
        if response.status != 302 or location is None:
            raise SystemExit(f"the fake answered {response.status} to the artifact's zip URL")
        return location


def baseline_path(served: ServedArtifact, work: Path) -> Phases:
    """``curl`` of a fresh signed URL (asked for with curl too) and ``unzip -q``."""
    zip_path = work / "artifact.zip"
    started = time.perf_counter()
    # The token goes in on stdin (`-H @-`), not on a command line that `ps` shows.
    redirect = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{redirect_url}", "-H", "@-", served.zip_url],
        input=f"Authorization: Bearer {served.token}\n",
        capture_output=True,
        text=True,
        check=True,
    )
    # No Authorization here: the blob host refuses it, as GitHub's storage does.
    subprocess.run(["curl", "-sSL", "-o", str(zip_path), redirect.stdout], check=True)
    downloaded = time.perf_counter() - started
    subprocess.run(["unzip", "-q", str(zip_path), "-d", str(work / "staging")], check=True)
    return Phases(downloaded, time.perf_counter() - started - downloaded, 0.0)


# -- 1. wall time ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WallTimes:
    project: list[Phases]
    baseline: list[Phases]


@contextlib.contextmanager
def scratch(folder: Path) -> Iterator[Path]:
    """An empty folder, removed afterwards with its dirty pages synced out of the next run's way."""
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        os.sync()


async def measure_wall_times(
    served: ServedArtifact, built: BuiltArtifact, work: Path, repeats: int
) -> WallTimes:
    """One warm-up of each, then ``repeats`` of each in alternating order."""
    times = WallTimes([], [])
    async with http_session(HTTP_TIMEOUT_SECONDS) as session:
        client = GitHubActionsClient(session, served.settings())
        artifact = await find_artifact(client, served)

        async def project(rep: int) -> Phases:
            with scratch(work / f"project-{rep}") as folder:
                return await project_path(client, artifact, folder, built.model_sha256)

        def baseline(rep: int) -> Phases:
            with scratch(work / f"baseline-{rep}") as folder:
                phases = baseline_path(served, folder)
                if rep == 0:  # once, untimed: curl and unzip really produced the same model
                    check_unzipped(folder / "staging" / MODEL_NAME, built.model_sha256)
                return phases

        await project(0)
        baseline(0)
        for rep in range(1, repeats + 1):
            if rep % 2:
                times.project.append(await project(rep))
                times.baseline.append(baseline(rep))
            else:
                times.baseline.append(baseline(rep))
                times.project.append(await project(rep))
    return times


def check_unzipped(path: Path, expected_sha256: str) -> None:
    if sha256_of_file(path) != expected_sha256:
        raise SystemExit(f"unzip produced {path} with the wrong SHA-256")


# -- 2. peak memory ----------------------------------------------------------------------------


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    fields: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0])
    return fields


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_reset_works() -> bool:
    """Whether writing 5 to clear_refs really lowers VmHWM here (kernel >= 4.0, permitted)."""
    probe_kib = PROBE_BYTES // 1024
    base = memory_status()["VmRSS"]
    probe = bytearray(PROBE_BYTES)  # zero-filled: every page touched
    raised = memory_status()["VmHWM"] >= base + probe_kib * 9 // 10
    del probe
    try:
        reset_peak_rss()
    except OSError:
        return False
    after = memory_status()
    return raised and after["VmHWM"] < after["VmRSS"] + probe_kib // 2


@dataclass(frozen=True, slots=True)
class PeakMemory:
    rss_before_kib: int
    hwm_after_kib: int
    reset_verified: bool

    @property
    def growth_mib(self) -> float:
        return (self.hwm_after_kib - self.rss_before_kib) / 1024


async def measure_peak_in_child(
    mode: str, served: ServedArtifact, expected: str, work: Path
) -> PeakMemory:
    """Runs in the child: everything imported and connected first, then the measured path."""
    async with http_session(HTTP_TIMEOUT_SECONDS) as session:
        client = GitHubActionsClient(session, served.settings())
        artifact = await find_artifact(client, served)
        await asyncio.to_thread(lambda: None)  # the worker thread exists before the reset
        verified = peak_reset_works()
        before = memory_status()["VmRSS"]
        if mode == "project":
            await project_path(client, artifact, work, expected)
        else:
            await buffered_path(session, served, artifact, work, expected)
        after = memory_status()["VmHWM"]
    return PeakMemory(before, after, verified)


def peak_memory(mode: str, served: ServedArtifact, built: BuiltArtifact, work: Path) -> PeakMemory:
    """Run one path in a fresh child process and read back what it measured."""
    with scratch(work / f"rss-{mode}") as folder:
        result = subprocess.run(
            [sys.executable, __file__, "--measure-rss", mode, "--workdir", str(folder)],
            input=json.dumps({"served": asdict(served), "model_sha256": built.model_sha256}),
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"the {mode} memory child failed:\n{result.stderr}")
    return PeakMemory(**json.loads(result.stdout.splitlines()[-1]))


# -- 3. poll cost ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PollCost:
    scenario: str
    poll: str
    outcome: str
    api_requests: int
    counted: int
    not_modified: int
    blob_downloads: int
    by_endpoint: dict[str, int]


class PollingHost:
    """The sync service graph as the host builds it: ``Core`` with a started brain."""

    def __init__(self, fake: FakeGitHub, models_dir: Path) -> None:
        github = {
            "api_url": fake.api_url,
            "token": fake.token,
            "owner": fake.owner,
            "repository": fake.repository,
            "per_page": POLL_PER_PAGE,
        }
        self.settings = make_settings(
            models_dir, github=github, cloud_sync={"min_interval_minutes": 0}
        )

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[Callable[[], Awaitable[SyncReport]]]:
        """A fresh process's graph (session, brain, state read from disk); yields one poll."""
        async with http_session(HTTP_TIMEOUT_SECONDS) as session:
            brain = trading_brain(self.settings)
            core = Core(config=self.settings, http=session, brain=brain)
            await (await resolve(core.models)).start()
            sync = await resolve(core.sync)
            yield sync.synchronize_models


async def counted_poll(
    fake: FakeGitHub, scenario: str, name: str, poll: Callable[[], Awaitable[SyncReport]]
) -> PollCost:
    """One poll, and the requests the fake saw during it."""
    requests, counted = fake.requests.copy(), fake.counted_requests
    recorded, downloads = len(fake.recorded), fake.blob.downloads
    report = await poll()
    by_endpoint = dict(fake.requests - requests)
    total = sum(by_endpoint.values())
    charged = fake.counted_requests - counted
    if len(fake.recorded) - recorded != total:
        raise SystemExit("the fake saw requests to endpoints it does not know")
    return PollCost(
        scenario,
        name,
        report.outcome,
        total,
        charged,
        total - charged,
        fake.blob.downloads - downloads,
        by_endpoint,
    )


def populate(fake: FakeGitHub, *, installable: bool) -> None:
    """Several pages of successful runs; with model artifacts, or only unrelated ones."""
    workflow = fake.add_workflow()
    for index in range(POLL_RUNS):
        run = fake.add_run(workflow)
        fake.add_artifact(run, "coverage-report")
        if installable:
            fake.add_artifact(run, ARTIFACT_NAME, model_artifact(f"poll-{index}"))


async def measure_poll_cost(work: Path) -> list[PollCost]:
    """Two scenarios: a new model then idle, and nothing installable on any page."""
    costs: list[PollCost] = []
    for scenario, installable in (("new run", True), ("nothing to install", False)):
        models_dir = work / scenario.replace(" ", "-") / "models"
        models_dir.mkdir(parents=True)
        shutil.copyfile(EMBEDDED_MODEL, models_dir / MODEL_NAME)
        async with running_fake_github() as fake:
            populate(fake, installable=installable)
            host = PollingHost(fake, models_dir)
            async with host.started() as poll:
                costs.append(await counted_poll(fake, scenario, "first", poll))
                costs.append(await counted_poll(fake, scenario, "idle", poll))
            async with host.started() as poll:
                costs.append(await counted_poll(fake, scenario, "idle after restart", poll))
    return costs


# -- report ------------------------------------------------------------------------------------


def median_phases(runs: Sequence[Phases]) -> Phases:
    return Phases(
        statistics.median(p.download for p in runs),
        statistics.median(p.extract for p in runs),
        statistics.median(p.verify for p in runs),
    )


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def spread(median: float, runs: Sequence[Phases]) -> str:
    """The median and the range of the runs' totals."""
    totals = [p.total for p in runs]
    return f"{median:.2f} s (median; {min(totals):.2f}-{max(totals):.2f})"


def wall_time_figures(times: WallTimes, built: BuiltArtifact) -> list[Figure]:
    project = statistics.median(p.total for p in times.project)
    baseline = statistics.median(p.total for p in times.baseline)
    ratio = project / baseline
    split = median_phases(times.project)
    curl = median_phases(times.baseline)
    rate = built.zip_bytes / MIB / project
    return [
        Figure("project: download+extract+verify", spread(project, times.project), "", None),
        Figure(
            "  of which download+sha256 / extract / verify",
            f"{split.download:.2f} / {split.extract:.2f} / {split.verify:.2f} s",
            "",
            None,
        ),
        Figure("  throughput (zip bytes)", f"{rate:.0f} MiB/s", "", None),
        Figure("baseline: curl -o + unzip -q", spread(baseline, times.baseline), "", None),
        Figure(
            "  of which curl / unzip",
            f"{curl.download:.2f} / {curl.extract:.2f} s",
            "",
            None,
        ),
        Figure(
            "wall time ratio project/baseline",
            f"{ratio:.2f}",
            f"<= {RATIO_TARGET}",
            ratio <= RATIO_TARGET,
        ),
    ]


def memory_figures(project: PeakMemory, buffered: PeakMemory) -> list[Figure]:
    verified = project.reset_verified and buffered.reset_verified
    return [
        Figure(
            "peak RSS reset via clear_refs verified", "yes" if verified else "NO", "yes", verified
        ),
        Figure(
            "peak RSS growth: project (streamed)",
            f"{project.growth_mib:.1f} MiB",
            f"<= {RSS_TARGET_MIB:.0f} MiB",
            verified and project.growth_mib <= RSS_TARGET_MIB,
        ),
        Figure(
            "peak RSS growth: buffered response.read()", f"{buffered.growth_mib:.1f} MiB", "", None
        ),
    ]


def poll_figures(costs: Sequence[PollCost]) -> list[Figure]:
    figures = []
    for cost in costs:
        idle = cost.poll != "first"
        figures.append(
            Figure(
                f"poll ({cost.scenario}): {cost.poll}",
                f"{cost.api_requests} request{plural(cost.api_requests)}, {cost.counted} counted",
                "0 counted" if idle else "",
                cost.counted == 0 if idle else None,
            )
        )
    return figures


def print_poll_details(costs: Sequence[PollCost]) -> None:
    header = (
        "scenario",
        "poll",
        "outcome",
        "API requests",
        "counted",
        "304",
        "blob GETs",
        "by endpoint",
    )
    rows = [
        (
            c.scenario,
            c.poll,
            c.outcome,
            str(c.api_requests),
            str(c.counted),
            str(c.not_modified),
            str(c.blob_downloads),
            ", ".join(f"{name} {count}" for name, count in sorted(c.by_endpoint.items())),
        )
        for c in costs
    ]
    print_table(header, rows)


def versions() -> str:
    def first_line(command: Sequence[str]) -> str:
        return subprocess.run(
            command, capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]

    return (
        f"cpus={os.cpu_count()} (usable {len(os.sched_getaffinity(0))}) "
        f"python={platform.python_version()} aiohttp={aiohttp.__version__} "
        f"onnx={onnx.__version__} numpy={np.__version__} kernel={platform.release()}\n"
        f"{first_line(['curl', '--version'])}\n{first_line(['unzip', '-v'])}"
    )


# -- entry points ------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, work: Path) -> tuple[list[Figure], list[PollCost]]:
    started = time.perf_counter()
    built = build_artifact(work, args.size_mb)
    print(
        f"artifact: {built.zip_bytes / MIB:.1f} MiB zip (deflate), model {built.model_bytes / MIB:.1f} MiB, "
        f"built in {time.perf_counter() - started:.0f} s; {args.repeats} timed repetitions of each path"
    )
    with server_process(built.path) as served:
        times = await measure_wall_times(served, built, work, args.repeats)
        project = peak_memory("project", served, built, work)
        buffered = peak_memory("buffered", served, built, work)
    costs = await measure_poll_cost(work / "poll")
    figures = (
        wall_time_figures(times, built) + memory_figures(project, buffered) + poll_figures(costs)
    )
    return figures, costs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--size-mb", type=float, default=200, help="artifact zip size, at least (MiB)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each path (median)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary folder")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--measure-rss", choices=("project", "buffered"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    if args.measure_rss is not None:
        given = json.loads(sys.stdin.read())
        served = ServedArtifact(**given["served"])
        peak = asyncio.run(
            measure_peak_in_child(args.measure_rss, served, given["model_sha256"], args.workdir)
        )
        print(json.dumps(asdict(peak)))
        return 0
    missing = [tool for tool in ("curl", "unzip") if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)} on PATH for the baseline ({INSTALL_HINT})")
        return 2
    print(versions())
    started = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="download-bench-", dir=args.workdir) as folder:
        figures, costs = asyncio.run(measure(args, Path(folder)))
    print()
    print_table(
        ("figure", "value", "target", "result"),
        [(f.name, f.value, f.target, f.verdict) for f in figures],
    )
    print()
    print_poll_details(costs)
    print(f"run time {time.perf_counter() - started:.0f} s")
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
