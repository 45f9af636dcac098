"""Short sentences that tell a user what a table dataset probably means and how to upload it right.

Warnings go with a ready upload (a label column under another name, a row number used as a feature); hints are
added to a refusal (the column that looks like labels, or like text, when the default name is missing).
"""

from __future__ import annotations

from worker.engine.columns import ColumnSummary, TableSample

DEFAULT_LABEL_COLUMN = "label"
DEFAULT_TEXT_COLUMN = "text"
# Names that usually hold the labels, best first, compared without case.
LABEL_NAMES = ("label", "labels", "target", "targets", "class", "classes", "y", "category", "categories")
FEW_DISTINCT = 20  # a string or integer column with at most this many values looks like classes
ROW_NUMBER_NAMES = ("", "unnamed: 0", "index", "id", "idx", "row")
MIN_TEXT_CHARS = 20  # mean length of a column that looks like free text


def input_column(info: dict, columns: list[str], text_column: str | None) -> str | None:
    """The column a text dataset reads its input from (text or input_ids); None for a numeric table."""
    if "pad_id" not in info:
        return None
    if text_column:
        return text_column
    return "input_ids" if "input_ids" in columns else DEFAULT_TEXT_COLUMN


def _few_values(column: ColumnSummary, rows: int) -> bool:
    count = column.distinct_count
    return count is not None and 1 < count <= FEW_DISTINCT and count * 2 <= rows


def label_candidate(sample: TableSample, exclude: set[str]) -> str | None:
    """The column that looks like labels: a label-like name, else the only string or integer column of few values."""
    columns = [c for c in sample.columns if c.name not in exclude]
    lowered: dict[str, str] = {}
    for column in columns:
        lowered.setdefault(column.name.strip().lower(), column.name)
    for name in LABEL_NAMES:
        if name in lowered:
            return lowered[name]
    for kind in ("string", "integer"):
        found = [c.name for c in columns if c.kind == kind and _few_values(c, sample.rows)]
        if len(found) == 1:  # several are a guess no better than chance: say nothing
            return found[0]
    return None


def text_candidate(sample: TableSample, exclude: set[str]) -> str | None:
    """The string column with the longest values, when they are long enough to be free text."""
    columns = [c for c in sample.columns if c.name not in exclude and c.kind == "string"]
    best = max(columns, key=lambda c: c.mean_text_chars, default=None)
    return best.name if best is not None and best.mean_text_chars >= MIN_TEXT_CHARS else None


def _label_sentence(label: str, candidate: str) -> str:
    return f"no column named `{label}`; `{candidate}` looks like labels: upload again with label_column={candidate}"


def dataset_warnings(sample: TableSample, info: dict, label_column: str | None, text_column: str | None) -> list[str]:
    """Warnings for a dataset that validated: what it will be trained as is probably not what was meant."""
    names = [c.name for c in sample.columns]
    label = label_column or DEFAULT_LABEL_COLUMN
    source = input_column(info, names, text_column)
    warnings = []
    if not info.get("has_labels"):
        candidate = label_candidate(sample, {source} if source else set())
        if candidate:
            used = "" if source else f" (`{candidate}` is used as a feature now)"
            warnings.append(_label_sentence(label, candidate) + used)
    else:
        column = sample.get(label)
        if column is not None and column.distinct_count == 1:
            warnings.append(
                f"the label column `{label}` holds one value in the rows read: a student cannot learn to tell "
                "classes apart from it"
            )
    if source is None:
        warnings.extend(_row_number_warnings(sample, label))
    return warnings


def _row_number_warnings(sample: TableSample, label: str) -> list[str]:
    """A numeric table's row-number column (pandas' to_csv writes one) is used as a feature: say so."""
    out = []
    for column in sample.columns:
        unique = column.many or column.distinct_count == sample.rows
        if column.name != label and column.name.strip().lower() in ROW_NUMBER_NAMES and column.kind == "integer":
            if unique and sample.rows > 1:
                out.append(
                    f"column `{column.name}` looks like a row number and is used as a feature; drop it "
                    "(pandas writes one unless to_csv(index=False))"
                )
    return out


def refusal_hints(sample: TableSample, label_column: str | None, text_column: str | None) -> list[str]:
    """Hints to add to a refused table: the columns that look like labels or text when the default is missing."""
    names = {c.name for c in sample.columns}
    hints = []
    text = None
    if not text_column and DEFAULT_TEXT_COLUMN not in names and "input_ids" not in names:
        text = text_candidate(sample, {label_column or DEFAULT_LABEL_COLUMN})
        if text:
            hints.append(
                f"no column named `{DEFAULT_TEXT_COLUMN}`; `{text}` looks like text: upload again with "
                f"text_column={text} and a tokenizer"
            )
    if not label_column and DEFAULT_LABEL_COLUMN not in names:
        exclude = {text_column or text or DEFAULT_TEXT_COLUMN, "input_ids"}
        candidate = label_candidate(sample, exclude)
        if candidate:
            hints.append(_label_sentence(DEFAULT_LABEL_COLUMN, candidate))
    return hints
