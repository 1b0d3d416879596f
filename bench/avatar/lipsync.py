"""Lip-sync of the shipped audio-to-motion model on held-out sentences, vs baselines in the same run.

Data: exactly the split ``train_motion`` used for the shipped weights (its ``train_config`` from
``assets/avatars/motion-translator/metrics.json``: ``sentence_split`` with its seed, the training
speakers, the held-out voices), synthesised again with espeak-ng; targets are the viseme tracks
(``trillium.avatar.core.visemes``). Nothing here was trained on.

Predictors, all scored by the same function on the same frames:

- ``model``: the shipped Speaker-specific Motion Translator (arXiv 2404.14037), whole utterances;
- ``constant_mean``: the training-set mean motion on every frame (its Pearson r is undefined: 0);
- ``energy_regression``: per channel ``a + b log RMS`` of the 40 ms of audio around the frame,
  ``a, b`` least squares on the training set — what a loudness tracker gets.

Scores (definitions of ``train_motion.evaluate``): Pearson r per mouth channel over all frames
(``metrics.lip_sync_correlation``; mean over the 14 mouth coefficients, and jawOpen), MSE, and the
lip vertex error (``metrics.lip_vertex_error``: max lip-vertex L2 per frame, mean over frames) on the
procedural head, in mm. Ratios: model MSE and LVE over the constant-mean baseline's.

Writes the ``lipsync`` section of ``<out-dir>/avatar.json`` and ``<out-dir>/avatar-lipsync.png``.

    python bench/avatar/lipsync.py            # about 30 s (espeak-ng synthesis of ~320 utterances)
    python bench/avatar/lipsync.py --quick    # a few sentences
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trillium.avatar.core import load_motion_translator
from trillium.avatar.core.metrics import lip_sync_correlation
from trillium.avatar.core.speech_data import (
    Utterance,
    build_dataset,
    espeak_available,
    heldout_voices,
    sentence_split,
    training_speakers,
)
from trillium.avatar.core.train_motion import _examples, _lip_vertex_error_mm
from trillium.avatar.core.visemes import JAW_CHANNEL, MOTION_CHANNELS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling results helper
from avatar_results import merge_results

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "assets" / "avatars" / "motion-translator"
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
MOUTH = [i for i, name in enumerate(MOTION_CHANNELS) if name != JAW_CHANNEL]


def log_energy(pcm: np.ndarray, frames: int) -> np.ndarray:
    """log RMS of the 640 samples centred on each 25 fps frame time: int16 [N] -> [frames]."""
    x = np.pad(pcm.astype(np.float64) / 32768, (SAMPLES_PER_FRAME // 2, SAMPLES_PER_FRAME * (frames + 1)))
    windows = x[: frames * SAMPLES_PER_FRAME].reshape(frames, SAMPLES_PER_FRAME)
    return np.log(np.sqrt((windows**2).mean(axis=1)) + 1e-4)


def fit_energy_regression(train: list[Utterance]) -> np.ndarray:
    """Least-squares ``[2, C]`` (intercept, slope) of every motion channel on the log energy."""
    x = np.concatenate([log_energy(u.pcm, u.targets.shape[0]) for u in train])
    y = np.concatenate([u.targets for u in train])
    design = np.stack([np.ones_like(x), x], axis=1)
    return np.linalg.lstsq(design, y, rcond=None)[0]


def score(prediction: torch.Tensor, target: torch.Tensor) -> dict:
    """Pearson r (per channel, mean over mouth channels, jawOpen), MSE and LVE (mm): [T, C] each."""
    per_channel = {}
    for i, name in enumerate(MOTION_CHANNELS):
        p, t = prediction[:, i], target[:, i]
        varies = float(t.std()) > 1e-6 and float(p.max() - p.min()) > 1e-9
        per_channel[name] = round(float(lip_sync_correlation(p, t)), 4) if varies else 0.0
    return {
        "pearson_mean_mouth": round(float(np.mean([per_channel[MOTION_CHANNELS[i]] for i in MOUTH])), 4),
        "pearson_jawOpen": per_channel["jawOpen"],
        "pearson_per_channel": per_channel,
        "mse": round(float(((prediction - target) ** 2).mean()), 6),
        "lip_vertex_error_mm": round(_lip_vertex_error_mm(prediction, target), 4),
    }


@torch.no_grad()
def evaluate_split(model, utterances: list[Utterance], train_mean: np.ndarray, energy: np.ndarray) -> dict:
    examples = _examples(utterances)
    model_pred = torch.cat([model(e.windows[None], torch.tensor([e.speaker_id]))[0][0] for e in examples])
    target = torch.cat([e.targets for e in examples])
    constant = torch.from_numpy(np.broadcast_to(train_mean, target.shape).astype(np.float32).copy())
    x = np.concatenate([log_energy(u.pcm, u.targets.shape[0]) for u in utterances])
    loudness = torch.from_numpy((energy[0] + x[:, None] * energy[1]).astype(np.float32))
    scores = {
        "model": score(model_pred, target),
        "constant_mean": score(constant, target),
        "energy_regression": score(loudness, target),
    }
    base = scores["constant_mean"]
    return {
        "utterances": len(utterances),
        "frames": int(target.shape[0]),
        **scores,
        "mse_ratio_vs_constant_mean": round(scores["model"]["mse"] / base["mse"], 4),
        "lve_ratio_vs_constant_mean": round(
            scores["model"]["lip_vertex_error_mm"] / base["lip_vertex_error_mm"], 4
        ),
    }


def plot(lipsync: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = lipsync["heldout_sentences"]
    names = list(MOTION_CHANNELS)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4))
    for offset, key in ((-0.2, "model"), (0.2, "energy_regression")):
        values = [split[key]["pearson_per_channel"][n] for n in names]
        ax.bar(
            x + offset, values, width=0.4, label=f"{key} (mean mouth {split[key]['pearson_mean_mouth']:.3f})"
        )
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Pearson r, held-out sentences")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.3)
    ax.set_title(
        f"lip-sync: LVE {split['model']['lip_vertex_error_mm']:.2f} mm vs "
        f"{split['constant_mean']['lip_vertex_error_mm']:.2f} mm constant mean"
    )
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few sentences (smoke run)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    if not espeak_available():
        raise SystemExit("espeak-ng is not installed (Debian package espeak-ng); cannot synthesise speech")
    torch.set_num_threads(1)
    started = time.perf_counter()
    training = json.loads((args.model_dir / "metrics.json").read_text())
    config = training["train_config"]
    num_train, num_heldout = config["num_train_sentences"], config["num_heldout_sentences"]
    train_sentences, heldout_sentences = sentence_split(num_train, num_heldout, config["seed"])
    if args.quick:
        train_sentences, heldout_sentences = train_sentences[:3], heldout_sentences[:2]
    speakers = training_speakers()[: config["num_speakers"]]
    voices = [v for v in heldout_voices() if v.speaker_id < config["num_speakers"]]
    model = load_motion_translator(args.model_dir / "motion_translator.safetensors")

    train = build_dataset(train_sentences, speakers, progress=False)
    train_mean = np.concatenate([u.targets for u in train]).mean(axis=0)
    energy = fit_energy_regression(train)
    lipsync = {
        "heldout_sentences": evaluate_split(
            model, build_dataset(heldout_sentences, speakers, progress=False), train_mean, energy
        ),
        "heldout_voices": evaluate_split(
            model, build_dataset(heldout_sentences, voices, progress=False), train_mean, energy
        ),
        "training_metrics_heldout_sentences_pearson_mean_mouth": training["heldout_sentences"][
            "pearson_mean_mouth"
        ],
        "train_frames_for_baselines": int(sum(u.targets.shape[0] for u in train)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(lipsync, args.out_dir / "avatar-lipsync.png")
    meta = {
        "benchmark": "avatar-lipsync",
        "machine": platform.platform(),
        "quick": args.quick,
        "split": {
            "train_sentences": len(train_sentences),
            "heldout_sentences": len(heldout_sentences),
            "speakers": [v.name for v in speakers],
            "heldout_voices": [v.name for v in voices],
            "seed": config["seed"],
        },
        "note": "synthetic espeak-ng speech and viseme targets; says nothing about natural speech",
    }
    merge_results(args.out_dir, {"lipsync": lipsync}, "lipsync", meta)
    for split in ("heldout_sentences", "heldout_voices"):
        s = lipsync[split]
        energy_r = s["energy_regression"]["pearson_mean_mouth"]
        print(
            f"{split}: r mouth {s['model']['pearson_mean_mouth']:.3f} (energy {energy_r:.3f}), "
            f"jawOpen {s['model']['pearson_jawOpen']:.3f}; LVE {s['model']['lip_vertex_error_mm']:.2f} mm "
            f"vs constant mean {s['constant_mean']['lip_vertex_error_mm']:.2f} mm "
            f"(x{s['lve_ratio_vs_constant_mean']}); MSE x{s['mse_ratio_vs_constant_mean']}"
        )
    return lipsync


if __name__ == "__main__":
    main()
