"""``csmae`` sets OMP_WAIT_POLICY=PASSIVE before torch loads when the machine is already busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

PROBE = """
import json, os, sys
os.getloadavg = lambda: (float(sys.argv[1]), 0.0, 0.0)
if sys.argv[2] == "torch-first":
    import torch  # noqa: F401
from csmae.cli.openmp import calm_openmp_when_busy
said = calm_openmp_when_busy()
print(json.dumps({"said": said, "policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _probe(load: float, *, env: dict[str, str] | None = None, order: str = "csmae-first") -> dict:
    e = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    e.update(env or {}, PYTHONPATH=SRC)
    out = subprocess.run([sys.executable, "-c", PROBE, str(load), order], env=e, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_busy_machine_gets_passive_openmp_threads():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = _probe(cpus + 0.5)
    assert busy["policy"] == "PASSIVE" and "OMP_WAIT_POLICY=PASSIVE" in busy["said"]
    idle = _probe(cpus - 0.5)
    assert idle == {"said": None, "policy": None}


def test_the_users_setting_and_an_already_loaded_torch_are_left_alone():
    assert _probe(99.0, env={"OMP_WAIT_POLICY": "ACTIVE"}) == {"said": None, "policy": "ACTIVE"}
    assert _probe(99.0, order="torch-first") == {"said": None, "policy": None}  # too late to matter


def test_the_cli_does_not_load_torch_before_it_decides():
    code = "import sys; import csmae.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
