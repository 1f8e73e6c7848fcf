# -*- coding: utf-8 -*-
"""Splunk's result rows for the "Send to opsmesh" alert action: the gzipped CSV in
results_file, with __mv_ multivalue columns decoded into lists.

Standard library only (see opsmesh.py)."""
import csv
import gzip
import io
import json

MAX_FIELD_BYTES = 16 * 1024 * 1024

# Result fields that Splunk adds for its own bookkeeping; they say nothing about the entity.
INTERNAL_FIELDS = frozenset(("_si", "_cd", "_bkt", "_serial", "_kv", "_eventtype_color", "_sourcetype"))


def decode_mv(encoded):
    """Decode Splunk's multivalue encoding ``$v1$;$v2$`` (``$$`` is a literal ``$``)."""
    values = []
    i = 0
    n = len(encoded)
    while i < n:
        if encoded[i] != "$":
            raise ValueError("multivalue item does not start with '$'")
        i += 1
        buf = []
        while True:
            if i >= n:
                raise ValueError("unterminated multivalue item")
            ch = encoded[i]
            if ch == "$":
                if i + 1 < n and encoded[i + 1] == "$":
                    buf.append("$")
                    i += 2
                    continue
                i += 1
                break
            buf.append(ch)
            i += 1
        values.append("".join(buf))
        if i < n:
            if encoded[i] != ";":
                raise ValueError("multivalue items are not separated by ';'")
            i += 1
            if i >= n:
                raise ValueError("trailing ';' in multivalue field")
    return values


def as_text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "%s" % (value,)


def normalize_row(row):
    """Field -> string, or list of strings for a multivalue field; empty values dropped."""
    out = {}
    if not isinstance(row, dict):
        return out
    for key, value in row.items():
        name = as_text(key)
        if not name or name.startswith("__mv_") or name in INTERNAL_FIELDS:
            continue
        if isinstance(value, (list, tuple)):
            items = [as_text(v) for v in value]
            if len(items) > 1:
                out[name] = items
            elif items and items[0] != "":
                out[name] = items[0]
            continue
        text = as_text(value)
        if text != "":
            out[name] = text
    return out


def read_results_file(path, max_rows, log):
    """Return (rows, more) with at most max_rows rows; more is True when rows were left out."""
    if csv.field_size_limit() < MAX_FIELD_BYTES:
        csv.field_size_limit(MAX_FIELD_BYTES)
    rows = []
    more = False
    warned = set()
    with gzip.open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if not header:
            return rows, False
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        mv_columns = {}
        plain = []
        for index, name in enumerate(header):
            if name.startswith("__mv_"):
                mv_columns[name[5:]] = index
            else:
                plain.append((index, name))
        plain_names = set(name for _, name in plain)
        mv_only = [(index, name) for name, index in mv_columns.items() if name not in plain_names]
        for record in reader:
            if not record:
                continue
            if len(rows) >= max_rows:
                more = True
                break
            row = {}
            for index, name in plain + mv_only:
                if name in INTERNAL_FIELDS or not name:
                    continue
                value = record[index] if index < len(record) else ""
                mv_index = mv_columns.get(name)
                encoded = record[mv_index] if mv_index is not None and mv_index < len(record) else ""
                if encoded:
                    try:
                        values = decode_mv(encoded)
                    except ValueError as err:
                        values = None
                        if name not in warned:
                            warned.add(name)
                            log.warn("column __mv_%s is not valid multivalue encoding (%s); using the plain value" % (name, err))
                    if values is not None and len(values) > 1:
                        row[name] = values
                        continue
                    if values is not None and len(values) == 1 and value == "":
                        value = values[0]
                if value != "":
                    row[name] = value
            rows.append(row)
    return rows, more
