"""`spillover run --executor ray` with bad options: one clean error (exit 2) before anything is written, and
never a Ray cluster started or waited on for minutes."""

from __future__ import annotations

import socket
import sys

import pytest
from tests.bad_input.conftest import expect_rejected, read_yaml, write_yaml

from spillover.cli import main
from spillover.engine.ray_executor import RayOptions
from spillover.errors import SpilloverError
from spillover.studies.run import load_study, run_study


def _reject(folder, capsys, flags: list[str], *needles: str) -> str:
    return expect_rejected(["run", str(folder / "study.yaml"), *flags], folder / "out", capsys, *needles)


def test_ray_not_installed_names_the_extra(base_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    _reject(
        base_dir(),
        capsys,
        ["--executor", "ray"],
        "--executor ray needs the ray package",
        "pip install 'spillover[ray]'",
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        (f"127.0.0.1:{_closed_port()}", "no Ray cluster answers there"),
        ("headnode", "expected host:port, auto or ray://host:port"),
        ("headnode:port", "expected host:port"),
    ],
)
def test_bad_address_fails_in_seconds(base_dir, capsys, address, needle):
    _reject(base_dir(), capsys, ["--executor", "ray", "--address", address], f"--address {address}", needle)


def test_ray_options_need_the_ray_executor(base_dir, capsys):
    folder = base_dir()
    _reject(folder, capsys, ["--address", "auto"], "--address: only with --executor ray")
    _reject(
        folder,
        capsys,
        ["--executor", "local", "--cpus-per-job", "2", "--gpus-per-job", "1"],
        "--cpus-per-job, --gpus-per-job: only with --executor ray",
    )


@pytest.mark.parametrize(
    "flags",
    [
        ["--executor", "dask"],
        ["--executor", "ray", "--cpus-per-job", "0"],
        ["--executor", "ray", "--cpus-per-job", "1.5"],
        ["--executor", "ray", "--gpus-per-job", "-1"],
        ["--executor", "ray", "--gpus-per-job", "nan"],
    ],
)
def test_bad_flag_values_are_usage_errors(base_dir, capsys, flags):
    folder = base_dir()
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(folder / "study.yaml"), *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flags[-2]}:" in err and flags[-1] in err, err
    assert not (folder / "out").exists()


def test_cuda_device_needs_gpus_per_job(base_dir, capsys):
    folder = base_dir()
    spec = read_yaml(folder / "study.yaml")
    write_yaml(folder / "study.yaml", {**spec, "device": "cuda"})
    _reject(folder, capsys, ["--executor", "ray"], "device = 'cuda'", "--gpus-per-job")


def test_library_checks_executor_name_and_options(base_dir):
    kind, spec = load_study(base_dir() / "study.yaml")
    with pytest.raises(SpilloverError, match="unknown executor 'rays'; did you mean 'ray'.* local, ray"):
        run_study(kind, spec, executor="rays")
    with pytest.raises(SpilloverError, match="need executor 'ray'"):
        run_study(kind, spec, ray=RayOptions(cpus_per_job=2))
    with pytest.raises(ValueError, match="cpus_per_job"):
        RayOptions(cpus_per_job=0)
    with pytest.raises(ValueError, match="extra"):
        RayOptions(workers=3)
    assert not __import__("pathlib").Path(spec.output_dir).exists()
