"""Writes ``MODEL_CARD.md`` of a trained av-tiny from its evaluation results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trillium.models.avqa import FAMILIES
from trillium.models.avqa.dataset import LONG_TRAIN_FRAME_SIZES, LONG_TRAIN_FRAMES

TRAIN_COMMAND = "python -m trillium.models.av_tiny.train --out assets/models/av-tiny   # = make train-av-tiny"


def _row(name: str, accuracy: dict[str, float]) -> str:
    cells = [f"{100 * accuracy[f]:.1f}" if f in accuracy else "-" for f in (*FAMILIES, "overall")]
    return f"| {name} | " + " | ".join(cells) + " |"


def _long_clips(long: dict) -> str:
    return (
        f"{long['fraction']:.0%} of the batches hold long clips instead of short ones "
        f"({', '.join(map(str, LONG_TRAIN_FRAMES))} frames of "
        f"{'/'.join(map(str, LONG_TRAIN_FRAME_SIZES))} px, 2-8 sound events, as many clips as fit "
        f"{long['batch_volume']:,} frame-pixels)"
    )


def _long_clips_sentence(config: dict) -> str:
    long = config.get("long_clips")
    if not long:
        return ""
    return f"From step {long['after']:,} on, {_long_clips(long)}. "


def _training_sentence(results: dict, config: dict) -> str:
    steps_run = results.get("steps_run", config["steps"])
    main_steps = steps_run["main"] if isinstance(steps_run, dict) else steps_run
    text = (
        f"Training: {main_steps} of {config['steps']} scheduled steps x {config['batch_size']} clips x "
        f"{config['questions_per_sample']} questions, AdamW, peak lr {config['learning_rate']}, "
        f"curriculum over the first {config.get('curriculum_steps', 0)} steps, auxiliary LM loss weight "
        f"{config.get('lm_loss_weight', 0.0)}, seed {config['seed']}"
    )
    stage = config.get("long_stage")
    if stage and isinstance(steps_run, dict) and "long" in steps_run:
        low, high = results["long_clip_prompt_tokens"]
        text += (
            f"; then a long stage of {steps_run['long']} of {stage['steps']} steps (peak lr "
            f"{stage['learning_rate']}, its own warm-up and cosine decay) in which "
            f"{_long_clips(stage['clips'])}: prompts of about {low:,}-{high:,} tokens"
        )
    return text + ". "


def _timing_scope(results: dict) -> str:
    resumed = {stage: step for stage, step in results.get("resumed_at", {}).items() if step > 0}
    if resumed:
        where = " and ".join(f"step {step:,} of the {stage} stage" for stage, step in resumed.items())
        return f"counted from resuming at {where}"
    return "this run only" if results.get("init_from") else "codebook fit included"


def write_model_card(directory: Path, results: dict[str, object]) -> None:
    """Write ``directory / "MODEL_CARD.md"`` describing architecture, data, command and accuracy."""
    config = results["config"]
    size = config["size"]
    header = "| split | " + " | ".join((*FAMILIES, "overall")) + " |"
    rule = "|---" * (len(FAMILIES) + 2) + "|"
    keep = config["eviction_keep_fraction"]
    table = [
        header,
        rule,
        _row("held-out, full cache", results["heldout_full_cache"]),
        _row(f"held-out, random eviction (keep {keep:.0%})", results["heldout_random_eviction"]),
    ]
    for key, acc in results["longer_clips"].items():
        clip = f"{acc.get('frames', key)} frames of {acc.get('frame_size', 40)} px"
        table.append(_row(f"{clip} (~{acc['prompt_tokens']:,} prompt tokens), full cache", acc))
    lengths = ", ".join(f"{k} frames: {v}" for k, v in results["heldout_prompt_tokens"].items())
    origin = (
        f"Continued from the trained model in `{results['init_from']}` (its codebooks and weights). "
        if results.get("init_from")
        else ""
    )
    timing_scope = _timing_scope(results)
    text = f"""# av-tiny

A tiny audio-video question-answering decoder, trained from scratch on synthetic data (AVQA-synth)
so that Trillium can measure KV-cache compression losses on a multimodal model it ships itself.

## Architecture
- Processor (`trillium.models.av_tiny.processor.AVTinyProcessor`): RGB frames are cut into 8x8
  patches, 2x2 average-pooled (48 features) and quantised with a {config["video_codes"]}-entry k-means
  codebook; PCM audio is resampled to 8 kHz, cut into 100 ms windows, turned into 20-band log-mel
  frames (numpy) and quantised with a {config["audio_codes"]}-entry k-means codebook. Each video frame
  and each 200 ms audio step is preceded by a shared timestamp token `<tK>`. The processor also
  returns the kvcompress `TokenLayout` (modality, segment, frame, row, col, time per token) and
  auxiliary ids whose embeddings are added to the token's own: `<tK>` on every media token,
  `<rI>`/`<cJ>` on video patches (factorised spatio-temporal position embeddings), and the two
  previous tokens on the text passage and on the `<answer>` slot ("smeared keys", Olsson et al.
  2022, widened to two tokens). Prompts
  therefore enter as `inputs_embeds = embed_inputs(model, input_ids, aux_ids)`.
- Decoder: `Qwen2ForCausalLM`, hidden {size["hidden"]}, {size["layers"]} layers, {size["heads"]} heads,
  {size["kv_heads"]} KV heads, MLP {size["intermediate"]}, RoPE theta {size.get("rope_theta", 1e4):,.0f},
  vocabulary of discrete tokens,
  {results["parameters"]:,} parameters, fp32 safetensors. Loads with
  `AutoModelForCausalLM.from_pretrained` (offline); the processor with
  `AVTinyProcessor.from_pretrained` from the same folder.

## Data
AVQA-synth (`trillium.models.avqa`): coloured shapes that appear, move and disappear on a grid,
sound events of six classes, grey distractor shapes, noise bursts and a short text passage.
Question families: video recall (`what object was at <tK>` -> one word, e.g. `red-circle`), audio recall
(`which sound played during <tK>`), cross-modal (`what colour was the object at the X` -> the sound's time,
then the colour, e.g. `<t7> red`), counting
(`how many times sounded the X`) and text (`what is the KEY`, facts written `KEY VALUE .`).
Training clips have
4-16 (even) frames of 24/32/40 px (3x3 to 5x5 patches), 1-6 sound events, 0/1/2/4 distractors and
1-5 facts; the held-out split uses other seeds and knob values (7, 11, 15 frames of 40 px,
3 distractors, 5 events, 4 facts). {_long_clips_sentence(config)}Held-out prompt lengths: {lengths} tokens.
{origin}{_training_sentence(results, config)}Training took
{results["train_seconds"] / 60:.1f} minutes wall-clock on CPU ({config["threads"]} torch thread(s),
{timing_scope}); final training loss {results["final_loss"]:.3f}.

## Training command
```
{TRAIN_COMMAND}
```

## Accuracy (%, exact match, greedy)
{chr(10).join(table)}

Random eviction keeps a random {keep:.0%} of the context KV and all question tokens; the gap to the
full cache shows that answers depend on a few specific context tokens.

## Licence
Apache-2.0 (the project's licence). Trained from scratch on synthetic data generated by the
project's own code; no third-party weights or data.
"""
    (directory / "MODEL_CARD.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    """``python -m trillium.models.av_tiny.card DIR``: rewrite MODEL_CARD.md from eval_results.json."""
    parser = argparse.ArgumentParser(description="Rewrite MODEL_CARD.md of a trained av-tiny.")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    results_file = args.directory / "eval_results.json"
    if not results_file.is_file():
        raise SystemExit(f"{results_file} not found: train the model first")
    write_model_card(args.directory, json.loads(results_file.read_text()))


if __name__ == "__main__":
    main()
