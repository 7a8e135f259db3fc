"""Released models: weights, config, card and checksums shipped inside the package.

    path = zoo.verified_path("cl-resnet18-ptbxl")   # the entry's folder, every file checked
    zoo.names()                                      # what is released

Each entry is a folder `ecgjax/zoo/<name>/` in one of the two save formats (a pretrained encoder:
pretrained.json + variables.msgpack, ecgjax.loader.export_pretrained; a model with heads:
classifier.json + variables.msgpack, ecgjax.downstream.model) plus `card.md`. `registry.json`
lists each entry's kind, a one-line summary and the SHA-256 of every file; the loader refuses a
file that is missing or differs (truncated, altered) in one line naming it. Write an entry with
`ecgjax.zoo.release(...)`, which records the checksums; each card names the command that
rebuilds its files (benchmarks/zoo.py).
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

from ecgjax.errors import UserError

PREFIX = "zoo:"
ROOT = pathlib.Path(__file__).resolve().parent
REGISTRY = ROOT / "registry.json"
CARD = "card.md"
KINDS = ("encoder", "model")  # a pretraining run's network / an encoder with trained heads


def is_zoo(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def registry() -> dict:
    """{name: {kind, summary, files: {file name: sha256}}} of the released models."""
    return json.loads(REGISTRY.read_text()) if REGISTRY.is_file() else {}


def names() -> list[str]:
    return sorted(registry())


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry(name: str) -> dict:
    """The registry entry of `name` (with or without 'zoo:'); UserError listing the names otherwise."""
    name = name[len(PREFIX):] if is_zoo(name) else name
    entries = registry()
    if name not in entries:
        from ecgjax.cli import closest
        raise UserError(f"{PREFIX}{name}: no such released model{closest(name, entries)}; released: "
                        f"{', '.join(PREFIX + n for n in sorted(entries)) or 'none'}")
    return {"name": name, **entries[name]}


def verified_path(name: str) -> pathlib.Path:
    """The folder of released model `name`, after checking every file against its SHA-256."""
    info = entry(name)
    folder = ROOT / info["name"]
    for file_name, want in info["files"].items():
        path = folder / file_name
        if not path.is_file():
            raise UserError(f"{path}: file of released model {PREFIX}{info['name']} is missing; "
                            f"reinstall ecgjax (pip install .)")
        if sha256(path) != want:
            raise UserError(f"{path}: checksum differs from the release's (truncated or altered file); "
                            f"reinstall ecgjax, or rebuild it with the command in {folder / CARD}")
    return folder


def release(name: str, source_folder, kind: str, summary: str, card: str) -> pathlib.Path:
    """Copies a saved model folder into the zoo as `name` with `card` (Markdown) and records the
    SHA-256 of every file in registry.json. Used by benchmarks/zoo.py."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = ROOT / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in sorted(pathlib.Path(source_folder).iterdir()):
        if path.is_file() and path.name != CARD:
            shutil.copy2(path, folder / path.name)
    (folder / CARD).write_text(card)
    entries = registry()
    entries[name] = {"kind": kind, "summary": summary,
                     "files": {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}}
    REGISTRY.write_text(json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
    return folder
