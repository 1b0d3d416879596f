"""av-tiny processor: tokens per modality, layout coordinates, media decoding, codebooks, persistence."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from trillium.kvcompress.layout import Modality
from trillium.models.av_tiny.codebook import assign_codes, assign_codes_reference, fit_kmeans
from trillium.models.av_tiny.features import FeatureConfig, log_mel_frames, mel_filterbank, patch_features
from trillium.models.av_tiny.model import DecoderSize
from trillium.models.av_tiny.processor import AVTinyProcessor
from trillium.models.av_tiny.train import TrainConfig
from trillium.models.avqa import (
    LONG_TRAIN_FRAME_SIZES,
    LONG_TRAIN_FRAMES,
    AVQAConfig,
    heldout_config,
    make_sample,
)

SAMPLE = make_sample(AVQAConfig(n_frames=5, frame_size=24, n_sound_events=2, max_first_step=10), 7)


def build(processor: AVTinyProcessor, **overrides):
    kwargs = {
        "text": SAMPLE.text,
        "frames": SAMPLE.frames,
        "audio": SAMPLE.audio,
        "sample_rate": SAMPLE.sample_rate,
        "question": SAMPLE.questions[0].text,
        "first_timestamp": SAMPLE.scene.first_step,
    }
    return processor(**(kwargs | overrides))


def test_token_counts_per_modality(processor: AVTinyProcessor) -> None:
    inputs = build(processor)
    layout = inputs.layout
    assert inputs.input_ids.shape == (1, len(layout))
    counts = layout.counts()
    assert counts[Modality.VIDEO] == 5 * 3 * 3
    assert counts[Modality.AUDIO] == 5 * processor.audio_tokens_per_step
    assert counts[Modality.IMAGE] == 0
    n_text = len(SAMPLE.text.split()) + len(SAMPLE.questions[0].text.split())
    markers = 2 * 5
    assert counts[Modality.TEXT] == n_text + markers + 9  # bos, 8 segment tags, answer
    video_ids = inputs.input_ids[0][layout.mask(Modality.VIDEO)]
    assert bool(
        ((video_ids >= processor.video_code_offset) & (video_ids < processor.audio_code_offset)).all()
    )


def test_layout_coordinates_and_timestamps(processor: AVTinyProcessor) -> None:
    inputs = build(processor)
    layout, ids = inputs.layout, inputs.input_ids[0]
    video = layout.mask(Modality.VIDEO)
    expected = [(f, r, c) for f in range(5) for r in range(3) for c in range(3)]
    got = list(
        zip(layout.frame[video].tolist(), layout.row[video].tolist(), layout.col[video].tolist(), strict=True)
    )
    assert got == expected
    audio = layout.mask(Modality.AUDIO)
    assert layout.time[audio].tolist() == list(range(5 * processor.audio_tokens_per_step))
    aux = inputs.aux_ids[0]
    first = SAMPLE.scene.first_step
    stamps = [processor.token_id(f"<t{first + f}>") for f, _, _ in expected]
    assert aux[video, 0].tolist() == stamps
    assert aux[video, 1].tolist() == [processor.token_id(f"<r{r}>") for _, r, _ in expected]
    assert aux[video, 2].tolist() == [processor.token_id(f"<c{c}>") for _, _, c in expected]
    steps = [first + t // processor.audio_tokens_per_step for t in layout.time[audio].tolist()]
    assert aux[audio, 0].tolist() == [processor.token_id(f"<t{k}>") for k in steps]
    assert bool((aux[audio, 1:] == -1).all()) and bool((aux[video, 3] == -1).all())
    assert set(layout.segment[video].tolist()) == {1} and set(layout.segment[audio].tolist()) == {2}
    assert (layout.frame[~video] == -1).all() and (layout.time[~audio] == -1).all()
    first_frame = int(video.nonzero()[0])
    stamp = processor.vocab[int(ids[first_frame - 1])]
    assert stamp == f"<t{SAMPLE.scene.first_step}>"
    first_audio = int(audio.nonzero()[0])
    assert processor.vocab[int(ids[first_audio - 1])] == stamp
    assert inputs.question_start == int((layout.segment == 3).nonzero()[0])
    assert processor.vocab[int(ids[-1])] == "<answer>"
    assert processor.vocab[int(ids[inputs.question_start])] == "<question>"


def test_largest_training_and_evaluation_clips_fit_the_grid_and_the_positions(
    processor: AVTinyProcessor,
) -> None:
    largest_training_clip = (max(LONG_TRAIN_FRAMES), max(LONG_TRAIN_FRAME_SIZES))
    for n_frames, frame_size in (largest_training_clip, *TrainConfig().long_eval):
        sample = make_sample(heldout_config(n_frames, frame_size), 11)
        inputs = build(
            processor,
            text=sample.text,
            frames=sample.frames,
            audio=sample.audio,
            question=sample.questions[0].text,
            first_timestamp=sample.scene.first_step,
        )
        side = frame_size // FeatureConfig().patch
        video = inputs.layout.mask(Modality.VIDEO)
        assert int(video.sum()) == n_frames * side * side
        assert int(inputs.layout.row[video].max()) == int(inputs.layout.col[video].max()) == side - 1
        assert inputs.input_ids.shape[1] < DecoderSize().max_positions


def test_token_shift_on_passage_and_answer_slot(processor: AVTinyProcessor) -> None:
    inputs = build(processor)
    ids, aux, segment = inputs.input_ids[0], inputs.aux_ids[0], inputs.layout.segment
    passage = torch.nonzero(segment == 0).flatten()[1:]
    assert torch.equal(aux[passage, 3], ids[passage - 1]) and int(aux[0, 3]) == -1
    assert torch.equal(aux[passage[1:], 4], ids[passage[1:] - 2]) and int(aux[passage[0], 4]) == -1
    assert int(ids[-1]) == processor.token_id("<answer>") and int(aux[-1, 3]) == int(ids[-2])
    assert int(aux[-1, 4]) == int(ids[-3])
    assert SAMPLE.questions[0].text.split()[-2:] == [processor.vocab[int(i)] for i in ids[-3:-1]]
    question = torch.arange(inputs.question_start, len(ids) - 1)
    assert bool((aux[question] == -1).all())


def test_codes_identify_the_object(processor: AVTinyProcessor) -> None:
    codes = processor.video_codes(SAMPLE.frames)
    track = SAMPLE.scene.tracks[0]
    row, col = track.cells[0]
    object_code = int(codes[track.start, row, col])
    background = {int(c) for c in codes[track.start].flatten()} - {object_code}
    assert object_code not in background


def test_png_bytes_and_int16_audio_match_arrays(processor: AVTinyProcessor) -> None:
    pngs = []
    for frame in SAMPLE.frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    int16 = np.round(SAMPLE.audio * 32767).astype(np.int16)
    base, other = build(processor), build(processor, frames=pngs, audio=int16)
    assert torch.equal(base.input_ids, other.input_ids)


def test_resampled_audio_gives_same_token_count(processor: AVTinyProcessor) -> None:
    audio16k = np.interp(np.arange(len(SAMPLE.audio) * 2) / 2, np.arange(len(SAMPLE.audio)), SAMPLE.audio)
    inputs = build(processor, audio=audio16k.astype(np.float32), sample_rate=16000)
    assert inputs.layout.counts()[Modality.AUDIO] == 5 * processor.audio_tokens_per_step


def test_bad_inputs_raise_value_error(processor: AVTinyProcessor) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        build(processor, sample_rate=None)
    with pytest.raises(ValueError, match="frames"):
        build(processor, frames=SAMPLE.frames.astype(np.float32))
    with pytest.raises(ValueError, match="patch"):
        build(processor, frames=SAMPLE.frames[:, :20, :20])
    with pytest.raises(ValueError, match="first_timestamp"):
        build(processor, first_timestamp=processor.max_timestamp - 2)
    with pytest.raises(ValueError, match="at most 16 patches per side"):
        build(processor, frames=np.zeros((2, 8, 17 * 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="video_codebook"):
        AVTinyProcessor(torch.zeros(4, 5), processor.audio_codebook)


def test_save_load_round_trip(processor: AVTinyProcessor, tmp_path) -> None:
    processor.save_pretrained(tmp_path)
    loaded = AVTinyProcessor.from_pretrained(tmp_path)
    assert loaded.vocab == processor.vocab
    assert torch.equal(build(loaded).input_ids, build(processor).input_ids)


def test_text_encode_decode(processor: AVTinyProcessor) -> None:
    ids = processor.encode_text("What colour was the OBJECT ?")
    assert processor.decode(ids) == ["what", "colour", "was", "the", "object", "?"]
    assert processor.decode([*processor.encode_text("red square"), processor.token_id("<eos>"), 5]) == [
        "red",
        "square",
    ]
    assert processor.encode_text("zebra") == [processor.token_id("<unk>")]


def test_kmeans_recovers_separated_clusters_and_matches_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=generator) for c in centres])
    fitted = fit_kmeans(points, 3, seed=1)
    assert torch.cdist(centres, fitted).min(dim=1).values.max() < 0.2
    assert torch.equal(assign_codes(points, fitted), assign_codes_reference(points, fitted))


def test_features_shapes_and_mel_peaks() -> None:
    config = FeatureConfig()
    frames = np.zeros((2, 16, 24, 3), dtype=np.uint8)
    frames[1, 8:16, 0:8] = 255
    feats = patch_features(frames, config)
    assert feats.shape == (2, 2, 3, config.video_dim)
    assert feats[1, 1, 0].min() == 1.0 and feats[1, 0, 0].max() == 0.0
    bank = mel_filterbank(config)
    assert bank.shape == (config.n_mels, config.n_fft // 2 + 1) and (bank >= 0).all()
    tone = np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000).astype(np.float32)
    mels = log_mel_frames(tone, config)
    assert mels.shape == (10, config.n_mels)
    centres = (bank * np.linspace(0, 4000, bank.shape[1])).sum(1) / bank.sum(1)
    assert abs(centres[int(mels[0].argmax())] - 1000) < 200
