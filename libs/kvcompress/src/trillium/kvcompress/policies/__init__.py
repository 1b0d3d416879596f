"""Compression policies, one per file; see :mod:`trillium.kvcompress.registry` for discovery."""

from trillium.kvcompress.policies.acckv import AccKV
from trillium.kvcompress.policies.adakv import AdaKV
from trillium.kvcompress.policies.base import LayerInputs, LayerResult, Policy, PrefillAttention
from trillium.kvcompress.policies.composed import ComposedPolicy
from trillium.kvcompress.policies.flowmm import FlowMM
from trillium.kvcompress.policies.h2o import H2O
from trillium.kvcompress.policies.look_m import LookM
from trillium.kvcompress.policies.madakv import MadaKV
from trillium.kvcompress.policies.purekv import PureKV
from trillium.kvcompress.policies.pyramidkv import PyramidKV
from trillium.kvcompress.policies.random_eviction import RandomEviction
from trillium.kvcompress.policies.snapkv import SnapKV
from trillium.kvcompress.policies.st_sparse import STSparsePrefill
from trillium.kvcompress.policies.streaming_llm import StreamingLLM

__all__ = [
    "H2O",
    "AccKV",
    "AdaKV",
    "ComposedPolicy",
    "FlowMM",
    "LayerInputs",
    "LayerResult",
    "LookM",
    "MadaKV",
    "Policy",
    "PrefillAttention",
    "PureKV",
    "PyramidKV",
    "RandomEviction",
    "STSparsePrefill",
    "SnapKV",
    "StreamingLLM",
]
