"""``python -m trillium.models.av_tiny.train --quick`` end to end, and training helpers."""

from __future__ import annotations

import json

import pytest
import torch

from trillium.models.av_tiny import load_av_tiny
from trillium.models.av_tiny.processor import AUX_CHANNELS
from trillium.models.av_tiny.train import (
    IGNORE_INDEX,
    TrainConfig,
    collate,
    encode_example,
    learning_rate,
    main,
    run,
)
from trillium.models.avqa import FAMILIES, AVQAConfig, make_sample


def test_quick_training_writes_a_loadable_model(tmp_path) -> None:
    checkpoint = tmp_path / "state.pt"
    main(["--out", str(tmp_path), "--quick", "--no-progress", "--checkpoint", str(checkpoint)])
    quick = TrainConfig.quick()
    assert torch.load(checkpoint, weights_only=True)["step"] == quick.steps - 1
    assert quick.long_stage is not None
    long_checkpoint = tmp_path / "state-long.pt"  # the long stage keeps its own train state
    assert torch.load(long_checkpoint, weights_only=True)["step"] == quick.long_stage.steps - 1
    for name in ("config.json", "model.safetensors", "processor_config.json", "codebooks.safetensors"):
        assert (tmp_path / name).is_file(), name
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(results["heldout_full_cache"]) >= {"video_recall", "cross_modal", "overall"}
    assert results["steps_run"] == {"main": quick.steps, "long": quick.long_stage.steps}
    assert results["longer_clips"]["24x40"]["frames"] == 24
    low, high = results["long_clip_prompt_tokens"]
    assert low < results["longer_clips"]["24x40"]["prompt_tokens"] < high
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "Apache-2.0" in card and "--out assets/models/av-tiny" in card
    model, processor = load_av_tiny(tmp_path)
    assert model.config.vocab_size == processor.vocab_size
    assert results["resumed_at"] == {"main": 0, "long": 0} and "codebook fit included" in card


def test_a_resumed_run_counts_the_steps_its_checkpoints_already_ran(tmp_path) -> None:
    checkpoint = tmp_path / "state.pt"
    arguments = ["--quick", "--no-progress", "--checkpoint", str(checkpoint)]
    main(["--out", str(tmp_path / "first"), *arguments])
    main(["--out", str(tmp_path / "resumed"), *arguments])  # both checkpoints are at their last step
    quick = TrainConfig.quick()
    assert quick.long_stage is not None
    results = json.loads((tmp_path / "resumed" / "eval_results.json").read_text())
    assert results["steps_run"] == {"main": quick.steps, "long": quick.long_stage.steps}
    assert results["resumed_at"] == results["steps_run"]
    card = (tmp_path / "resumed" / "MODEL_CARD.md").read_text()
    assert f"{quick.steps} of {quick.steps} scheduled steps" in card
    assert "counted from resuming at step 6 of the main stage and step 2 of the long stage" in card


def test_training_continues_from_a_trained_model(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    main(["--out", str(first), "--quick", "--no-progress"])
    before, processor = load_av_tiny(first)
    results = run(second, TrainConfig.quick().long_stage_config(), progress=False, init_from=first)
    assert results["steps_run"] == {"main": 2}  # what --long-finetune runs: the long stage alone
    after, continued = load_av_tiny(second)
    assert continued.vocab == processor.vocab
    assert torch.equal(continued.video_codebook, processor.video_codebook)  # codebooks kept, not refit
    weight = "model.embed_tokens.weight"
    assert not torch.equal(before.state_dict()[weight], after.state_dict()[weight])  # it trained on
    card = (second / "MODEL_CARD.md").read_text()
    assert f"Continued from the trained model in `{first}`" in card and "hold long clips" in card
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "third"), "--long-finetune"])  # needs --init-from
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--long-finetune", "--init-from", str(first), "--no-long-stage"])
    main(["--out", str(tmp_path / "main-only"), "--quick", "--no-long-stage", "--no-progress"])
    results = json.loads((tmp_path / "main-only" / "eval_results.json").read_text())
    assert results["steps_run"] == {"main": TrainConfig.quick().steps}
    assert results["config"]["long_stage"] is None


def test_encode_example_labels_only_answers(processor) -> None:
    sample = make_sample(AVQAConfig(n_frames=4, frame_size=24, n_sound_events=2), 1)
    ids, aux, labels, families = encode_example(processor, sample)
    supervised = [processor.vocab[t] for t, y in zip(ids, labels, strict=True) if y != IGNORE_INDEX]
    expected = [w for q in sample.questions for w in (*q.answer, "<eos>")]
    assert supervised == expected
    labelled_families = [FAMILIES[f] for f, y in zip(families, labels, strict=True) if y != IGNORE_INDEX]
    assert labelled_families == [q.family for q in sample.questions for _ in (*q.answer, "<eos>")]
    assert all(f == -1 for f, y in zip(families, labels, strict=True) if y == IGNORE_INDEX)
    assert ids.count(processor.token_id("<question>")) == len(sample.questions)
    answer_slots = [i for i, t in enumerate(ids) if t == processor.token_id("<answer>")]
    assert [aux[i][3:] for i in answer_slots] == [[ids[i - 1], ids[i - 2]] for i in answer_slots]
    assert all(aux[i] == [-1] * len(AUX_CHANNELS) for i, y in enumerate(labels) if y != IGNORE_INDEX)
    example = (ids, aux, labels, families)
    batch = collate([example, tuple(part[:10] for part in example)], pad_id=0)
    assert batch["input_ids"].shape == (2, len(ids)) and int(batch["attention_mask"][1].sum()) == 10
    assert batch["aux_ids"].shape == (2, len(ids), len(AUX_CHANNELS))
    assert torch.equal(batch["aux_ids"][0], torch.tensor(aux))
    assert bool((batch["labels"][1, 10:] == IGNORE_INDEX).all()) and bool(
        (batch["aux_ids"][1, 10:] == -1).all()
    )


def test_long_stage_config_restarts_the_schedule_on_its_own_stream() -> None:
    config = TrainConfig(seed=3)
    stage = config.long_stage_config()
    assert config.long_stage is not None and stage.long_stage is None
    assert (stage.steps, stage.learning_rate, stage.curriculum_steps) == (900, 5e-4, 0)
    assert stage.long_clips == config.long_stage.clips and stage.seed == 3 and stage.stream == 1000
    with pytest.raises(ValueError, match="long_stage"):
        stage.long_stage_config()


def test_learning_rate_warms_up_then_decays() -> None:
    config = TrainConfig(steps=100, warmup_steps=10, learning_rate=1.0)
    rates = torch.tensor([learning_rate(s, config) for s in range(100)])
    assert rates[0] < rates[9] == 1.0 and rates[-1] < 0.1 and bool((rates[10:].diff() <= 0).all())
