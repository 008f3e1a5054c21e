"""One lock for building transformers models, whichever thread does it.

transformers switches process-wide state while it builds a model (weight initialisation off while loading, the
"meta" device for empty weights): two threads building at once, say the app warming its first results while a
request loads another checkpoint, failed with "Cannot copy out of meta tensor" or got weights left uninitialised.
Loading is rare and slow anyway; passes through built models are not held up by it (they hold `LoadedModel.lock`).
"""

from __future__ import annotations

import threading

BUILDING_MODELS = threading.RLock()  # re-entrant: materialising a delta builds a model inside a load
