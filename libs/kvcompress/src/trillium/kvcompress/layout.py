"""Token layout: per-token modality and coordinates, travelling with a KV cache.

Every multimodal policy needs to know, for each prompt token, which modality it carries and where
it sits (video frame, spatial row/col, audio time step, segment). A :class:`TokenLayout` holds that
as a few integer tensors of length ``L``. Model processors build it; policies read it; when a cache
is compressed the same kept indices are applied to it with :meth:`TokenLayout.select`.

Coordinates that do not apply to a token are ``-1`` (e.g. ``row`` of a text token).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum

import torch

__all__ = ["Modality", "TokenLayout"]


class Modality(IntEnum):
    """Modality of one prompt token."""

    TEXT = 0
    IMAGE = 1
    VIDEO = 2
    AUDIO = 3

    @property
    def label(self) -> str:
        return self.name.lower()


VISUAL_MODALITIES = frozenset({Modality.IMAGE, Modality.VIDEO})
_FIELD_NAMES = ("modality", "segment", "frame", "row", "col", "time", "position")


def _as_long(name: str, value: torch.Tensor | Sequence[int]) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"{name} must hold integers, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor.to(dtype=torch.long)


@dataclass(frozen=True, eq=False)
class TokenLayout:
    """Per-token metadata of a prompt, every field an ``int64`` tensor of shape ``[L]`` (CPU unless
    moved with :meth:`to`).

    Attributes:
        modality: :class:`Modality` value per token.
        segment: index of the input segment (one text span, one image, one video, one audio clip).
        frame: frame index inside a video (0 for an image), ``-1`` for text/audio.
        row: spatial row inside the frame/image grid, ``-1`` if not visual.
        col: spatial column inside the frame/image grid, ``-1`` if not visual.
        time: time step inside an audio clip, ``-1`` if not audio.
        position: original index of the token in the prompt (kept through :meth:`select`).
    """

    modality: torch.Tensor
    segment: torch.Tensor
    frame: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    time: torch.Tensor
    position: torch.Tensor

    def __post_init__(self) -> None:
        length = None
        device = torch.as_tensor(self.modality).device
        for name in _FIELD_NAMES:
            tensor = _as_long(name, getattr(self, name)).to(device)
            object.__setattr__(self, name, tensor)
            if length is None:
                length = tensor.numel()
            elif tensor.numel() != length:
                raise ValueError(f"{name} has length {tensor.numel()}, expected {length} like modality")
        valid = {int(m) for m in Modality}
        if self.modality.numel() and not set(self.modality.unique().tolist()) <= valid:
            raise ValueError(f"modality holds values outside {sorted(valid)}")

    def __len__(self) -> int:
        return self.modality.numel()

    def __repr__(self) -> str:
        counts = ", ".join(f"{m.label}={n}" for m, n in self.counts().items() if n)
        return f"TokenLayout(L={len(self)}, {counts})"

    # ----------------------------------------------------------------- queries
    def mask(self, modality: Modality | Iterable[Modality]) -> torch.Tensor:
        """Boolean mask ``[L]`` of tokens of the given modality (or any of several)."""
        wanted = [modality] if isinstance(modality, Modality) else list(modality)
        out = torch.zeros(len(self), dtype=torch.bool, device=self.modality.device)
        for m in wanted:
            out |= self.modality == int(m)
        return out

    def counts(self) -> dict[Modality, int]:
        """Number of tokens per modality (every modality listed, zeros included)."""
        binc = torch.bincount(self.modality, minlength=len(Modality))
        return {m: int(binc[int(m)]) for m in Modality}

    def modalities(self) -> set[Modality]:
        """Modalities present in the layout."""
        return {Modality(v) for v in self.modality.unique().tolist()}

    def require(self, needed: Iterable[Modality], *, argument: str = "layout", by: str = "") -> None:
        """Raise ``ValueError`` naming ``argument`` if any of ``needed`` is absent."""
        missing = [m.label for m in needed if m not in self.modalities()]
        if missing:
            who = f" (required by {by})" if by else ""
            raise ValueError(f"{argument} has no {', '.join(missing)} tokens{who}")

    def check_length(self, length: int, *, argument: str = "layout") -> None:
        """Raise ``ValueError`` if the layout does not describe exactly ``length`` tokens."""
        if len(self) != length:
            raise ValueError(f"{argument} describes {len(self)} tokens but the prompt has {length}")

    def segment_modality(self) -> torch.Tensor:
        """``[L]`` modality with every text token of a media segment counted as that medium.

        Media segments carry text markers (``<video>``, per-frame timestamps, ``</audio>``): they
        belong to the medium they delimit, not to the prompt's text. A segment's medium is the
        largest non-text modality value in it; tokens of all-text segments stay text, and media
        tokens keep their own modality."""
        media = torch.where(self.modality == int(Modality.TEXT), -1, self.modality)
        if len(self) == 0:
            return self.modality.clone()
        segments = int(self.segment.max()) + 1
        per_segment = torch.full((segments,), -1, dtype=torch.long, device=self.modality.device)
        per_segment = per_segment.scatter_reduce(0, self.segment, media, reduce="amax")
        of_token = per_segment[self.segment]
        return torch.where((media < 0) & (of_token >= 0), of_token, self.modality)

    def unit_ids(self, audio_steps_per_unit: int = 25) -> torch.Tensor:
        """Id ``[L]`` of the merge unit of every token: one per video frame / image, one per
        ``audio_steps_per_unit`` audio steps, one per text token (text is never grouped)."""
        key_segment = self.segment * 1_000_003
        visual = self.mask(VISUAL_MODALITIES)
        audio = self.mask(Modality.AUDIO)
        unit = torch.where(visual, key_segment + self.frame, -1 - self.position)
        unit = torch.where(audio, key_segment + self.time // audio_steps_per_unit, unit)
        return torch.unique(unit, return_inverse=True)[1]

    def to_mm_token_type_ids(self) -> torch.Tensor:
        """Qwen2-VL style ``mm_token_type_ids`` ``[1, L]``: 0 text, 1 image, 2 video (audio -> 0)."""
        out = torch.zeros(len(self), dtype=torch.long, device=self.modality.device)
        out[self.mask(Modality.IMAGE)] = 1
        out[self.mask(Modality.VIDEO)] = 2
        return out.unsqueeze(0)

    # ----------------------------------------------------------------- transforms
    def to(self, device: torch.device | str) -> TokenLayout:
        """The same layout with every field on ``device``."""
        return TokenLayout(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, indices: torch.Tensor | Sequence[int]) -> TokenLayout:
        """Layout of the tokens at ``indices`` (e.g. the kept tokens of one KV head)."""
        idx = torch.as_tensor(indices, dtype=torch.long).to(self.modality.device)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self)}), got range [{idx.min()}, {idx.max()}]")
        return TokenLayout(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    # ----------------------------------------------------------------- builders
    @classmethod
    def _segment(cls, n: int, modality: Modality, **coords: torch.Tensor) -> TokenLayout:
        minus = torch.full((n,), -1, dtype=torch.long)
        values = {name: coords.get(name, minus) for name in ("frame", "row", "col", "time")}
        return cls(
            modality=torch.full((n,), int(modality), dtype=torch.long),
            segment=torch.zeros(n, dtype=torch.long),
            position=torch.arange(n),
            **values,
        )

    @classmethod
    def text(cls, n: int) -> TokenLayout:
        """``n`` text tokens."""
        _check_positive("n", n, allow_zero=True)
        return cls._segment(n, Modality.TEXT)

    @classmethod
    def image(cls, rows: int, cols: int) -> TokenLayout:
        """One image of ``rows x cols`` tokens, row-major."""
        _check_positive("rows", rows)
        _check_positive("cols", cols)
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        n = rows * cols
        return cls._segment(
            n, Modality.IMAGE, frame=torch.zeros(n, dtype=torch.long), row=r.flatten(), col=c.flatten()
        )

    @classmethod
    def video(cls, frames: int, rows: int, cols: int) -> TokenLayout:
        """A video of ``frames`` frames of ``rows x cols`` tokens, frame-major then row-major."""
        for name, v in (("frames", frames), ("rows", rows), ("cols", cols)):
            _check_positive(name, v)
        t, r, c = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
        n = frames * rows * cols
        return cls._segment(n, Modality.VIDEO, frame=t.flatten(), row=r.flatten(), col=c.flatten())

    @classmethod
    def audio(cls, n_steps: int) -> TokenLayout:
        """An audio clip of ``n_steps`` tokens, one per time step."""
        _check_positive("n_steps", n_steps)
        return cls._segment(n_steps, Modality.AUDIO, time=torch.arange(n_steps))

    @classmethod
    def concat(cls, parts: Sequence[TokenLayout]) -> TokenLayout:
        """Concatenate segments; segment ids and positions are renumbered consecutively."""
        if not parts:
            raise ValueError("parts must contain at least one layout")
        pieces: dict[str, list[torch.Tensor]] = {name: [] for name in _FIELD_NAMES}
        next_segment = 0
        for part in parts:
            for name in ("modality", "frame", "row", "col", "time"):
                pieces[name].append(getattr(part, name))
            if len(part):
                seg = part.segment - part.segment.min()
                pieces["segment"].append(seg + next_segment)
                next_segment += int(seg.max()) + 1
            else:
                pieces["segment"].append(part.segment)
        merged = {name: torch.cat(v) for name, v in pieces.items() if name != "position"}
        merged["position"] = torch.arange(merged["modality"].numel())
        return cls(**merged)

    @classmethod
    def from_qwen2_vl(
        cls,
        input_ids: torch.Tensor,
        *,
        image_token_id: int | None = None,
        video_token_id: int | None = None,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        spatial_merge_size: int = 2,
    ) -> TokenLayout:
        """Layout of a Qwen2-VL / Qwen2.5-VL prompt (``input_ids`` ``[L]`` or ``[1, L]``).

        Each run of image (video) placeholder tokens is matched, in order, to a row ``(t, h, w)`` of
        ``image_grid_thw`` (``video_grid_thw``); the grid is divided by ``spatial_merge_size`` like
        the model's patch merger does.
        """
        ids = input_ids.reshape(-1).cpu()
        parts: list[TokenLayout] = []
        grids = {
            image_token_id: (
                list(image_grid_thw.tolist()) if image_grid_thw is not None else [],
                Modality.IMAGE,
            ),
            video_token_id: (
                list(video_grid_thw.tolist()) if video_grid_thw is not None else [],
                Modality.VIDEO,
            ),
        }
        start = 0
        while start < ids.numel():
            tok = int(ids[start])
            end = start + 1
            while end < ids.numel() and int(ids[end]) == tok:
                end += 1
            if tok in grids and tok is not None:
                queue, modality = grids[tok]
                if not queue:
                    raise ValueError(f"input_ids has more {modality.label} runs than grid_thw rows")
                t, h, w = (int(v) for v in queue.pop(0))
                h, w = h // spatial_merge_size, w // spatial_merge_size
                frames = t if modality == Modality.VIDEO else 1
                if frames * h * w != end - start:
                    raise ValueError(
                        f"grid_thw ({t}, {h * spatial_merge_size}, {w * spatial_merge_size}) gives "
                        f"{frames * h * w} tokens but input_ids has {end - start} {modality.label} tokens"
                    )
                part = cls.video(frames, h, w) if modality == Modality.VIDEO else cls.image(h, w)
                parts.append(part)
            else:
                parts.append(cls.text(end - start))
            start = end
        return cls.concat(parts)


def _check_positive(name: str, value: int, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be an integer >= {0 if allow_zero else 1}, got {value!r}")
