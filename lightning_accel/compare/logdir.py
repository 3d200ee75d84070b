"""The comparison's folder: one TensorBoard run per recipe, kept across runs of the command.

`compare.json` holds the settings that decide the numbers; a later run with other settings is
refused, one with the same settings keeps the recipes already complete and trains the others. A
recipe trains into `<name>.incomplete/` and becomes `<name>/`, with its `result.json`, only once
it has finished, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import CompareError
from .files import read_json, write_json
from .report import RecipeResult

SETTINGS_FILE = "compare.json"
RESULT_FILE = "result.json"
FORMAT_VERSION = 1


def _describe(settings: dict[str, Any], stored: dict[str, Any]) -> str:
    differing = [key for key in settings if settings[key] != stored.get(key)]
    differing += [key for key in stored if key not in settings]
    return ", ".join(
        f"{key} {stored.get(key)} (this command: {settings.get(key)})" for key in differing
    )


class ComparisonLog:
    """The files of one comparison under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def run_dir(self, name: str) -> Path:
        return self.root / name

    def staging_dir(self, name: str) -> Path:
        return self.root / f"{name}.incomplete"

    def _replaced_dir(self, name: str) -> Path:
        return self.root / f".{name}.replaced"

    # ----------------------------------------------------------------------------- checks

    def check_writable(self) -> None:
        """A one-line `CompareError` unless `root` is, or can be made, a writable folder."""
        path = self.root
        if path.exists() and not path.is_dir():
            raise CompareError(f"--logdir: {path} is a file, not a folder")
        existing = path.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise CompareError(f"--logdir: cannot create {path}: {existing} is a file")
        try:  # access() says yes to root everywhere; only a real write tells
            os.rmdir(tempfile.mkdtemp(prefix=".lightning-accel-", dir=existing))
        except OSError as exc:
            action = "write in" if existing == path.absolute() else "create"
            raise CompareError(
                f"--logdir: cannot {action} {path}: {existing} is not writable ({exc.strerror})"
            ) from None

    def check_settings(self, settings: dict[str, Any], recipes: Iterable[str]) -> None:
        """A one-line `CompareError` if `root` holds a comparison made with other settings."""
        file = self.root / SETTINGS_FILE
        if not file.exists():
            found = [n for n in recipes if self.run_dir(n).exists() or self.staging_dir(n).exists()]
            if found:
                raise CompareError(
                    f"--logdir: {self.root} holds runs for {', '.join(found)} but no "
                    f"{SETTINGS_FILE} (made by an older version?); choose another --logdir"
                )
            return
        try:
            stored = read_json(file)["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CompareError(f"--logdir: cannot read {file}: {exc}") from None
        settings = json.loads(json.dumps(settings))  # as it would be stored
        if settings != stored:
            raise CompareError(
                f"--logdir: {self.root} holds a comparison made with {_describe(settings, stored)};"
                " run with those settings to resume or add recipes, or choose another --logdir"
            )

    # ----------------------------------------------------------------------------- writes

    def create(self, settings: dict[str, Any], recipes: Iterable[str]) -> None:
        """Make the folder and its settings file; finish a replacement an earlier run left."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CompareError(f"--logdir: cannot create {self.root}: {exc.strerror}") from None
        if not (self.root / SETTINGS_FILE).exists():
            write_json(self.root / SETTINGS_FILE, {"version": FORMAT_VERSION, "settings": settings})
        for name in recipes:
            replaced = self._replaced_dir(name)
            if replaced.exists():  # stopped between the two renames of `commit`
                if self.run_dir(name).exists():
                    shutil.rmtree(replaced)
                else:
                    replaced.rename(self.run_dir(name))

    def completed(self, recipes: Iterable[str]) -> dict[str, RecipeResult]:
        """The results of the recipes that finished, in the order of `recipes`."""
        results = {}
        for name in recipes:
            file = self.run_dir(name) / RESULT_FILE
            if not file.exists():
                continue
            try:
                results[name] = RecipeResult.from_dict(read_json(file))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CompareError(
                    f"--logdir: cannot read {file} ({exc}); delete {self.run_dir(name)} to "
                    "train that recipe again"
                ) from None
        return results

    def start(self, name: str) -> Path:
        """The empty folder `name` trains into (what an interrupted run left there is dropped)."""
        staging = self.staging_dir(name)
        if staging.exists():
            shutil.rmtree(staging)
        return staging

    def commit(self, result: RecipeResult) -> Path:
        """Mark `result`'s run complete: its `result.json`, then its folder under its own name
        (replacing an earlier complete run of it, which is kept until the new one is in place)."""
        name = result.name
        staging, final, replaced = (
            self.staging_dir(name),
            self.run_dir(name),
            self._replaced_dir(name),
        )
        staging.mkdir(parents=True, exist_ok=True)
        write_json(staging / RESULT_FILE, result.to_dict())
        if final.exists():
            if replaced.exists():
                shutil.rmtree(replaced)
            final.rename(replaced)
        staging.rename(final)
        if replaced.exists():
            shutil.rmtree(replaced)
        return final
