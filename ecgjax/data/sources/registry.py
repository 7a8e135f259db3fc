"""Corpora by name: one `Source` object per corpus layout, found from ingest's --source.

A source says in one place what ingest would otherwise branch on:
  layout        what --input must hold (for the messages of a wrong one)
  items         the picklable work items of a corpus (one per record, or per synthetic patient),
                planned up front; a `streamed` source yields them lazily instead (CODE-15's HDF5)
  read          one item -> its ECGRecords in mV (in the worker process that writes its shard)
  item_name     (record id, path) of an item, for rejected.csv
  default_split the patient-level split a store of it gets without split flags
  fold_of       the fold of an item, for sources with official folds (PTB-XL's strat_fold)

    @register("mine")
    class Mine(Source):
        layout = "a folder of *.mine files"
        def items(self, input, *, sampling_rate): ...
        def read(self, item): ...

`get(name)` finds it. The base class is the source of records already in memory
(`ingest.ingest_records`): each item is an ECGRecord, read as itself, validated by preprocess.
"""
from __future__ import annotations

import pathlib
from typing import Any, Iterable

from ecgjax.data.errors import ECGInputError
from ecgjax.data.record import ECGRecord
from ecgjax.data.splits import SplitConfig
from ecgjax.errors import UserError

_REGISTRY: dict[str, "Source"] = {}


class Source:
    """Defaults for a source whose items are ECGRecords; subclasses override what differs."""

    name: str = "records"  # set by `register`
    layout: str = "a corpus with records"
    needs_input: bool = True  # --input must name an existing file or folder
    streamed: bool = False    # `items` yields lazily (only in-flight shards held in memory)
    validated: bool = False   # `read` validates already (validate_record); else preprocess does
    has_folds: bool = False   # `fold_of` gives each item's official fold (a 'folds' split is possible)

    def items(self, input, *, sampling_rate: int) -> Iterable[Any]:
        """The picklable items of the corpus at `input` (a list; an iterator when `streamed`)."""
        raise NotImplementedError(f"source {self.name!r} plans no items")

    def read(self, item) -> list[ECGRecord]:
        """The ECGRecords of one item (ECGInputError naming the file for a bad one)."""
        return [item]

    def item_name(self, item) -> tuple[str, str]:
        """(record id, path) of an item, for rejected.csv."""
        return str(item.record_id), str(item.path)

    def default_split(self) -> SplitConfig:
        """80/10/10 % of patients by hash."""
        return SplitConfig(method="hash")

    def fold_of(self, item):
        raise NotImplementedError(f"source {self.name!r} has no folds")

    def describe_input(self, input) -> str:
        """--input as the store records it (ingest.json), to refuse resuming with another."""
        return str(input)

    def check_input(self, input) -> None:
        """A missing or nonexistent --input fails here, before any work, naming the flag and the fix."""
        if not self.needs_input:
            return
        if input is None or not str(input).strip():
            raise UserError(f"--input is required with --source={self.name}: pass {self.layout} "
                            f"(only --source=synthetic may omit it)")
        if not pathlib.Path(input).exists():
            raise ECGInputError(input, f"no such file or folder (--input); pass {self.layout}")


def register(name: str):
    """Class decorator: makes an instance of the source `get(name)` and sets its `name`."""

    def add(cls):
        if name in _REGISTRY:
            raise ValueError(f"source {name!r} is already registered ({type(_REGISTRY[name]).__qualname__})")
        instance = cls()
        instance.name = name
        _REGISTRY[name] = instance
        return cls

    return add


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get(name: str) -> Source:
    if name not in _REGISTRY:
        raise UserError(f"--source={name}: unknown source (expected one of {', '.join(names())})")
    return _REGISTRY[name]
