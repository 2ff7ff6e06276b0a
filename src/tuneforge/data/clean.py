"""`data clean`: drop duplicates, redact personal data, enforce a length limit - and account for every row.

The cleaning log has one JSON line per removed or changed row: its source line, the action and the reason
(and for duplicates, the line of the row that was kept). A row absent from the log is in the output
unchanged. The output file and the log are written atomically (temp file + rename), so an interrupted run
never leaves a half-written file that looks finished.

Length policies: `drop` removes rows longer than max length; `error` refuses the file, naming them;
`truncate` shortens the trained text - the final answer (chat, prompt_completion) or the text (text rows) -
by whole tokens until the rendered row fits; a row whose prompt alone does not fit is removed, since no
answer can be kept. Preference and KTO rows are judged as pairs by their trainers, so only drop/error apply.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.atomic import write_chunks_atomic
from tuneforge.data.formats import LoadedData
from tuneforge.errors import DataError

LENGTH_POLICIES = ("drop", "truncate", "error")
DEDUP_MODES = ("exact", "near", "none")


@dataclass
class CleanResult:
    rows: list[dict]
    log: list[dict]
    summary: dict = field(default_factory=dict)


def _log_path(out: Path) -> Path:
    return out.with_name(out.name + ".cleaning_log.jsonl")


def _truncate_row(row: dict, fmt: str, tokenizer, counter, max_length: int) -> dict | None:
    """A copy whose trained text is cut so the row renders to <= max_length tokens, or None if impossible."""
    from tuneforge.data.audit import TokenCounter  # noqa: F401 - counter is a TokenCounter

    if fmt == "text":
        key_path = ("text",)
    elif "messages" in row:
        last = max(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")
        key_path = ("messages", last, "content")
    else:
        key_path = ("completion",)
    new = json.loads(json.dumps(row))
    holder = new
    for key in key_path[:-1]:
        holder = holder[key]
    ids = tokenizer(holder[key_path[-1]], add_special_tokens=False)["input_ids"]
    # Decoding a prefix and re-encoding can merge differently at the cut, so re-measure and cut again.
    for _ in range(8):
        over = int(counter.count([new], fmt).total[0]) - max_length
        if over <= 0:
            return new
        if over >= len(ids):
            return None
        ids = ids[: len(ids) - over]
        holder[key_path[-1]] = tokenizer.decode(ids)
    return None


def clean_rows(data: LoadedData, *, dedup: str = "exact", near_threshold: float = 0.8, redact_pii: bool = True,
               pii_types: list[str] | None = None, max_length: int | None = None, length_policy: str = "drop",
               tokenizer=None, progress: bool = False) -> CleanResult:
    if dedup not in DEDUP_MODES:
        raise DataError(f"unknown --dedup {dedup!r}", hint=f"use one of: {', '.join(DEDUP_MODES)}")
    if length_policy not in LENGTH_POLICIES:
        raise DataError(f"unknown --length-policy {length_policy!r}", hint=f"use one of: {', '.join(LENGTH_POLICIES)}")
    if max_length is not None and tokenizer is None:
        raise DataError("--max-length needs a tokenizer to count tokens", hint="pass --model")
    if max_length is not None and length_policy == "truncate" and data.format in ("preference", "kto"):
        raise DataError(f"--length-policy truncate is not supported for {data.format} rows",
                        hint="use --length-policy drop (or error); their trainers truncate pairs themselves")
    lines = data.line_numbers
    log: dict[int, list[dict]] = {}
    removed: set[int] = set()
    for entry in data.rejected:
        log.setdefault(-entry["line"], []).append({"line": entry["line"], "action": "removed", "reason": "invalid",
                                                   "details": entry["reasons"]})

    if dedup != "none":
        from tuneforge.data.dedup import exact_duplicates, near_duplicates

        exact = exact_duplicates(data.rows, lines, progress=progress)
        for g in exact:
            for i in g.indices[1:]:
                removed.add(i)
                log.setdefault(i, []).append({"line": lines[i], "action": "removed", "reason": "exact_duplicate",
                                              "kept_line": g.lines[0]})
        if dedup == "near":
            near = near_duplicates(data.rows, lines, threshold=near_threshold, ignore=sorted(removed),
                                   progress=progress)
            for c in near:
                for i, sim in zip(c.members[1:], c.similarities[1:]):
                    removed.add(i)
                    log.setdefault(i, []).append({"line": lines[i], "action": "removed", "reason": "near_duplicate",
                                                  "kept_line": c.representative_line, "similarity": round(sim, 3)})

    rows = list(data.rows)
    if max_length is not None:
        from tuneforge.data.audit import TokenCounter, count_lengths

        counter = TokenCounter(tokenizer)
        total = count_lengths(data, counter, progress).total
        over = [i for i in range(len(rows)) if total[i] > max_length and i not in removed]
        if over and length_policy == "error":
            shown = (", ".join(str(lines[i]) for i in over[:20])
                     + (f" and {len(over) - 20} more" if len(over) > 20 else ""))
            raise DataError(f"{len(over)} rows of {data.path} are longer than {max_length} tokens (lines {shown})",
                            hint="raise --max-length, or use --length-policy drop or truncate")
        for i in over:
            fixed = (_truncate_row(rows[i], data.format, tokenizer, counter, max_length)
                     if length_policy == "truncate" else None)
            if fixed is None:
                removed.add(i)
                reason = "too_long" if length_policy == "drop" else "too_long_prompt"
                log.setdefault(i, []).append({"line": lines[i], "action": "removed", "reason": reason,
                                              "tokens": int(total[i]), "max_length": max_length})
            else:
                rows[i] = fixed
                log.setdefault(i, []).append({"line": lines[i], "action": "changed", "reason": "truncated",
                                              "tokens": int(total[i]), "max_length": max_length})

    if redact_pii:
        from tuneforge.data.pii import redact_row, scan_rows

        found = scan_rows(rows, lines, types=pii_types, progress=progress)
        for i, types in found.rows.items():
            if i in removed:
                continue
            rows[i], count = redact_row(rows[i], pii_types)
            log.setdefault(i, []).append({"line": lines[i], "action": "changed", "reason": "pii_redacted",
                                          "types": types, "fields": found.row_fields[i], "matches": count})

    kept = [row for i, row in enumerate(rows) if i not in removed]
    entries = [e for _, group in sorted(log.items(), key=lambda kv: abs(kv[0]) if kv[0] < 0 else lines[kv[0]])
               for e in group]
    reasons = Counter(e["reason"] for e in entries if e["action"] == "removed")
    changes = Counter(e["reason"] for e in entries if e["action"] == "changed")
    summary = {"source": data.path, "source_sha256": data.sha256, "format": data.format,
               "rows_in": len(data.rows) + len(data.rejected), "rows_out": len(kept),
               "removed": dict(reasons), "changed": dict(changes),
               "rows_removed": len(removed) + len(data.rejected),
               "rows_changed": len({e["line"] for e in entries if e["action"] == "changed"})}
    return CleanResult(kept, entries, summary)


def write_clean(result: CleanResult, out: str | Path) -> dict:
    """Write the cleaned rows and the log (last line: the summary); returns paths and sha256s."""
    out = Path(out)
    sha = write_chunks_atomic(out, (json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in result.rows))
    log = _log_path(out)
    lines = [json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in result.log]
    summary = {"summary": {**result.summary, "output": str(out), "output_sha256": sha}}
    write_chunks_atomic(log, lines + [json.dumps(summary, ensure_ascii=False).encode("utf-8") + b"\n"])
    return {"output": str(out), "sha256": sha, "log": str(log)}
