"""Sample images shipped by dependencies (real DICOM slices from pydicom), listed in resources/samples.json."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from .paths import resources_dir


class SampleNotAvailableError(RuntimeError):
    """The package that ships a sample is not installed."""


@dataclass(frozen=True)
class Sample:
    key: str
    title: str
    package: str
    resource: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the slice
    target: str

    def path(self) -> Path:
        """Location of the file inside its package (found without importing the package)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise SampleNotAvailableError(f"sample '{self.key}' needs the '{self.package}' package")
        path = Path(next(iter(spec.submodule_search_locations))) / self.resource
        if not path.is_file():
            raise SampleNotAvailableError(f"sample file {self.resource} is missing from '{self.package}'")
        return path


def list_samples() -> list[Sample]:
    data = json.loads((resources_dir() / "samples.json").read_text())
    return [
        Sample(key, d["title"], d["package"], d["resource"], tuple(d["box"]), d["target"])  # type: ignore[arg-type]
        for key, d in data.items()
    ]


def get_sample(key: str) -> Sample:
    for s in list_samples():
        if s.key == key:
            return s
    raise KeyError(f"unknown sample '{key}'")
