"""Every check of untrusted input: paths confined to their folder, reads bounded, names shown as text.

edgeq runs in CI on files from pull requests, so a model folder and a bundle are untrusted input.
``files`` confines every path edgeq.toml or a bundle names to its folder and bounds every read;
``shown`` renders any user- or file-controlled string as one line of plain text.
"""

from edgeq.inputs.files import (
    MAX_JSON,
    MAX_LABELS,
    MAX_TEXT,
    MAX_TOKENIZER,
    MAX_TOML,
    inside,
    load_json,
    load_toml,
    read_bytes,
    read_labels,
    read_text,
    regular_file,
)
from edgeq.inputs.shown import printable, shown

__all__ = [
    "MAX_JSON",
    "MAX_LABELS",
    "MAX_TEXT",
    "MAX_TOKENIZER",
    "MAX_TOML",
    "inside",
    "load_json",
    "load_toml",
    "printable",
    "read_bytes",
    "read_labels",
    "read_text",
    "regular_file",
    "shown",
]
