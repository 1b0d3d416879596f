"""Parametric templates (``trillium-template`` files) by name: the skeletons avatar assets lack.

An avatar asset embeds its mesh and blendshapes but no joints; its header names the template it was
built on (``template.name``). The service looks that name up here to pose the jaw, head and other
joints (linear blend skinning with the template's joints and weights). Templates are found once,
by their header name, in ``TRILLIUM_TEMPLATES_DIR`` (each ``*.safetensors`` directly in it or in a
sub-folder), and loaded on first use. A path recorded inside an uploaded asset is never opened: an
asset only picks a template by name among the ones the operator installed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from trillium.avatar.core.blendshapes import BlendshapeRig
from trillium.avatar.core.template_asset import load_template, read_template_info

log = logging.getLogger(__name__)


def template_files(directory: Path) -> list[Path]:
    """Every ``*.safetensors`` directly in ``directory`` or one folder below, sorted."""
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.safetensors"), *directory.glob("*/*.safetensors")])


class TemplateLibrary:
    """Thread-safe name -> :class:`BlendshapeRig` over a folder of template files (lazy, cached)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._paths: dict[str, Path] = {}
        self._rigs: dict[str, BlendshapeRig | None] = {}
        self._lock = threading.Lock()
        for path in template_files(directory) if directory is not None else []:
            try:
                name = read_template_info(path)["name"]
            except (ValueError, OSError) as error:
                log.info("skipping %s: not a template file (%s)", path.name, error)
                continue
            self._paths.setdefault(name, path)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._paths))

    def get(self, name: str) -> BlendshapeRig | None:
        """The template called ``name``, or None when absent or invalid (logged once)."""
        with self._lock:
            if name not in self._rigs:
                self._rigs[name] = self._load(name)
            return self._rigs[name]

    def _load(self, name: str) -> BlendshapeRig | None:
        path = self._paths.get(name)
        if path is None:
            return None
        try:
            return load_template(path)
        except (ValueError, OSError) as error:
            log.warning("template %r (%s) is invalid: %s", name, path.name, error)
            return None
