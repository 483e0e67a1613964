"""Where a run's config comes from: the files Snakemake reads for a working directory, a profile and
``--configfile``, merged in Snakemake's order, so ``finetune-hpo`` checks and plans what Snakemake would."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finetune_hpo.config import ConfigError, check_config

# The config the Snakefile reads (``configfile:``), relative to Snakemake's working directory.
WORKFLOW_CONFIG = Path("config/config.yaml")


@dataclass(frozen=True)
class ConfigSources:
    """Where a run's config comes from, merged in the order Snakemake merges them.

    Args:
        files: YAML files, each merged onto the ones before (the working directory's config/config.yaml,
            then the profile's ``configfiles`` or the command line's ``--configfile``).
        overrides: ``KEY=VALUE`` settings merged last (Snakemake's ``--config``).
        workdir: Snakemake's working directory: relative paths in the config (data files, a local model)
            are relative to it.
    """

    files: tuple[Path, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    workdir: Path = Path(".")

    def describe(self) -> str:
        """One line: the files in merge order, as ``validate`` prints them."""
        names = [str(path) for path in self.files]
        merged = f"{names[0]}" + "".join(f", then {name} merged on top" for name in names[1:])
        where = "" if self.workdir == Path(".") else f" (working directory {self.workdir})"
        return f"config: {merged}{' and KEY=VALUE overrides' if self.overrides else ''}{where}"


def workflow_config_sources(
    *,
    directory: str | Path | None = None,
    profile: str | Path | None = None,
    configfiles: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> ConfigSources:
    """The config files Snakemake reads for ``snakemake [--profile P] [--directory D] [--configfile F...]``.

    As Snakemake 9 does: the working directory is ``directory``, else the profile's ``directory:``, else the
    current one; the Snakefile's ``configfile:`` is ``<workdir>/config/config.yaml`` (skipped when absent
    and other config files are given); the command line's ``configfiles`` (else the profile's
    ``configfiles:``, relative to the current directory) are merged onto it; the profile's ``config:``
    entries, then ``overrides``, last.

    Raises:
        ConfigError: no profile file, or no config file at all.
    """
    settings = read_profile(Path(profile)) if profile is not None else {}
    if directory is None and settings.get("directory") is not None:
        directory = settings["directory"]
    workdir = Path(directory) if directory is not None else Path(".")
    extra = [Path(path) for path in (configfiles or settings.get("configfiles") or [])]
    workflow_config = workdir / WORKFLOW_CONFIG
    files: list[Path] = []
    for path in ([workflow_config] if workflow_config.is_file() or not extra else []) + extra:
        if not files or path.resolve() != files[-1].resolve():  # a file merged onto itself changes nothing
            files.append(path)
    merged_overrides = _deep_merge(_profile_overrides(settings.get("config")), overrides or {})
    return ConfigSources(tuple(files), merged_overrides, workdir)


def read_profile(profile: Path) -> dict[str, Any]:
    """A Snakemake profile's settings (``config.yaml`` or ``profile.yaml`` in the folder, or the file).

    A scalar that names a file or folder inside the profile is taken from there, as Snakemake does.
    """
    path = profile
    if profile.is_dir():
        candidates = [profile / name for name in ("config.yaml", "profile.yaml")]
        path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
    if not path.is_file():
        raise ConfigError(f"--profile {profile}: no profile there (expected {path})")
    settings = yaml.safe_load(path.read_text()) or {}
    for key, value in settings.items():
        if isinstance(value, str):
            value = os.path.expanduser(os.path.expandvars(value))
            settings[key] = str(path.parent / value) if (path.parent / value).exists() else value
    return settings


def _profile_overrides(entries: Any) -> dict[str, Any]:
    """A profile's ``config:`` (a mapping, or ``KEY=VALUE`` strings) as overrides, values read as YAML
    (Snakemake tries int, float, bool, then YAML: the same for the values a config holds)."""
    if not entries:
        return {}
    if isinstance(entries, Mapping):
        return dict(entries)
    overrides = {}
    for entry in entries:
        key, _, value = str(entry).partition("=")
        overrides[key] = yaml.safe_load(value)
    return overrides


def load_config(
    paths: str | Path | Sequence[str | Path] | ConfigSources, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read YAML config files, each merged onto the ones before (as Snakemake merges ``--configfile`` onto
    the Snakefile's config), merge ``overrides`` on top (like Snakemake's ``--config``) and check it.

    Args:
        paths: One file, several, or :func:`workflow_config_sources`' result (which also sets the
            working directory that relative data and model paths are checked from).
        overrides: ``KEY=VALUE`` overrides, merged last.
    """
    if isinstance(paths, ConfigSources):
        sources = paths
    else:
        sources = ConfigSources(tuple(Path(path) for path in ([paths] if isinstance(paths, (str, Path)) else paths)))
    if not sources.files:
        raise ConfigError(f"{sources.workdir / WORKFLOW_CONFIG}: no config file (the Snakefile reads this one)")
    config: dict[str, Any] = {}
    for path in sources.files:
        if path == sources.workdir / WORKFLOW_CONFIG and not path.is_file():
            raise ConfigError(
                f"{path}: config file does not exist (Snakemake reads config/config.yaml in its working "
                "directory, --directory)"
            )
        config = _deep_merge(config, _read_yaml(path))
    config = _deep_merge(_deep_merge(config, sources.overrides), overrides or {})
    return check_config(config, workdir=sources.workdir)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys, not a {type(loaded).__name__}")
    return loaded


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged onto ``base``: mappings key by key, anything else replaced (Snakemake's
    ``update_config``)."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
