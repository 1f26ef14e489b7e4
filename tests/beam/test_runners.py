"""The whole job on Beam runners beyond the local default, proved offline.

Flink and Spark run a Beam Python job through the portable runner: the job is translated to Beam's
portable pipeline proto, handed to a job service, and executed by SDK workers that unpickle our
DoFns. `--runner PortableRunner --job_endpoint embed --environment_type LOOPBACK` starts that job
service and the SDK worker in this process, so it runs that path end to end without the cluster
(whose job-server jars we cannot fetch here). Its output must be byte-identical to a default
FnApiRunner run's.

Dataflow cannot be reached, but `--dry_run=True` makes DataflowRunner do everything short of
submitting: its transform overrides, the side-input and deterministic-key-coder rewrites, the
portable proto with a Docker environment, pre-optimisation and graph validation into a Dataflow
`Job`. The test needs the `gcp` extra (Beam's Dataflow client), which `.[test]` installs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.stager import Stager
from memory_fs import MemoryFileSystem

import masked_shards
from masked_shards import bundled_templates

from masked_shards.cli import main
from masked_shards.config import ASSETS, DEMO_TOKENIZER as DEMO_TOKENIZER_PATH, PipelineConfig
from masked_shards.beam.job import FinalizeFn, build, for_remote_workers, plan

DEMO = ASSETS / "demo_data"
DEMO_TOKENIZER = Path(DEMO_TOKENIZER_PATH)
PORTABLE = ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"]
DATAFLOW_DRY_RUN = ["--runner=DataflowRunner", "--dry_run=True", "--project=dummy-project", "--region=us-central1", "--temp_location=gs://dummy-bucket/tmp"]
GCS_OUTPUT = "gs://dummy-bucket/out"


def _inputs(folder: Path) -> Path:
    """60 records from the demo data: 40 alpaca, 12 sharegpt and the 8 bad ones (broken JSON,
    missing fields, a special token in user text, ...), so every kind of output file is written."""
    folder.mkdir()
    for name, count in (("alpaca.jsonl", 40), ("sharegpt.jsonl", 12), ("bad_records.jsonl", 8)):
        lines = (DEMO / name).read_text(encoding="utf-8").splitlines(keepends=True)[:count]
        (folder / name).write_text("".join(lines), encoding="utf-8")
    return folder


def _files(output: Path) -> dict[str, bytes]:
    return {path.relative_to(output).as_posix(): path.read_bytes() for path in sorted(output.rglob("*")) if path.is_file()}


def test_portable_runner_writes_the_same_bytes_as_the_default_runner(tmp_path):
    inputs = _inputs(tmp_path / "in")
    args = ["run", "--smoke-test", "off", "--input", str(inputs / "*.jsonl"), "--max-length", "96", "--overlong", "drop", "--num-shards", "2", "--validation-fraction", "0.25"]
    assert main([*args, "--output", str(tmp_path / "default")]) == 0
    assert main([*args, "--output", str(tmp_path / "portable"), *PORTABLE]) == 0
    default, portable = _files(tmp_path / "default"), _files(tmp_path / "portable")
    written = set(default)
    assert {"manifest.json", "rejected/rejected.jsonl", "dropped/dropped.jsonl"} <= written
    assert {"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"} <= written
    assert any(name.startswith("data/validation-") for name in written)
    assert sorted(portable) == sorted(default)
    for name in default:
        assert portable[name] == default[name], name


@pytest.fixture
def worker_pool(tmp_path):
    """Beam's own SDK worker pool, as Flink and Spark run one beside each task manager: a separate
    process on loopback that starts an SDK worker process (`python` on PATH: this environment's,
    with the installed package) for each job environment. Yields its address and its log."""
    with socket.socket() as probe:  # a free port for it
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "worker_pool.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with log.open("wb") as out:
        pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("localhost", port)) != 0:
            assert pool.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield f"localhost:{port}", log
    finally:
        os.killpg(pool.pid, signal.SIGTERM)  # the pool and the workers it started
        pool.wait(timeout=30)


def test_sdk_workers_in_a_separate_worker_pool_write_the_same_bytes_as_the_default_runner(tmp_path, worker_pool):
    """The portable runner with `--environment_type EXTERNAL`: the job service hands every stage to
    SDK worker processes the pool started, which unpickle our DoFns from the installed package,
    load the tokenizer in their setup, and read and write through Beam's filesystems."""
    address, log = worker_pool
    inputs = _inputs(tmp_path / "in")
    args = ["run", "--smoke-test", "off", "--quiet", "--input", str(inputs / "*.jsonl"), "--max-length", "96", "--overlong", "drop", "--num-shards", "2"]
    external = ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "EXTERNAL", "--environment_config", address]
    assert main([*args, "--output", str(tmp_path / "default")]) == 0
    assert main([*args, "--output", str(tmp_path / "external"), *external]) == 0
    assert "Starting worker with command" in log.read_text()  # the stages ran in the pool's processes
    default, portable = _files(tmp_path / "default"), _files(tmp_path / "external")
    assert {"manifest.json", "rejected/rejected.jsonl", "data/train-00000-of-00002.parquet"} <= set(default)
    assert sorted(portable) == sorted(default)
    for name in default:
        assert portable[name] == default[name], name


def _top_level(proto: beam_runner_api_pb2.Pipeline) -> dict[str, beam_runner_api_pb2.PTransform]:
    """The job's own steps by label: the children of the pipeline's root transforms."""
    transforms = proto.components.transforms
    return {transforms[child].unique_name: transforms[child] for root in proto.root_transform_ids for child in transforms[root].subtransforms}


def test_dataflow_dry_run_translates_the_whole_job(tmp_path):
    """The job as the driver builds it for a gs:// output, translated for Dataflow and not submitted.

    `plan`'s start-up checks list the output prefix, which on gs:// needs Google credentials and the
    network; they run on a local folder, and the settled plan then takes the gs:// output, exactly
    what `build` receives in a real Dataflow run after those checks have passed.
    """
    local = plan(PipelineConfig(inputs=(str(_inputs(tmp_path / "in") / "*.jsonl"),), output=str(tmp_path / "out")))
    job_plan = dataclasses.replace(local, config=dataclasses.replace(local.config, output=GCS_OUTPUT))
    pipe = beam.Pipeline(options=PipelineOptions(DATAFLOW_DRY_RUN))
    build(pipe, job_plan)
    job = pipe.run().job

    from google.cloud import dataflow  # Beam's gcp extra

    assert job.proto.type_ == dataflow.JobType.JOB_TYPE_BATCH  # every PCollection bounded: no streaming job
    steps = _top_level(job.proto_pipeline)
    assert {"ReadExamples", "TokenizeExamples", "WriteShards", "WriteRejected", "WriteDropped", "ReportCoverage", "CountByFile", "Finalize"} <= set(steps)
    assert {env.urn for env in job.proto_pipeline.components.environments.values()} == {"beam:env:docker:v1"}
    finalize = beam_runner_api_pb2.ParDoPayload.FromString(steps["Finalize"].spec.payload)
    assert isinstance(pickler.loads(finalize.do_fn.payload)[0], FinalizeFn)  # what a worker unpickles
    assert len(finalize.side_inputs) == 6  # shards, runs, record files, coverage, records read, per-file count pieces


def test_a_dry_run_from_the_command_line_reads_the_tokenizer_from_the_store_and_writes_nothing(capsys):
    """`masked-shards run ... --runner DataflowRunner --dry_run=True` with input, output and
    tokenizer in an object store (`memtest://`, shaped like GCS): the start-up checks run against
    the store, the tokenizer is loaded from a local copy of its files (as a worker's setup does),
    the job is translated, and nothing is written or cleared."""
    MemoryFileSystem.objects.clear()
    MemoryFileSystem.objects["memtest://bucket/in.jsonl"] = b'{"prompt": "a", "completion": "b"}\n'
    MemoryFileSystem.objects["memtest://bucket/out/manifest.json"] = b"{}"  # an earlier run's
    for file in DEMO_TOKENIZER.iterdir():
        MemoryFileSystem.objects[f"memtest://bucket/tokenizer/{file.name}"] = file.read_bytes()
    before = dict(MemoryFileSystem.objects)
    flags = ["--input", "memtest://bucket/in.jsonl", "--output", "memtest://bucket/out", "--tokenizer", "memtest://bucket/tokenizer", "--overwrite"]
    assert main(["run", "--smoke-test", "off", *flags, *DATAFLOW_DRY_RUN]) == 0
    assert "dry run" in capsys.readouterr().out
    assert MemoryFileSystem.objects == before  # not cleared, nothing written


@pytest.mark.parametrize("flag", ["--input", "--output", "--tokenizer"])
def test_paths_on_this_machine_are_refused_for_dataflow_in_one_sentence(flag, tmp_path, capsys):
    """Dataflow's workers are other machines: a local input, output or tokenizer folder would be
    missing there, so the job refuses at start, naming the flag, before loading anything."""
    MemoryFileSystem.objects.clear()
    MemoryFileSystem.objects["memtest://bucket/in.jsonl"] = b'{"prompt": "a", "completion": "b"}\n'
    remote = {"--input": "memtest://bucket/in.jsonl", "--output": "memtest://bucket/out", "--tokenizer": "memtest://bucket/tokenizer"}
    local = {"--input": str(tmp_path / "in.jsonl"), "--output": str(tmp_path / "out"), "--tokenizer": str(DEMO_TOKENIZER)}
    flags = [item for name, path in {**remote, flag: local[flag]}.items() for item in (name, path)]
    assert main(["run", "--smoke-test", "off", *flags, *DATAFLOW_DRY_RUN]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"masked-shards: {flag} {local[flag]} is on this machine") and err.count("\n") == 0


def test_the_package_dataflow_stages_installs_and_imports_under_its_own_names(tmp_path):
    """What a Dataflow job with no packaging flags stages (`--setup_file` the checkout's
    pyproject.toml): Beam's own stager builds the sdist, a worker pip-installs it, and the code,
    templates and demo assets import as `masked_shards` (the repository's `pipeline/` folder is no
    import name of the package, so nothing on a worker image can shadow it)."""
    project = Path(masked_shards.__file__).resolve().parent.parent / "pyproject.toml"
    assert for_remote_workers(PipelineConfig(inputs=("gs://b/in.jsonl",), output="gs://b/out", tokenizer="gs://b/tok"), DATAFLOW_DRY_RUN)[-1] == f"--setup_file={project}"
    sdist = Stager._build_setup_package(str(project), str(tmp_path), None)
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), sdist], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    probe = "import masked_shards.beam.job, masked_shards.bundled_templates as t, masked_shards.config as c; print(len(list(t.TEMPLATE_DIR.glob('*.jinja'))), (c.ASSETS / 'demo_tokenizer' / 'tokenizer.json').is_file(), masked_shards.beam.job.__file__)"
    imported = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"], cwd=tmp_path, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    shown = imported.stdout.split()
    assert int(shown[0]) == len(list(Path(bundled_templates.TEMPLATE_DIR).glob("*.jinja"))) > 0
    assert shown[1] == "True" and shown[2].startswith(str(target))
    assert not (target / "pipeline").exists() and not (target / "templates").exists()
