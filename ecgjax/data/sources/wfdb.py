"""Any folder of WFDB records (MIT-BIH, INCART, a hospital's export): each record its own patient.

Layout: *.hea headers beside their signal files, found recursively, or listed in a RECORDS file;
--input may also be one .hea file or a RECORDS list. Records are read by readers.read_wfdb; a flat
lead (electrode off) is masked as absent rather than losing the whole record.
"""
from __future__ import annotations

import pathlib

from ecgjax.data.readers import read_wfdb
from ecgjax.data.record import ECGRecord
from ecgjax.data.sources.registry import Source, register


def record_paths(root) -> list[str]:
    """The WFDB records (paths without extension) a folder, a RECORDS list or a .hea file names."""
    root = pathlib.Path(root)
    if root.is_file():  # a single header or a RECORDS list
        if root.suffix == ".hea":
            return [str(root.with_suffix(""))]
        base, names = root.parent, root.read_text().split()
    elif (root / "RECORDS").is_file():
        base, names = root, (root / "RECORDS").read_text().split()
    else:
        base, names = root, sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.hea"))
    return [str(base / name) for name in names]


@register("wfdb")
class WFDB(Source):
    layout = "a folder of WFDB records (*.hea + signal files), a RECORDS list or one .hea file"
    validated = True

    def items(self, input, *, sampling_rate: int) -> list[dict]:
        return [{"path": path} for path in record_paths(input)]

    def read(self, item) -> list[ECGRecord]:
        return [read_wfdb(item["path"], allow_flat_leads=True)]

    def item_name(self, item) -> tuple[str, str]:
        return pathlib.Path(item["path"]).name, item["path"]
