"""Hot swap of the inference model when the registry's serving pointer moves (a promotion or a roll-back).

The new model is loaded on a background thread while the old one keeps serving; the stage asks between batches
and swaps only then, so every batch is detected, produced and committed by one model: the swap itself loses and
repeats no frame. A model that fails to load is logged, the old one keeps serving, and the load is tried again after
a doubling pause (ServingWatcher).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from processors.inference.model_registry import ModelVersion, ServingWatcher, WeightsChanged

log = logging.getLogger(__name__)

Loaded = TypeVar("Loaded")


class ModelSwapper(Generic[Loaded]):
    def __init__(self, watcher: ServingWatcher, load: Callable[[ModelVersion], Loaded]):
        self.watcher = watcher
        self.load = load
        self.loading: threading.Thread | None = None
        self.ready: tuple[ModelVersion, Loaded] | None = None
        self.lock = threading.Lock()
        self.pointer_error: str | None = None

    def poll(self) -> tuple[ModelVersion, Loaded] | None:
        """A newly loaded model to serve from the next batch on, once; otherwise None (and a load may start)."""
        with self.lock:
            ready, self.ready = self.ready, None
        if ready is not None:
            return ready
        if self.loading is None or not self.loading.is_alive():
            try:
                model, self.pointer_error = self.watcher.changed(), None
            except (OSError, ValueError, KeyError) as exc:  # a hand-edited or damaged pointer: keep serving
                if str(exc) != self.pointer_error:
                    log.error("model registry pointer unreadable, the current model keeps serving: %s", exc)
                model, self.pointer_error = None, str(exc)
            if model is not None:
                log.info("serving pointer moved to %s; loading %s", model.version, model.weights)
                self.loading = threading.Thread(target=self._load, args=(model,), name=f"load-{model.version}",
                                                daemon=True)
                self.loading.start()
        return None

    def _load(self, model: ModelVersion) -> None:
        try:
            loaded = self.load(model)
        except WeightsChanged as exc:  # says all there is to say: no traceback
            retry_s = self.watcher.failed(model.version)
            log.error("model %s is not served: %s; the previous model keeps serving (next try in %.0f s)",
                      model.version, exc, retry_s)
            return
        except Exception:
            retry_s = self.watcher.failed(model.version)
            log.exception("model %s could not be loaded; the previous model keeps serving (next try in %.0f s)",
                          model.version, retry_s)
            return
        if not self.watcher.still_serving(model.version):  # rolled back or promoted past it while it loaded
            log.info("model %s loaded, but the serving pointer has moved on since: not served", model.version)
            return
        self.watcher.loaded(model.version)
        with self.lock:
            self.ready = (model, loaded)
