"""Synthesises English speech with libespeak-ng and returns each word's start time (ground truth).

Uses libespeak-ng.so.1 through ctypes: synchronous synthesis, the synth callback collects the
22050 Hz samples and the WORD events (audio_position, in ms from the start of the utterance).
Audio is resampled to 16 kHz by sox (libsoxr; -R -D: repeatable, no dither), never by hand.
"""
import ctypes
import subprocess

import numpy as np

_EVENT_WORD = 1
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class Espeak:
    """One libespeak-ng instance per process (the library is a singleton)."""

    def __init__(self):
        self.lib = ctypes.CDLL("libespeak-ng.so.1")
        self.native_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                      _INITIALIZE_DONT_EXIT)
        if self.native_rate <= 0:
            raise RuntimeError("libespeak-ng.so.1: espeak_Initialize failed; is espeak-ng-data installed?")
        self._chunks = []
        self._words = []
        self._cb = _CALLBACK(self._on_synth)  # keep a reference: ctypes would free it
        self.lib.espeak_SetSynthCallback(self._cb)

    def _on_synth(self, wav, n, events):
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            e = events[i]
            if e.type == _EVENT_WORD and e.length > 0:  # a final empty word event may come
                self._words.append((e.text_position, e.length, e.audio_position))
            i += 1
        return 0

    def synth(self, text, voice, rate=175, pitch=50, pitch_range=50):
        """Returns (samples int16 at native rate, [(text_position, length, start_ms)])."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng: unknown voice '{voice}'")
        for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range)):
            self.lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        self._chunks, self._words = [], []
        data = text.encode() + b"\0"
        rc = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if rc != 0:
            raise RuntimeError(f"espeak-ng: synthesis failed ({rc}) for '{text[:40]}'")
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._words)


def resample_to_16k(samples, rate):
    """int16 mono at `rate` -> int16 mono at 16 kHz, via sox."""
    out = subprocess.run(["sox", "-R", "-D", "-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1",
                          "-", "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1", "-"],
                         input=samples.astype("<i2").tobytes(), capture_output=True, check=True)
    return np.frombuffer(out.stdout, dtype="<i2")


def word_starts(text, words):
    """Maps espeak WORD events to (word, start_s); text_position is 1-based in characters."""
    res = []
    for pos, length, ms in words:
        w = text[pos - 1:pos - 1 + length]
        res.append((w, ms / 1000.0))
    return res
