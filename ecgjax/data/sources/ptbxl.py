"""PTB-XL (Wagner et al. 2020) in its official folder layout: 21,799 10 s 12-lead records of
18,869 patients, each labelled with SCP statements, split into 10 stratified folds.

Layout: ptbxl_database.csv (one row per record: ecg_id, patient_id, scp_codes, strat_fold,
filename_lr / filename_hr), scp_statements.csv (which statements are diagnostic, their
superclass), and records100/ (100 Hz) or records500/ (500 Hz) WFDB records. Labels: the five
diagnostic superclasses (NORM, MI, STTC, CD, HYP) and AFIB, one 0/1 metadata column each.
The default split is by strat_fold (train 1-8, val 9, test 10; ingest picks from the folds present
in a copy that lacks them).
"""
from __future__ import annotations

import ast
import pathlib
from typing import Iterable, Iterator

import pandas as pd

from ecgjax.data.errors import ECGInputError
from ecgjax.data.readers import read_wfdb
from ecgjax.data.record import ECGRecord, jsonable
from ecgjax.data.sources.registry import Source, register
from ecgjax.data.splits import SplitConfig

PTBXL_SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
# Statements worth a binary column of their own besides the superclasses.
PTBXL_EXTRA_BINARY = ("AFIB",)


def _ptbxl_default_filename(ecg_id: int, sampling_rate: int) -> str:
    """The official PTB-XL path of a record (used where the table lacks that filename column)."""
    suffix = "lr" if sampling_rate == 100 else "hr"
    return f"records{sampling_rate}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_{suffix}"


def load_ptbxl_table(root, sampling_rate: int = 100) -> pd.DataFrame:
    """One row per PTB-XL record with parsed labels.

    Columns: ecg_id, patient_id (str of the integer), age, sex (0 male, 1 female), strat_fold,
    filename (filename_lr or filename_hr for `sampling_rate` 100/500, relative to `root`),
    scp_codes (dict), superclasses / subclasses (sorted lists from the `diagnostic == 1` rows of
    scp_statements.csv, as in the official example code), and one bool column per superclass
    (NORM, MI, STTC, CD, HYP) and per statement in PTBXL_EXTRA_BINARY (AFIB).
    """
    root = pathlib.Path(root)
    database_path, statements_path = root / "ptbxl_database.csv", root / "scp_statements.csv"
    for required in (database_path, statements_path):
        if not required.is_file():
            raise ECGInputError(required, "missing PTB-XL table")
    if sampling_rate not in (100, 500):
        raise ECGInputError(root, f"PTB-XL sampling_rate must be 100 or 500, not {sampling_rate}")
    table = pd.read_csv(database_path)
    missing = {"ecg_id", "patient_id", "scp_codes"} - set(table.columns)
    if missing:
        raise ECGInputError(database_path, f"missing columns {sorted(missing)}")
    statements = pd.read_csv(statements_path, index_col=0)
    diagnostic = statements[statements["diagnostic"] == 1]
    to_class = diagnostic["diagnostic_class"].dropna().to_dict()
    to_subclass = diagnostic["diagnostic_subclass"].dropna().to_dict()

    table["ecg_id"] = table["ecg_id"].astype(int)
    table["patient_id"] = table["patient_id"].map(lambda p: str(int(p)) if pd.notna(p) else "")
    table["scp_codes"] = table["scp_codes"].map(ast.literal_eval)
    table["superclasses"] = table["scp_codes"].map(lambda codes: sorted({to_class[c] for c in codes if c in to_class}))
    table["subclasses"] = table["scp_codes"].map(
        lambda codes: sorted({to_subclass[c] for c in codes if c in to_subclass}))
    for name in PTBXL_SUPERCLASSES:
        table[name] = table["superclasses"].map(lambda classes, name=name: name in classes)
    for name in PTBXL_EXTRA_BINARY:
        table[name] = table["scp_codes"].map(lambda codes, name=name: name in codes)

    column = "filename_lr" if sampling_rate == 100 else "filename_hr"
    if column in table.columns:
        table["filename"] = table[column]
    else:  # e.g. the shared copy has no filename_hr: the official layout gives the path.
        table["filename"] = [_ptbxl_default_filename(i, sampling_rate) for i in table["ecg_id"]]
    return table.reset_index(drop=True)


def ptbxl_metadata(row) -> dict:
    """The metadata dict an ECGRecord carries for one row of `load_ptbxl_table`."""
    keys = ("ecg_id", "age", "sex", "strat_fold", "scp_codes", "superclasses", "subclasses",
            *PTBXL_SUPERCLASSES, *PTBXL_EXTRA_BINARY)
    return {key: (row[key].item() if hasattr(row[key], "item") else row[key]) for key in keys if key in row}


def read_ptbxl(root, *, sampling_rate: int = 100, ecg_ids: Iterable[int] | None = None,
               table: pd.DataFrame | None = None) -> Iterator[ECGRecord]:
    """Yields PTB-XL records (in table order) with their labels in `metadata`.

    `ecg_ids` restricts to those records; `table` reuses a `load_ptbxl_table` result.
    record_id is the ecg_id as a string, patient_id the PTB-XL patient id as a string.
    """
    root = pathlib.Path(root)
    table = load_ptbxl_table(root, sampling_rate) if table is None else table
    if ecg_ids is not None:
        table = table[table["ecg_id"].isin(set(int(i) for i in ecg_ids))]
    for row in table.to_dict("records"):
        record = read_wfdb(root / row["filename"], patient_id=row["patient_id"], source="ptbxl",
                           metadata=ptbxl_metadata(row))
        record.record_id = str(row["ecg_id"])
        yield record


@register("ptbxl")
class PTBXL(Source):
    layout = "the PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records100/)"
    validated = True
    has_folds = True

    def items(self, input, *, sampling_rate: int) -> list[dict]:
        """One item per row of `load_ptbxl_table` (`sampling_rate` 100 or 500: which records to read)."""
        root = pathlib.Path(input)
        return [{"path": str(root / row["filename"]), "record_id": str(row["ecg_id"]),
                 "patient_id": row["patient_id"], "metadata": jsonable(ptbxl_metadata(row))}
                for row in load_ptbxl_table(root, sampling_rate).to_dict("records")]

    def read(self, item) -> list[ECGRecord]:
        # A flat lead (electrode off) is masked as absent rather than losing the whole record.
        record = read_wfdb(item["path"], patient_id=item["patient_id"], source="ptbxl", metadata=item["metadata"],
                           allow_flat_leads=True)
        record.record_id = item["record_id"]
        return [record]

    def item_name(self, item) -> tuple[str, str]:
        return item["record_id"], item["path"]

    def default_split(self) -> SplitConfig:
        return SplitConfig(method="folds")

    def fold_of(self, item):
        return item["metadata"].get("strat_fold")
