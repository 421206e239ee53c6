"""The output writer: what it does to symlinks, devices, FIFOs, stale temp files and bad paths."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sflam_opt.errors import OutputError, SflamRuntimeError
from sflam_opt.io import atomic_write_text, check_writable


def test_regular_file_is_replaced_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["a.json"]


def test_symlink_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    # A dangling link creates the file it points to, and stays a link.
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "sub" / "made.json")
    atomic_write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "sub" / "made.json").read_text() == "made"


def test_dev_null_stays_a_character_device() -> None:
    before = os.stat("/dev/null")
    check_writable("/dev/null")
    atomic_write_text("/dev/null", "x" * 1000)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_fifo_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]


def test_dev_stdout_writes_to_the_pipe_without_replacing_anything(tmp_path: Path) -> None:
    code = "from sflam_opt.io import atomic_write_text; atomic_write_text('/dev/stdout', 'hi\\n')"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "hi\n"


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "big.json"
    # A writer killed mid-write leaves its temp file; simulate one whose pid is dead.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".big.json.sflam-{dead.pid}-abcd1234.tmp"
    stale.write_text("partial")
    live = tmp_path / f".big.json.sflam-{os.getpid()}-0000ffff.tmp"  # a writer still running
    live.write_text("in progress")
    other = tmp_path / ".other.json.sflam-1-abcd.tmp"  # another target's: not ours to judge
    other.write_text("x")
    atomic_write_text(target, "done")
    names = sorted(os.listdir(tmp_path))
    assert stale.name not in names
    assert live.name in names and other.name in names and "big.json" in names


def test_sigkill_mid_write_leaves_the_old_file_and_a_temp_that_the_next_write_removes(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out.json"
    target.write_text("previous")
    code = (
        "import os, signal\n"
        "from sflam_opt.io import write_stream\n"
        "def w(fh):\n"
        "    fh.write(b'half')\n"
        "    fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"write_stream({str(target)!r}, w)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert proc.returncode == -9
    assert target.read_text() == "previous"
    temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".out.json.sflam-")
    atomic_write_text(target, "next")
    assert os.listdir(tmp_path) == ["out.json"] and target.read_text() == "next"


@pytest.mark.parametrize("kind", ["parent is a file", "proc", "directory"])
def test_unwritable_targets_fail_up_front_with_the_users_path(tmp_path: Path, kind: str) -> None:
    if kind == "parent is a file":
        (tmp_path / "f").write_text("I am a file")
        target = tmp_path / "f" / "out.json"
    elif kind == "proc":
        target = Path("/proc/sflam-out.json")
    else:
        target = tmp_path
    with pytest.raises(OutputError) as pre:
        check_writable(target)
    with pytest.raises(OutputError) as write:
        atomic_write_text(target, "x")
    for err in (pre.value, write.value):
        msg = str(err)
        assert "\n" not in msg and str(target) in msg and ".tmp" not in msg
    if kind == "parent is a file":
        assert (tmp_path / "f").read_text() == "I am a file"


def test_read_only_directory_is_refused_when_it_really_is(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        # Root ignores permission bits: the probe tells the truth either way, and the preflight
        # agrees with what the write then does.
        try:
            (ro / "probe").touch()
            (ro / "probe").unlink()
            writable = True
        except PermissionError:
            writable = False
        if writable:
            check_writable(ro / "x.json")
            atomic_write_text(ro / "x.json", "ok")
        else:
            with pytest.raises(OutputError, match=str(ro / "x.json")):
                check_writable(ro / "x.json")
            with pytest.raises(OutputError, match=str(ro / "x.json")):
                atomic_write_text(ro / "x.json", "ok")
    finally:
        ro.chmod(0o755)


def test_directory_preflight(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "dir", directory=True)
    assert not (tmp_path / "new").exists()  # the check writes nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_writable(tmp_path / "file", directory=True)
    assert os.listdir(tmp_path) == ["file"]


def test_a_failed_write_is_a_runtime_error_naming_the_target(tmp_path, monkeypatch) -> None:
    target = tmp_path / "a.json"
    target.write_text("keep me")
    import sflam_opt.io as io

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(SflamRuntimeError) as info:
        atomic_write_text(target, "new")
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)
    assert target.read_text() == "keep me" and os.listdir(tmp_path) == ["a.json"]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("string_ids", [False, True])
def test_chunked_json_is_the_same_text_as_json_dumps(monkeypatch, n: int, string_ids: bool) -> None:
    import json

    import sflam_opt.jsonio as jsonio

    monkeypatch.setattr(jsonio, "_CHUNK", 3)
    rows = [
        {
            "id": f'd}}, {{"{i}' if string_ids else i,
            "v": float("nan") if i == 4 else i * 0.5,
            "flag": True,
            "none": None,
            "tiny": -1e-300,
        }
        for i in range(n)
    ]
    doc = {"a": 1, "x": float("inf"), "devices": rows, "violations": ["y"]}
    text = "".join(jsonio.iter_json(doc, "devices"))
    assert text == json.dumps(jsonio.finite(doc), indent=1) + "\n"
    assert json.loads(text)["x"] is None


def _repr_floats(text: str) -> str:
    """``text`` with every float value of a ``"key": value`` line spelled by ``repr``."""
    import re

    def respell(m: re.Match[str]) -> str:
        num = m.group(2)
        return m.group(1) + (repr(float(num)) if any(c in num for c in ".eE") else num) + m.group(3)

    return re.sub(r'(?m)(": )(-?\d[\d.eE+-]*)(,?)$', respell, text)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7])
def test_column_rows_are_the_same_text_as_the_rows(monkeypatch, n: int) -> None:
    import json

    import numpy as np

    import sflam_opt.jsonio as jsonio

    monkeypatch.setattr(jsonio, "_CHUNK", 3)
    ids = tuple(f'd}}, {{"{i}' if i % 2 else i for i in range(n))
    cols = (
        ids,
        np.arange(n, dtype=np.int64) + 2,
        np.linspace(0.1, 1e6, n),
        np.full(n, 876211.2360052426),  # one value for all: written once, repeated
        np.where(np.arange(n) == 1, np.inf, -1e-300 * np.arange(n)),
        np.full(n, -0.0),
        np.geomspace(1e-12, 1e22, n) if n else np.zeros(0),  # exponents both ways
    )
    table = jsonio.ColumnRows(("id", "bits", "bw", "same", "odd", "negzero", "exp"), cols)
    doc = {"a": 1, "devices": table, "violations": ["y"]}
    text = "".join(jsonio.iter_json(doc, "devices"))
    plain = jsonio.finite({**doc, "devices": table.rows()})
    # Same layout and same values; orjson spells some floats differently (1e-9 for 1e-09).
    assert _repr_floats(text) == json.dumps(plain, indent=1) + "\n"
    assert json.loads(text) == plain
    if n > 1:
        assert json.loads(text)["devices"][1]["odd"] is None


@pytest.mark.parametrize("indent", [None, 1, 4])
def test_streamed_reading_matches_json_loads(monkeypatch, indent) -> None:
    import io
    import json

    import sflam_opt.jsonio as jsonio

    monkeypatch.setattr(jsonio, "_READ_CHARS", 5)  # rows and values cut across reads
    rows = [{"id": f"a}}{i}", "v": [i, {"x": 1.5}], "w": 1e-7 * i} for i in range(9)]
    doc = {"head": "x" * 20, "devices": rows, "tail": [1, 2, {"k": None}], "n": 1.25e300}
    got, seen = [], []
    other, count = jsonio.read_json_streamed(
        io.StringIO(json.dumps(doc, indent=indent)),
        "devices",
        lambda first, chunk: (seen.append(first), got.extend(chunk)),
    )
    assert got == rows and count == len(rows)
    assert other == {k: v for k, v in doc.items() if k != "devices"}
    assert seen[0] == 0 and seen == sorted(seen)


def test_streamed_reading_decodes_the_last_rows_as_one_chunk() -> None:
    # The document's keys after the list hold braces of their own: the chunk must still be cut
    # at the list's last row, not fall back to decoding row by row (slow at a million rows).
    import io
    import json

    import sflam_opt.jsonio as jsonio

    rows = [{"id": i, "bits": 3, "w": 0.5 * i} for i in range(50)]
    doc = {"head": 1, "devices": rows, "violations": [], "info": {"a": {"b": 1}, "c": [1]}}
    chunks: list[int] = []
    other, count = jsonio.read_json_streamed(
        io.StringIO(json.dumps(doc, indent=1)), "devices", lambda first, c: chunks.append(len(c))
    )
    assert chunks == [50] and count == 50
    assert other == {"head": 1, "violations": [], "info": {"a": {"b": 1}, "c": [1]}}


@pytest.mark.parametrize(
    ("cut", "row", "truncated"),
    [
        (lambda t: t[: t.index('"id": 5')], 5, True),
        (lambda t: t[:-4], None, True),
        (lambda t: t.replace('"w": 3e-07', '"w": 3e-07.5'), 3, False),
    ],
)
def test_streamed_reading_names_the_row_of_bad_or_truncated_text(
    monkeypatch, cut, row, truncated
) -> None:
    import io
    import json

    import sflam_opt.jsonio as jsonio

    monkeypatch.setattr(jsonio, "_READ_CHARS", 64)
    text = json.dumps({"devices": [{"id": i, "w": 1e-7 * i} for i in range(9)]}, indent=1)
    with pytest.raises(jsonio.JsonReadError) as info:
        jsonio.read_json_streamed(io.StringIO(cut(text)), "devices", lambda *a: None)
    assert info.value.truncated is truncated
    if row is not None:
        assert info.value.row == row
    if not truncated:
        assert (
            info.value.field == "w"
            and info.value.line == text[: text.index("3e-07")].count("\n") + 1
        )
