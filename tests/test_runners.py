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
from pathlib import Path

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from masked_shards.cli import main
from masked_shards.config import ASSETS, PipelineConfig
from masked_shards.job import FinalizeFn, build, plan

DEMO = ASSETS / "demo_data"
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
    args = ["run", "--input", str(inputs / "*.jsonl"), "--max-length", "96", "--overlong", "drop", "--num-shards", "2", "--validation-fraction", "0.25"]
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
    assert {"ReadExamples", "TokenizeExamples", "WriteShards", "WriteRejected", "WriteDropped", "ReportCoverage", "Finalize"} <= set(steps)
    assert {env.urn for env in job.proto_pipeline.components.environments.values()} == {"beam:env:docker:v1"}
    finalize = beam_runner_api_pb2.ParDoPayload.FromString(steps["Finalize"].spec.payload)
    assert isinstance(pickler.loads(finalize.do_fn.payload)[0], FinalizeFn)  # what a worker unpickles
    assert len(finalize.side_inputs) == 5  # shards, runs, record files, coverage, records read


def test_a_dry_run_from_the_command_line_submits_and_writes_nothing(tmp_path, capsys):
    """`masked-shards run ... --runner DataflowRunner --dry_run=True`: the start-up checks and the
    translation run, and no report is read back from a job that never ran."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text("{}", encoding="utf-8")  # an earlier run's
    assert main(["run", "--input", str(source), "--output", str(tmp_path / "out"), "--overwrite", *DATAFLOW_DRY_RUN]) == 0
    assert "dry run" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["manifest.json"]  # not cleared, nothing written
