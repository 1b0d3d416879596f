"""The in-memory avatar registry: assets found under a directory at warm-up, plus uploads."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from trillium.avatar.core import load_asset
from trillium.avatar.service.scene import LoadedAvatar, loaded_avatar
from trillium.avatar.service.templates import TemplateLibrary
from trillium.servicekit.errors import AlreadyExistsError, NotFoundError, ValidationError

log = logging.getLogger(__name__)


def parse_asset(
    avatar_id: str,
    display_name: str,
    data: bytes,
    field: str = "chunk.data",
    templates: TemplateLibrary | None = None,
) -> LoadedAvatar:
    """Validate asset bytes with ``load_asset``; a corrupt file raises ValidationError naming the problem.
    ``templates`` supplies the skeleton of the template the asset names (see ``scene.py``)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "avatar.safetensors"
        path.write_bytes(data)
        try:
            asset = load_asset(path)
            return loaded_avatar(avatar_id, display_name, asset, data, templates)
        except (ValueError, KeyError, RuntimeError) as error:
            message = str(error).replace(str(path), "asset")
            raise ValidationError(field, f"not a valid avatar asset: {message}") from error


def discover(directory: Path) -> list[tuple[str, Path]]:
    """(avatar id, file) for every ``*.safetensors`` directly in ``directory`` or one level below."""
    if not directory.is_dir():
        return []
    found = [(path.stem, path) for path in sorted(directory.glob("*.safetensors"))]
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.safetensors"))
        if len(files) == 1:
            found.append((folder.name, files[0]))
    return found


class AvatarRegistry:
    """Thread-safe id -> :class:`LoadedAvatar`; ``templates`` give avatars their skeletons."""

    def __init__(self, templates: TemplateLibrary | None = None) -> None:
        self.templates = templates
        self._avatars: dict[str, LoadedAvatar] = {}
        self._lock = threading.Lock()

    def load_directory(self, directory: Path) -> list[str]:
        """Register every valid asset under ``directory``; other safetensors files are skipped and logged."""
        loaded = []
        for avatar_id, path in discover(directory):
            try:
                data = path.read_bytes()
                avatar = parse_asset(avatar_id, avatar_id, data, str(path.name), self.templates)
            except ValidationError as error:
                log.info("skipping %s: %s", path.name, error)
                continue
            self.add(avatar, replace=True)
            loaded.append(avatar_id)
        return loaded

    def add(self, avatar: LoadedAvatar, replace: bool) -> None:
        with self._lock:
            if avatar.avatar_id in self._avatars and not replace:
                raise AlreadyExistsError(
                    f"avatar {avatar.avatar_id!r} exists; set replace to overwrite", field="header.avatar_id"
                )
            self._avatars[avatar.avatar_id] = avatar

    def get(self, avatar_id: str, field: str = "avatar_id") -> LoadedAvatar:
        with self._lock:
            avatar = self._avatars.get(avatar_id)
        if avatar is None:
            raise NotFoundError(f"no avatar {avatar_id!r}", field=field)
        return avatar

    def __contains__(self, avatar_id: str) -> bool:
        with self._lock:
            return avatar_id in self._avatars

    def all(self) -> list[LoadedAvatar]:
        with self._lock:
            return [self._avatars[key] for key in sorted(self._avatars)]
