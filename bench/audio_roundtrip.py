"""Speech -> transcription round trip through the offline engines, in-process: for each
sentence and voice, eSpeak NG speaks it (WAV), Whisper tiny.en transcribes it back, and the word
error rate of the transcript is counted (words compared in lower case, without punctuation).
Prints the speed of each engine (seconds of audio per second of work) and the WER per voice.

    .venv/bin/python bench/audio_roundtrip.py [--voices alloy,onyx] [--threads 2] [--format wav]
"""

from __future__ import annotations

import argparse
import re
import time

from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import config_from_dict

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow at noon.",
    "The meeting has been moved to the second floor.",
    "Turn left at the next corner and walk for five minutes.",
    "She bought three apples and a loaf of bread.",
    "The weather today is sunny with a light breeze.",
    "Can you send me the report before Friday?",
    "Our train leaves the station at half past seven.",
]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def errors(reference: list[str], heard: list[str]) -> int:
    """Word-level edit distance (substitutions, insertions, deletions)."""
    row = list(range(len(heard) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(heard, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


def _seconds(audio: bytes) -> float:
    from interference.engine.audio_codec import decode

    return decode(audio)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="alloy,ash,onyx,nova,echo,fable")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--format", default="mp3", help="the speech's response_format")
    args = parser.parse_args()
    config = config_from_dict(
        {
            "providers": {
                "speech": {"kind": "espeak"},
                "stt": {"kind": "whisper", "threads": args.threads},
            }
        }
    )
    with TestClient(create_app(config)) as client:
        fmt = args.format
        for voice in args.voices.split(","):
            wrong = total = 0
            spoken_s = speak_s = listen_s = 0.0
            for sentence in SENTENCES:
                started = time.perf_counter()
                body = {"model": "tts-1", "voice": voice, "input": sentence, "response_format": fmt}
                audio = client.post("/v1/audio/speech", json=body).content
                speak_s += time.perf_counter() - started
                spoken_s += _seconds(audio)
                started = time.perf_counter()
                answer = client.post(
                    "/v1/audio/transcriptions",
                    data={"model": "whisper-1"},
                    files={"file": (f"speech.{fmt}", audio)},
                )
                listen_s += time.perf_counter() - started
                reference = words(sentence)
                wrong += errors(reference, words(answer.json()["text"]))
                total += len(reference)
            print(
                f"voice {voice:8} WER {wrong / total:6.1%} ({wrong}/{total} words)  "
                f"speech {spoken_s / speak_s:6.1f}x real time  "
                f"transcription {spoken_s / listen_s:5.1f}x real time  ({spoken_s:.1f} s of audio)"
            )


if __name__ == "__main__":
    main()
