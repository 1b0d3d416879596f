"""The av-tiny processor: raw frames, PCM audio and text -> token ids, auxiliary ids and a kvcompress layout.

Prompt format (one token per item)::

    <bos> <text> w w ... </text>
    <video> <tK> v v ... v  <tK+1> v ... </video>      # per frame: timestamp, rows x cols patch codes
    <audio> <tK> a a  <tK+1> a a ... </audio>         # per step: timestamp, audio-window codes
    <question> w w ... <subject> <answer>

Patch codes and audio codes are k-means codebook indices (see :mod:`.codebook`, :mod:`.features`);
the timestamps ``<tK>`` are shared by video and audio (frame ``k`` and audio step ``k`` cover the
same time), like the textual timestamps of video LLMs.

**Factorised input embeddings** (our design choice, see :func:`~.model.embed_inputs`). Beside
``input_ids`` the processor returns ``aux_ids [1, L, 5]``: up to five more vocabulary ids per position
whose embeddings are *added* to the token's own embedding (-1 = none):

- channel 0, time: media tokens carry their timestamp token ``<tK>`` — a temporal position
  embedding as in ViViT (Arnab et al. 2021), tied to the textual timestamp so that "at ``<t7>``"
  and the frame shown at ``<t7>`` share one vector;
- channels 1-2, row / column: video patches carry ``<rI>`` and ``<cJ>`` — ViT-style factorised 2D
  position embeddings (Dosovitskiy et al. 2021);
- channels 3-4, previous tokens: text-passage tokens and the ``<answer>`` slot carry the ids of the
  two tokens before them — the "smeared key" / token-shift of Olsson et al. 2022 ("In-context
  learning and induction heads", who show it removes the long plateau before induction heads form),
  widened to two tokens like the short causal convolutions of H3 (Fu et al. 2023). The second token
  lets the answer slot see the question's subject *and* the word before it (``at <t7>`` for video,
  ``during <t7>`` for audio), so a first-layer head can match time within the asked modality; with one
  token, a trained model's first layer matched time on video patches only (audio recall plateaued at
  about 40%). It is applied at the embedding, so the decoder stays an unmodified transformers model.

Without them a 0.5M-parameter decoder trained for an hour on 2 CPU cores never left the plateau
(about chance accuracy after 1,300 steps); with them every lookup the questions need is one
attention hop from the answer slot (cross-modal answers take one hop per answer token). Generated
tokens carry no auxiliary ids, so decoding feeds plain ``input_ids``.

The layout is built with :class:`TokenLayout`'s own constructor (per-token fields), because the
convenience builders ``TokenLayout.video/audio`` cannot interleave marker tokens inside a segment
with the right frame/time coordinates. Segments: 0 text passage, 1 video, 2 audio, 3 question.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.models.av_tiny.codebook import assign_codes
from trillium.models.av_tiny.features import (
    FeatureConfig,
    log_mel_frames,
    patch_features,
    pcm_to_float,
    resample,
)
from trillium.models.avqa import (
    COLOURS,
    FACT_KEYS,
    FACT_VALUES,
    MAX_TIMESTAMP,
    NUMBER_WORDS,
    SHAPES,
    SOUNDS,
    object_word,
)

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>", "<unk>", "<text>", "</text>", "<video>", "</video>",
    "<audio>", "</audio>", "<question>", "<answer>",
)  # fmt: skip
TEMPLATE_WORDS: tuple[str, ...] = (
    "the", "is", ".", "?", "what", "object", "was", "at", "which", "sound", "played", "colour",
    "when", "sounded", "how", "many", "times", "did", "nothing", "silence", "during",
)  # fmt: skip
AUX_CHANNELS: tuple[str, ...] = ("time", "row", "col", "previous", "previous2")
NO_AUX = -1
MAX_GRID = 16
PROCESSOR_CONFIG = "processor_config.json"
CODEBOOKS = "codebooks.safetensors"


def default_words() -> list[str]:
    """Every word of AVQA-synth (templates, colours, shapes, objects, sounds, numbers, fact keys/values)."""
    objects = tuple(object_word(colour, shape) for colour in COLOURS for shape in SHAPES)
    groups = (TEMPLATE_WORDS, tuple(COLOURS), SHAPES, objects, SOUNDS, NUMBER_WORDS, FACT_KEYS, FACT_VALUES)
    return list(dict.fromkeys(w for group in groups for w in group))


@dataclass
class AVInputs:
    """Model inputs of one prompt.

    Attributes:
        input_ids: ``[1, L]`` token ids.
        aux_ids: ``[1, L, 5]`` auxiliary ids whose embeddings are added (time, row, column,
            previous token, the token before that; -1 = none), see the module docstring.
        layout: kvcompress :class:`TokenLayout` of the ``L`` tokens.
        question_start: index of the first token of the question segment (``<question>``).
    """

    input_ids: torch.Tensor
    aux_ids: torch.Tensor
    layout: TokenLayout
    question_start: int


class _LayoutBuilder:
    """Accumulates tokens and their layout fields segment by segment."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.aux: list[list[int]] = []
        self.fields: dict[str, list[int]] = {
            n: [] for n in ("modality", "segment", "frame", "row", "col", "time")
        }

    def add(
        self,
        token: int,
        segment: int,
        modality: Modality = Modality.TEXT,
        aux: tuple[int, ...] = (NO_AUX,) * len(AUX_CHANNELS),
        **coords: int,
    ) -> None:
        self.ids.append(token)
        self.aux.append(list(aux))
        self.fields["modality"].append(int(modality))
        self.fields["segment"].append(segment)
        for name in ("frame", "row", "col", "time"):
            self.fields[name].append(coords.get(name, -1))

    def add_shifted(self, token: int, segment: int) -> None:
        """Add a text token that carries the ids of the two tokens before it (channels 3-4)."""
        before = self.ids[-2] if len(self.ids) > 1 else NO_AUX
        self.add(token, segment, aux=(NO_AUX, NO_AUX, NO_AUX, self.ids[-1], before))

    def build(self) -> tuple[torch.Tensor, torch.Tensor, TokenLayout]:
        fields = {name: torch.tensor(values, dtype=torch.long) for name, values in self.fields.items()}
        layout = TokenLayout(position=torch.arange(len(self.ids)), **fields)
        aux = torch.tensor([self.aux], dtype=torch.long).reshape(1, len(self.ids), len(AUX_CHANNELS))
        return torch.tensor([self.ids], dtype=torch.long), aux, layout


class AVTinyProcessor:
    """Turns RGB frames, PCM audio and text into av-tiny ``input_ids`` plus a :class:`TokenLayout`.

    Args:
        video_codebook: ``[K_v, video_dim]`` k-means centroids of patch features.
        audio_codebook: ``[K_a, n_mels]`` k-means centroids of log-mel frames.
        features: feature hyperparameters.
        audio_tokens_per_step: audio windows per video frame (one timestamp marker per step).
        words: text vocabulary (lower-case words); unknown words map to ``<unk>``.
        max_timestamp: number of timestamp markers ``<t0> .. <t{max_timestamp-1}>``.
    """

    def __init__(
        self,
        video_codebook: torch.Tensor,
        audio_codebook: torch.Tensor,
        features: FeatureConfig | None = None,
        *,
        audio_tokens_per_step: int = 2,
        words: Sequence[str] | None = None,
        max_timestamp: int = MAX_TIMESTAMP,
    ) -> None:
        self.features = features or FeatureConfig()
        if video_codebook.ndim != 2 or video_codebook.shape[1] != self.features.video_dim:
            raise ValueError(
                f"video_codebook must be [K, {self.features.video_dim}], got {tuple(video_codebook.shape)}"
            )
        if audio_codebook.ndim != 2 or audio_codebook.shape[1] != self.features.n_mels:
            raise ValueError(
                f"audio_codebook must be [K, {self.features.n_mels}], got {tuple(audio_codebook.shape)}"
            )
        if audio_tokens_per_step < 1:
            raise ValueError(f"audio_tokens_per_step must be >= 1, got {audio_tokens_per_step}")
        self.video_codebook = video_codebook.float().contiguous()
        self.audio_codebook = audio_codebook.float().contiguous()
        self.audio_tokens_per_step = audio_tokens_per_step
        self.words = list(words) if words is not None else default_words()
        self.max_timestamp = max_timestamp
        self.vocab: list[str] = (
            list(SPECIAL_TOKENS)
            + self.words
            + [f"<t{k}>" for k in range(max_timestamp)]
            + [f"<v{k}>" for k in range(video_codebook.shape[0])]
            + [f"<a{k}>" for k in range(audio_codebook.shape[0])]
            + [f"<r{k}>" for k in range(MAX_GRID)]
            + [f"<c{k}>" for k in range(MAX_GRID)]
        )
        self.token_to_id = {tok: i for i, tok in enumerate(self.vocab)}
        self.video_code_offset = self.token_to_id["<v0>"]
        self.audio_code_offset = self.token_to_id["<a0>"]

    # ----------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_id(self, token: str) -> int:
        """Id of one vocabulary entry (``<unk>`` if unknown)."""
        return self.token_to_id.get(token, self.token_to_id["<unk>"])

    def encode_text(self, text: str) -> list[int]:
        """Ids of a whitespace-tokenised, lower-cased text."""
        return [self.token_id(word) for word in text.lower().split()]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Tokens of ``ids``, stopping at the first ``<eos>``."""
        out = []
        for i in torch.as_tensor(ids).reshape(-1).tolist():
            token = self.vocab[i] if 0 <= i < len(self.vocab) else "<unk>"
            if token == "<eos>":
                break
            out.append(token)
        return out

    # ----------------------------------------------------------------- media -> codes
    def video_codes(self, frames: np.ndarray | Sequence[np.ndarray | bytes]) -> torch.Tensor:
        """Codebook index ``[T, rows, cols]`` of every patch of RGB ``frames`` (uint8 arrays or PNG bytes)."""
        array = _frames_to_array(frames)
        feats = patch_features(array, self.features)
        t, rows, cols, dim = feats.shape
        codes = assign_codes(torch.from_numpy(feats.reshape(-1, dim)), self.video_codebook)
        return codes.reshape(t, rows, cols)

    def audio_codes(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Codebook index ``[N]`` of every audio window of PCM ``audio`` (int16 or float)."""
        wave = resample(pcm_to_float(audio), sample_rate, self.features.sample_rate)
        mels = log_mel_frames(wave, self.features)
        return assign_codes(torch.from_numpy(mels), self.audio_codebook)

    # ----------------------------------------------------------------- prompt
    def __call__(
        self,
        *,
        text: str = "",
        frames: np.ndarray | Sequence[np.ndarray | bytes] | None = None,
        audio: np.ndarray | None = None,
        sample_rate: int | None = None,
        question: str = "",
        first_timestamp: int = 0,
    ) -> AVInputs:
        """Build the prompt of one request.

        Args:
            text: text passage (may be empty).
            frames: video, ``uint8 [T, H, W, 3]`` or a list of such frames / PNG bytes.
            audio: PCM ``[N]`` (int16 or float in [-1, 1]) aligned with the video's clock.
            sample_rate: sample rate of ``audio`` in Hz (required with ``audio``).
            question: the question; the prompt ends with ``<answer>``.
            first_timestamp: timestamp of the first frame / audio step.
        """
        if audio is not None and sample_rate is None:
            raise ValueError("sample_rate is required when audio is given")
        builder = _LayoutBuilder()
        builder.add(self.token_id("<bos>"), 0)
        for tok in [self.token_id("<text>"), *self.encode_text(text), self.token_id("</text>")]:
            builder.add_shifted(tok, 0)
        if frames is not None:
            self._add_video(builder, self.video_codes(frames), first_timestamp)
        if audio is not None:
            self._add_audio(builder, self.audio_codes(audio, int(sample_rate)), first_timestamp)
        question_start = len(builder.ids)
        ids, aux = self.question_tokens(question)
        for tok, extra in zip(ids, aux, strict=True):
            builder.add(tok, 3, aux=extra)
        input_ids, aux_ids, layout = builder.build()
        return AVInputs(input_ids, aux_ids, layout, question_start)

    def question_tokens(self, question: str) -> tuple[list[int], list[tuple[int, ...]]]:
        """Ids and auxiliary ids of ``<question> words... <answer>``; the ``<answer>`` slot carries
        the question's last two words (its subject and the word before it) as previous-token ids."""
        ids = [self.token_id("<question>"), *self.encode_text(question), self.token_id("<answer>")]
        before = ids[-3] if len(ids) > 2 else NO_AUX
        aux = [(NO_AUX,) * len(AUX_CHANNELS)] * (len(ids) - 1) + [(NO_AUX, NO_AUX, NO_AUX, ids[-2], before)]
        return ids, aux

    def _timestamp(self, timestamp: int) -> int:
        if not 0 <= timestamp < self.max_timestamp:
            raise ValueError(f"first_timestamp + steps must stay below {self.max_timestamp}, got {timestamp}")
        return self.token_id(f"<t{timestamp}>")

    def _add_video(self, builder: _LayoutBuilder, codes: torch.Tensor, first_timestamp: int) -> None:
        if codes.shape[1] > MAX_GRID or codes.shape[2] > MAX_GRID:
            raise ValueError(
                f"frames must be at most {MAX_GRID} patches per side, got {codes.shape[1]}x{codes.shape[2]}"
            )
        builder.add(self.token_id("<video>"), 1)
        for frame in range(codes.shape[0]):
            stamp = self._timestamp(first_timestamp + frame)
            builder.add(stamp, 1)
            for row in range(codes.shape[1]):
                for col in range(codes.shape[2]):
                    code = self.video_code_offset + int(codes[frame, row, col])
                    aux = (stamp, self.token_id(f"<r{row}>"), self.token_id(f"<c{col}>"), NO_AUX, NO_AUX)
                    builder.add(code, 1, Modality.VIDEO, aux, frame=frame, row=row, col=col)
        builder.add(self.token_id("</video>"), 1)

    def _add_audio(self, builder: _LayoutBuilder, codes: torch.Tensor, first_timestamp: int) -> None:
        builder.add(self.token_id("<audio>"), 2)
        for index, code in enumerate(codes.tolist()):
            stamp = self._timestamp(first_timestamp + index // self.audio_tokens_per_step)
            if index % self.audio_tokens_per_step == 0:
                builder.add(stamp, 2)
            aux = (stamp, NO_AUX, NO_AUX, NO_AUX, NO_AUX)
            builder.add(self.audio_code_offset + code, 2, Modality.AUDIO, aux, time=index)
        builder.add(self.token_id("</audio>"), 2)

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``processor_config.json`` and ``codebooks.safetensors`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "processor_class": type(self).__name__,
            "features": asdict(self.features),
            "audio_tokens_per_step": self.audio_tokens_per_step,
            "words": self.words,
            "max_timestamp": self.max_timestamp,
        }
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file({"video": self.video_codebook, "audio": self.audio_codebook}, str(directory / CODEBOOKS))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AVTinyProcessor:
        """Load a processor written by :meth:`save_pretrained`."""
        directory = Path(directory)
        if not (directory / PROCESSOR_CONFIG).is_file():
            raise ValueError(f"directory {directory} holds no {PROCESSOR_CONFIG}")
        config = json.loads((directory / PROCESSOR_CONFIG).read_text())
        books = load_file(str(directory / CODEBOOKS))
        return cls(
            books["video"],
            books["audio"],
            FeatureConfig(**config["features"]),
            audio_tokens_per_step=config["audio_tokens_per_step"],
            words=config["words"],
            max_timestamp=config["max_timestamp"],
        )


def _frames_to_array(frames: np.ndarray | Sequence[np.ndarray | bytes]) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` from an array or a list of arrays / PNG (or any PIL-readable) bytes."""
    if isinstance(frames, np.ndarray):
        array = frames
    else:
        decoded = []
        for frame in frames:
            if isinstance(frame, bytes | bytearray):
                frame = np.asarray(Image.open(io.BytesIO(frame)).convert("RGB"))
            decoded.append(np.asarray(frame))
        if not decoded:
            raise ValueError("frames must contain at least one frame")
        array = np.stack(decoded)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {array.dtype} {array.shape}")
    return array
