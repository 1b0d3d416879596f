"""trillium-kvcompress: multimodal KV-cache compression for Hugging Face decoders.

Public API::

    from trillium.kvcompress import TokenLayout, make_policy, generate_with_policy

    layout = TokenLayout.concat([TokenLayout.text(12), TokenLayout.video(4, 6, 6), TokenLayout.text(20)])
    result = generate_with_policy(model, input_ids, layout=layout, policy=make_policy("snapkv", budget=0.2))
"""

from importlib.metadata import version

from trillium.kvcompress.cache import CompressedCache, CompressedLayer
from trillium.kvcompress.hf import ATTENTION_NAME, CompressionSession, compress, generate_with_policy
from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.policies import (
    H2O,
    AccKV,
    AdaKV,
    ComposedPolicy,
    FlowMM,
    LayerInputs,
    LayerResult,
    LookM,
    MadaKV,
    Policy,
    PrefillAttention,
    PureKV,
    PyramidKV,
    RandomEviction,
    SnapKV,
    StreamingLLM,
    STSparsePrefill,
)
from trillium.kvcompress.registry import (
    ParameterSpec,
    PolicySpec,
    get_policy_spec,
    list_policies,
    make_policy,
)
from trillium.kvcompress.report import CompressionReport, GenerationResult

__version__ = version("trillium-kvcompress")  # the installed package's version (pyproject.toml)

__all__ = [
    "ATTENTION_NAME",
    "H2O",
    "AccKV",
    "AdaKV",
    "ComposedPolicy",
    "CompressedCache",
    "CompressedLayer",
    "CompressionReport",
    "CompressionSession",
    "FlowMM",
    "GenerationResult",
    "LayerInputs",
    "LayerResult",
    "LookM",
    "MadaKV",
    "Modality",
    "ParameterSpec",
    "Policy",
    "PolicySpec",
    "PrefillAttention",
    "PureKV",
    "PyramidKV",
    "RandomEviction",
    "STSparsePrefill",
    "SnapKV",
    "StreamingLLM",
    "TokenLayout",
    "__version__",
    "compress",
    "generate_with_policy",
    "get_policy_spec",
    "list_policies",
    "make_policy",
]
