"""Shared fixtures of the trillium.models tests: a small processor fitted on a few training clips."""

from __future__ import annotations

from dataclasses import replace

import pytest

from trillium.models.av_tiny.processor import AVTinyProcessor
from trillium.models.av_tiny.train import TrainConfig, fit_processor


@pytest.fixture(scope="session")
def processor() -> AVTinyProcessor:
    return fit_processor(
        replace(TrainConfig.quick(), codebook_scenes=16, video_codes=32, audio_codes=12), False
    )
