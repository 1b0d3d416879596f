"""Suite-wide test setup.

Environment variables that libraries read at import time are set here, before any test module
imports them: Triton kernels run in the interpreter on CPU (the variable must exist before the
``@triton.jit`` decorators run), and nothing may reach a model hub.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
