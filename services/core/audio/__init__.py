"""Audio in and out: any upload decoded to mono float32 at a model's rate, and every answer format encoded.

Everything works on mono float32 numpy arrays with values in [-1, 1]. The package's API, one module a job:

* ``decode_audio`` (decode.py) turns any upload OpenAI accepts into mono float32 at the requested rate
  (libsndfile first, FFmpeg through PyAV for the rest; inputs.py opens paths, bytes and file objects);
  ``soundfile_seconds`` reads the length a header states;
* ``resample`` (samples.py, soxr) and ``pcm16_to_float``;
* ``encode_audio`` (encode.py) writes one complete file of a ``response_format``;
* ``StreamingEncoder`` (streaming.py) produces the same formats incrementally for streamed responses;
* the formats' names and content types are contracts (services/core/contracts/formats.py).
"""

from services.core.audio.decode import MAX_DECODE_SECONDS, AudioTooLong, decode_audio, soundfile_seconds
from services.core.audio.encode import encode_audio
from services.core.audio.samples import pcm16_to_float, resample
from services.core.audio.streaming import StreamingEncoder
from services.core.contracts.formats import AUDIO_FORMATS, CONTENT_TYPES, AudioFormat

__all__ = [
    "AUDIO_FORMATS",
    "CONTENT_TYPES",
    "MAX_DECODE_SECONDS",
    "AudioFormat",
    "AudioTooLong",
    "StreamingEncoder",
    "decode_audio",
    "encode_audio",
    "pcm16_to_float",
    "resample",
    "soundfile_seconds",
]
