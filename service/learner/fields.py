"""The model's field numbering while it learns from JSON: rolled back when a batch is
refused, and agreed with the other workers of a shared store.

JSON events register their fields in order of first appearance, as the compiled scanner
meets them. A batch refused whole must leave no field behind (its good events registered
theirs before the bad one was found), so the registry as of the last learned batch is
kept; and with a shared store a new field's id must be the one every worker gives it
(``StateStore.share_fields``): when another worker numbered its new fields first, the
registry is rolled back, takes the shared names in their order, and the batch is parsed
again before anything of it is learned.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

from ftrl_core.fields import FieldRegistry, TooManyFieldsError
from ftrl_core.model import Model
from ftrl_core.readers.jsonl import JsonlFormat

from ..errors import Problem
from ..stores import StateStore
from ..variants import Variant

log = logging.getLogger(__name__)


class FieldNumbering:
    def __init__(self, model: Model, variants: list[Variant], strict: bool) -> None:
        self.model = model
        self.variants = variants
        self.strict = strict
        self.agreed: FieldRegistry = copy.deepcopy(model.registry)
        self.format = self._format()
        #: bumped whenever the registry object is replaced (predictions re-copy it)
        self.generation = 0

    def _format(self, strict: bool | None = None) -> JsonlFormat:
        options = replace(self.model.options,
                          strict=self.strict if strict is None else strict)
        return JsonlFormat(self.model.registry, options)

    def lenient_format(self) -> JsonlFormat:
        """The format that learns the log again: never strict (an event learned was valid
        under the settings of its day; unknown keys, if any, were ignored then too)."""
        return self._format(strict=False)

    @property
    def grew(self) -> bool:
        return len(self.model.registry) != len(self.agreed)

    def commit(self) -> None:
        """The batch was learned: its fields are part of the model."""
        if self.grew:
            self.agreed = copy.deepcopy(self.model.registry)

    def rollback(self) -> None:
        """Undo the fields a refused batch registered."""
        self.model.registry = copy.deepcopy(self.agreed)
        for v in self.variants:
            v.model.registry = self.model.registry
        self.format = self._format()
        self.generation += 1

    def share(self, store: StateStore) -> bool:
        """Agree on the ids of the fields a parsed batch registered. True when the registry
        was renumbered: the batch must be parsed again (nothing of it is learned yet).
        Raises the store's ``StoreUnavailable`` (the registry rolled back) or a 422."""
        known = len(self.agreed)
        if not self.grew:
            return False
        try:
            shared = store.share_fields(self.model.registry, known)
        except TooManyFieldsError as exc:
            self.rollback()
            raise Problem(422, "too-many-fields", f"{exc}; nothing was learned") from None
        except BaseException:
            self.rollback()
            raise
        if shared is None:
            return False
        log.info("fields renumbered as the shared registry has them: %s", ", ".join(shared))
        self.rollback()
        for name in shared:
            self.model.registry.add(name)
        self.agreed = copy.deepcopy(self.model.registry)
        self.format = self._format()
        return True
