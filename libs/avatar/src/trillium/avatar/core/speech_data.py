"""Aligned (speech, mouth motion) training data synthesised offline with espeak-ng.

Yu et al.'s GaussianTalker (arXiv 2404.14037) trains its Speaker-specific Motion Translator on
tracked talking-head videos, which we do not ship. Instead (our design choice) we synthesise speech
with espeak-ng for several "speakers" (voice, variant, rate, pitch), read its phoneme events through
the C library (``libespeak-ng.so.1`` via ``ctypes``: ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS,
buflength, NULL, espeakINITIALIZE_PHONEME_EVENTS)``, a synth callback, events of type 7 carry the
onset ``audio_position`` in ms and the mnemonic in ``id``), and turn the phonemes into target mouth
motion with :mod:`trillium.avatar.core.visemes`. Each speaker also has an
:class:`~trillium.avatar.core.visemes.ArticulationStyle`, the speaker-specific part the motion
decoder has to learn from its speaker embedding.

Audio is resampled from espeak's 22,050 Hz to 16 kHz; targets are at 25 fps, frame ``f`` at time
``f / 25`` s, ``ceil(N16 / 640)`` frames. Datasets are cached as ``.npz`` keyed by their content.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import hashlib
import json
import random
import threading
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from trillium.avatar.core.audio import SAMPLE_RATE, num_video_frames, resample
from trillium.avatar.core.visemes import ArticulationStyle, PhonemeEvent, motion_track

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
DATASET_VERSION = 1


@dataclass(frozen=True)
class SpeakerVoice:
    """An espeak-ng voice and the articulation style of the face it drives.

    Attributes:
        name: label.
        speaker_id: which speaker embedding (avatar) this voice belongs to.
        voice: espeak-ng voice, e.g. ``"en-us"`` or ``"en"``.
        variant: espeak-ng variant, e.g. ``"m3"`` or ``"f2"`` (``""`` for none).
        rate: words per minute (80-450).
        pitch: base pitch 0-100.
        style: mouth-motion style of this speaker.
    """

    name: str
    speaker_id: int
    voice: str = "en-us"
    variant: str = ""
    rate: int = 165
    pitch: int = 50
    style: ArticulationStyle = field(default_factory=ArticulationStyle)

    def __post_init__(self) -> None:
        if not 80 <= self.rate <= 450:
            raise ValueError(f"rate must be in [80, 450] words per minute, got {self.rate}")
        if not 0 <= self.pitch <= 100:
            raise ValueError(f"pitch must be in [0, 100], got {self.pitch}")
        if self.speaker_id < 0:
            raise ValueError(f"speaker_id must be >= 0, got {self.speaker_id}")

    @property
    def espeak_name(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


def training_speakers() -> tuple[SpeakerVoice, ...]:
    """Six speakers (ids 0-5) with distinct voices and articulation styles."""
    return (
        SpeakerVoice("s0-us-m1", 0, "en-us", "m1", 160, 45, ArticulationStyle()),
        SpeakerVoice("s1-us-f2", 1, "en-us", "f2", 175, 65, ArticulationStyle(jaw_gain=1.3, smile_bias=0.1)),
        SpeakerVoice("s2-gb-m3", 2, "en", "m3", 145, 40, ArticulationStyle(jaw_gain=0.8, pucker_gain=1.4)),
        SpeakerVoice(
            "s3-us-f4",
            3,
            "en-us",
            "f4",
            190,
            70,
            ArticulationStyle(jaw_gain=1.1, smile_bias=0.2, attack_s=0.04, release_s=0.06),
        ),
        SpeakerVoice("s4-gb-m7", 4, "en", "m7", 150, 35, ArticulationStyle(jaw_gain=0.7, pucker_gain=0.8)),
        SpeakerVoice(
            "s5-us-f1",
            5,
            "en-us",
            "f1",
            170,
            55,
            ArticulationStyle(jaw_gain=1.2, pucker_gain=1.2, smile_bias=0.05),
        ),
    )


def heldout_voices() -> tuple[SpeakerVoice, ...]:
    """Voices never heard in training (other variant, rate, pitch) driving avatars 0 and 1."""
    train = training_speakers()
    return (
        SpeakerVoice("h0-us-m4", 0, "en-us", "m4", 168, 52, train[0].style),
        SpeakerVoice("h1-gb-f3", 1, "en", "f3", 182, 60, train[1].style),
    )


_ADJECTIVES = [
    "quick",
    "brown",
    "lazy",
    "happy",
    "little",
    "yellow",
    "purple",
    "gentle",
    "clever",
    "quiet",
    "bright",
    "heavy",
    "smooth",
    "funny",
    "cheap",
    "early",
    "frozen",
    "golden",
    "humble",
    "jolly",
    "mighty",
    "noisy",
    "polite",
    "rapid",
    "shiny",
    "tiny",
    "wooden",
    "awful",
]
_NOUNS = [
    "fox",
    "dog",
    "cat",
    "robot",
    "teacher",
    "farmer",
    "monkey",
    "pilot",
    "baker",
    "doctor",
    "zebra",
    "puppy",
    "wizard",
    "sailor",
    "river",
    "mountain",
    "garden",
    "window",
    "pocket",
    "bottle",
    "apple",
    "orange",
    "pillow",
    "rocket",
    "violin",
    "museum",
]
_VERBS = [
    "jumps over",
    "walks past",
    "looks at",
    "thinks about",
    "pushes",
    "follows",
    "watches",
    "chooses",
    "borrows",
    "fixes",
    "paints",
    "measures",
    "opens",
    "juggles",
    "visits",
    "moves",
    "boils",
    "throws",
]
_ADVERBS = [
    "slowly",
    "quickly",
    "today",
    "again",
    "yesterday",
    "outside",
    "happily",
    "boldly",
    "very_well",
    "at_noon",
]
_OPENERS = ("", "", "well, ", "oh, ", "maybe ", "so, ", "yes, ", "now ")


def generate_sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct random sentences from small word lists, deterministic in ``seed``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(seed)
    sentences: list[str] = []
    seen: set[str] = set()
    while len(sentences) < count:
        text = (
            f"{rng.choice(_OPENERS)}the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} "
            f"the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_ADVERBS).replace('_', ' ')}."
        )
        if text not in seen:
            seen.add(text)
            sentences.append(text)
    return sentences


def sentence_split(num_train: int, num_heldout: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Disjoint training and held-out sentence lists (held-out drawn from another seed, overlaps removed)."""
    train = generate_sentences(num_train, seed)
    taken = set(train)
    heldout = [s for s in generate_sentences(num_heldout + num_train, seed + 10_007) if s not in taken]
    if len(heldout) < num_heldout:
        raise ValueError(f"could not draw {num_heldout} held-out sentences disjoint from training")
    return train, heldout[:num_heldout]


def espeak_library_path() -> str | None:
    """Path (or soname) of libespeak-ng if it can be loaded, else None."""
    for name in ("libespeak-ng.so.1", ctypes.util.find_library("espeak-ng")):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def espeak_available() -> bool:
    """True when libespeak-ng (Debian package ``espeak-ng`` / ``libespeak-ng1``) can be loaded."""
    return espeak_library_path() is not None


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from ``speak_lib.h``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class SynthesisResult:
    """One espeak-ng utterance: int16 PCM [N] at ``sample_rate`` and its phoneme onsets."""

    pcm: np.ndarray
    sample_rate: int
    events: list[PhonemeEvent]


class Espeak:
    """Process-wide handle on libespeak-ng (its state is global, so calls are serialised by a lock)."""

    _instance: Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        path = espeak_library_path()
        if path is None:
            raise RuntimeError("libespeak-ng.so.1 not found: install the Debian package espeak-ng")
        self._lib = ctypes.CDLL(path)
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 200, None, _INITIALIZE_PHONEME_EVENTS
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with {self.sample_rate}")
        self._samples: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = Espeak()
            return cls._instance

    def synthesize(self, text: str, voice: SpeakerVoice) -> SynthesisResult:
        """Speak ``text`` with ``voice``; PCM at espeak's native rate (22,050 Hz) and phoneme onsets."""
        if not text.strip():
            raise ValueError("text must not be empty")
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
                raise ValueError(f"espeak-ng does not know voice {voice.espeak_name!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
            self._samples, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            pcm = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
            return SynthesisResult(pcm=pcm, sample_rate=self.sample_rate, events=list(self._events))

    def _on_synth(self, wav, num_samples: int, events) -> int:
        if wav and num_samples > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                mnemonic = bytes(event.id.string).split(b"\0")[0].decode("utf-8", "replace")
                self._events.append(PhonemeEvent(event.audio_position / 1000.0, mnemonic))
            i += 1
        return 0


@dataclass
class Utterance:
    """Aligned training pair.

    Attributes:
        text: the sentence.
        voice: the espeak-ng voice that spoke it.
        pcm: [N] int16 at 16 kHz.
        events: phoneme onsets.
        targets: [F, C + 1] float32 motion over ``MOTION_CHANNELS``, F = ceil(N / 640).
    """

    text: str
    voice: SpeakerVoice
    pcm: np.ndarray
    events: list[PhonemeEvent]
    targets: np.ndarray


def synthesize_utterance(text: str, voice: SpeakerVoice) -> Utterance:
    """espeak-ng speech resampled to 16 kHz int16, with its 25 fps target motion."""
    result = Espeak.get().synthesize(text, voice)
    audio = resample(
        torch.from_numpy(result.pcm.astype(np.float32) / 32768.0), result.sample_rate, SAMPLE_RATE
    )
    pcm = np.clip(np.round(audio.numpy() * 32768.0), -32768, 32767).astype(np.int16)
    targets = motion_track(result.events, num_video_frames(pcm.shape[0]), voice.style)
    return Utterance(text=text, voice=voice, pcm=pcm, events=result.events, targets=targets.numpy())


def build_dataset(
    sentences: Sequence[str],
    voices: Sequence[SpeakerVoice],
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> list[Utterance]:
    """Every sentence spoken by every voice, loaded from ``cache_dir`` when already synthesised."""
    if not sentences or not voices:
        raise ValueError("sentences and voices must not be empty")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"speech-{_dataset_key(sentences, voices)}.npz"
        if cache_file.exists():
            return _load_dataset(cache_file, voices)
    pairs = [(voice, text) for voice in voices for text in sentences]
    utterances = [
        synthesize_utterance(text, voice)
        for voice, text in tqdm(pairs, desc="espeak-ng synthesis", disable=not progress, leave=False)
    ]
    if cache_file is not None:
        _save_dataset(cache_file, utterances, voices)
    return utterances


def _dataset_key(sentences: Sequence[str], voices: Sequence[SpeakerVoice]) -> str:
    payload = json.dumps(
        {"version": DATASET_VERSION, "sentences": list(sentences), "voices": [asdict(v) for v in voices]},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _save_dataset(path: Path, utterances: list[Utterance], voices: Sequence[SpeakerVoice]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [v.name for v in voices]
    events = [[(e.time_s, e.phoneme) for e in u.events] for u in utterances]
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        pcm=np.concatenate([u.pcm for u in utterances]),
        pcm_lengths=np.array([u.pcm.shape[0] for u in utterances]),
        targets=np.concatenate([u.targets for u in utterances]),
        target_lengths=np.array([u.targets.shape[0] for u in utterances]),
        voice_index=np.array([names.index(u.voice.name) for u in utterances]),
        texts=np.array(json.dumps([u.text for u in utterances])),
        events=np.array(json.dumps(events)),
    )
    tmp.replace(path)


def _load_dataset(path: Path, voices: Sequence[SpeakerVoice]) -> list[Utterance]:
    with np.load(path) as data:
        pcm = np.split(data["pcm"], np.cumsum(data["pcm_lengths"])[:-1])
        targets = np.split(data["targets"], np.cumsum(data["target_lengths"])[:-1])
        texts = json.loads(str(data["texts"]))
        events = json.loads(str(data["events"]))
        voice_index = data["voice_index"].tolist()
    return [
        Utterance(
            texts[i], voices[voice_index[i]], pcm[i], [PhonemeEvent(t, p) for t, p in events[i]], targets[i]
        )
        for i in range(len(texts))
    ]


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono int16 PCM [N] to a WAV file."""
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"pcm must be 1-D int16, got {pcm.dtype} with shape {pcm.shape}")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit WAV -> (int16 PCM [N], sample rate)."""
    with wave.open(str(path), "rb") as handle:
        if handle.getnchannels() != 1 or handle.getsampwidth() != 2:
            raise ValueError(f"path {path} must be mono 16-bit PCM WAV")
        return np.frombuffer(
            handle.readframes(handle.getnframes()), dtype=np.int16
        ).copy(), handle.getframerate()


def main(argv: list[str] | None = None) -> None:
    """Write one espeak-ng sentence as a 16 kHz int16 WAV plus its text (``<out>.txt``)."""
    parser = argparse.ArgumentParser(description="Synthesise a 16 kHz mono WAV with espeak-ng.")
    parser.add_argument("--text", required=True)
    parser.add_argument("--out", type=Path, required=True, help="output .wav path")
    parser.add_argument("--speaker", type=int, default=0, help="index into training_speakers()")
    args = parser.parse_args(argv)
    utterance = synthesize_utterance(args.text, training_speakers()[args.speaker])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.out, utterance.pcm)
    args.out.with_suffix(".txt").write_text(args.text + "\n")
    print(
        f"wrote {args.out} ({utterance.pcm.shape[0] / SAMPLE_RATE:.2f} s, {len(utterance.events)} phonemes)"
    )


if __name__ == "__main__":
    main()
