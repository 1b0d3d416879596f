"""Python clients of the InferenceService (sync and asyncio) and segment builders for media files.

::

    from trillium.inference.client import InferenceClient, text

    with InferenceClient("127.0.0.1:50051") as client:
        for delta in client.stream("smollm2", [text("What is the capital of France?")], policy="snapkv"):
            print(delta, end="", flush=True)
        print(client.last.summary.tokens_kept, "tokens kept")
"""

from trillium.inference.client.client import Answer, AsyncInferenceClient, InferenceClient, build_request
from trillium.inference.client.segments import audio_file, image_file, text, video_path

__all__ = [
    "Answer",
    "AsyncInferenceClient",
    "InferenceClient",
    "audio_file",
    "build_request",
    "image_file",
    "text",
    "video_path",
]
