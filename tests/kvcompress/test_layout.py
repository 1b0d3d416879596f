"""TokenLayout: builders, validation, select, masks, Qwen2-VL parsing."""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress import Modality, TokenLayout


def test_builders_and_concat_number_segments_and_positions() -> None:
    layout = TokenLayout.concat([TokenLayout.text(3), TokenLayout.video(2, 2, 3), TokenLayout.audio(4)])
    assert len(layout) == 3 + 12 + 4
    assert layout.position.tolist() == list(range(19))
    assert layout.segment.tolist() == [0] * 3 + [1] * 12 + [2] * 4
    video = layout.mask(Modality.VIDEO)
    assert layout.frame[video].tolist() == [0] * 6 + [1] * 6
    assert layout.row[video].tolist()[:6] == [0, 0, 0, 1, 1, 1]
    assert layout.col[video].tolist()[:6] == [0, 1, 2, 0, 1, 2]
    assert layout.time[layout.mask(Modality.AUDIO)].tolist() == [0, 1, 2, 3]
    assert int(layout.row[~video].max()) == -1
    assert layout.counts() == {Modality.TEXT: 3, Modality.IMAGE: 0, Modality.VIDEO: 12, Modality.AUDIO: 4}
    assert layout.modalities() == {Modality.TEXT, Modality.VIDEO, Modality.AUDIO}


def test_select_applies_indices_and_keeps_original_positions() -> None:
    layout = TokenLayout.concat([TokenLayout.text(2), TokenLayout.image(2, 2)])
    sub = layout.select(torch.tensor([1, 4, 5]))
    assert sub.position.tolist() == [1, 4, 5]
    assert sub.modality.tolist() == [Modality.TEXT, Modality.IMAGE, Modality.IMAGE]
    assert sub.row.tolist() == [-1, 1, 1] and sub.col.tolist() == [-1, 0, 1]
    with pytest.raises(ValueError, match="indices"):
        layout.select([6])


def test_validation_names_the_field() -> None:
    base = TokenLayout.text(3)
    with pytest.raises(ValueError, match="segment has length 2"):
        TokenLayout(
            modality=base.modality,
            segment=torch.zeros(2, dtype=torch.long),
            frame=base.frame,
            row=base.row,
            col=base.col,
            time=base.time,
            position=base.position,
        )
    with pytest.raises(ValueError, match="frame must hold integers"):
        TokenLayout(
            modality=base.modality,
            segment=base.segment,
            frame=torch.zeros(3),
            row=base.row,
            col=base.col,
            time=base.time,
            position=base.position,
        )
    with pytest.raises(ValueError, match="modality holds values"):
        TokenLayout(
            modality=torch.tensor([0, 9, 0]),
            segment=base.segment,
            frame=base.frame,
            row=base.row,
            col=base.col,
            time=base.time,
            position=base.position,
        )
    with pytest.raises(ValueError, match="rows"):
        TokenLayout.image(0, 3)
    with pytest.raises(ValueError, match="layout describes 3 tokens but the prompt has 4"):
        base.check_length(4)
    with pytest.raises(ValueError, match="layout has no audio"):
        base.require([Modality.AUDIO])


def test_unit_ids_group_frames_and_audio_seconds_never_across_modalities() -> None:
    layout = TokenLayout.concat([TokenLayout.video(2, 1, 2), TokenLayout.audio(5), TokenLayout.text(2)])
    units = layout.unit_ids(audio_steps_per_unit=2)
    assert units[0] == units[1] and units[2] == units[3] and units[0] != units[2]
    audio = units[4:9].tolist()
    assert audio[0] == audio[1] and audio[2] == audio[3] and audio[4] not in audio[:4]
    assert not set(audio) & set(units[:4].tolist())
    assert units[9] != units[10]


def test_from_qwen2_vl_parses_image_and_video_runs() -> None:
    ids = torch.tensor([[5, 6, 90, 90, 90, 90, 7, 91, 91, 91, 91, 91, 91, 91, 91, 8]])
    layout = TokenLayout.from_qwen2_vl(
        ids,
        image_token_id=90,
        video_token_id=91,
        image_grid_thw=torch.tensor([[1, 4, 4]]),
        video_grid_thw=torch.tensor([[2, 4, 4]]),
    )
    assert layout.modality.tolist() == [0, 0] + [1] * 4 + [0] + [2] * 8 + [0]
    assert layout.frame[layout.mask(Modality.VIDEO)].tolist() == [0] * 4 + [1] * 4
    assert layout.to_mm_token_type_ids().tolist() == [[0, 0] + [1] * 4 + [0] + [2] * 8 + [0]]
    with pytest.raises(ValueError, match="grid_thw"):
        TokenLayout.from_qwen2_vl(
            ids, image_token_id=90, video_token_id=91, image_grid_thw=torch.tensor([[1, 2, 2]])
        )
