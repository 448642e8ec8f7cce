"""The prediction folder (flexseg.predict.outputs): nothing of the user's replaced, files
whole or not at all, an interrupted run finished, one writer at a time. Each case checks
that every file that was there before is byte-identical after."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexseg.errors import DataError
from flexseg.locks import LOCK
from flexseg.predict.outputs import MANIFEST, PARTIAL, OutputFolder

pytestmark = pytest.mark.once  # files and folders only: the same on every backend

IDENTITY = {"checkpoints": [["run/checkpoints/best.keras", 10, 1]], "tta": "none"}


def planned(folder: Path, names=("a", "b", "c")) -> dict[str, dict[str, Path]]:
    return {n: {"mask": folder / "masks" / f"{n}.png", "overlay": folder / "overlays" / f"{n}.png"}
            for n in names}  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def predict(out: OutputFolder, plan, keys, content=b"mask") -> None:
    for key in keys:
        for path in plan[key].values():
            out.write(path, lambda tmp, c=content: tmp.write_bytes(c))


def test_a_first_run_writes_everything_and_records_it(tmp_path):
    out_dir = tmp_path / "out"
    plan = planned(out_dir)
    with OutputFolder(out_dir, IDENTITY) as out:
        todo = out.plan(plan)
        assert todo == ["a", "b", "c"] and (out_dir / LOCK).is_file()
        predict(out, plan, todo)
    assert not (out_dir / LOCK).exists()
    assert sorted(p.name for p in (out_dir / "masks").iterdir()) == ["a.png", "b.png", "c.png"]
    lines = (out_dir / MANIFEST).read_text().splitlines()
    assert len(lines) == 1 + 6 and '"identity"' in lines[0]


def test_overwrite_never_replaces_a_file_flexseg_did_not_write(tmp_path):
    out_dir = tmp_path / "out"
    (out_dir / "masks").mkdir(parents=True)
    (out_dir / "masks" / "b.png").write_bytes(b"the user's own mask")
    (out_dir / "README.md").write_text("notes")
    before = snapshot(out_dir)
    foreign = r"1 file\(s\) in .* not written there by flexseg, e.g. masks/b.png; they are left"
    with (
        OutputFolder(out_dir, IDENTITY, overwrite=True) as out,
        pytest.raises(DataError, match=foreign),
    ):
        out.plan(planned(out_dir))
    assert snapshot(out_dir) == before
    assert sorted(p.name for p in out_dir.iterdir()) == ["README.md", "masks"]  # no lock left


def test_a_planted_link_is_neither_followed_nor_replaced(tmp_path):
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"precious")
    out_dir = tmp_path / "out"
    (out_dir / "masks").mkdir(parents=True)
    (out_dir / "masks" / "a.png").symlink_to(outside)
    with (
        OutputFolder(out_dir, IDENTITY, overwrite=True) as out,
        pytest.raises(DataError, match="not written there by flexseg, e.g. masks/a.png"),
    ):
        out.plan(planned(out_dir))
    assert outside.read_bytes() == b"precious"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out_dir / "overlays").symlink_to(elsewhere)
    (out_dir / "masks" / "a.png").unlink()
    with (
        OutputFolder(out_dir, IDENTITY, overwrite=True) as out,
        pytest.raises(DataError, match=r"overlays leads out of the output folder"),
    ):
        out.plan(planned(out_dir))
    assert list(elsewhere.iterdir()) == []


def test_a_folder_of_the_data_set_or_of_the_inputs_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "masks").mkdir(parents=True)
    (data / "masks" / "a.png").write_bytes(b"ground truth")
    before = snapshot(data)
    for output in (data / "masks", data / "masks" / "deeper"):
        with (
            pytest.raises(DataError, match="a folder of the run's data set"),
            OutputFolder(output, IDENTITY, protected=[data / "masks"], overwrite=True),
        ):
            pass
    with (
        OutputFolder(data, IDENTITY, protected=[data / "masks"], overwrite=True) as out,
        pytest.raises(DataError, match="would be written into a folder of the inputs"),
    ):
        out.plan(planned(data))  # data/masks/a.png: the ground truth
    inputs = tmp_path / "scans"
    inputs.mkdir()
    with (
        OutputFolder(tmp_path, IDENTITY, inputs=[inputs]) as out,
        pytest.raises(DataError, match="would be written into a folder of the inputs"),
    ):
        out.plan({"a": {"mask": inputs / "a.png"}})
    assert snapshot(data) == before and not (data / LOCK).exists()
    assert not (data / "masks" / "deeper").exists() and list(inputs.iterdir()) == []


def test_an_output_that_is_a_file_or_cannot_be_written_is_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(DataError, match="is a file, not a folder"),
        OutputFolder(tmp_path / "file", IDENTITY),
    ):
        pass
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            with (
                pytest.raises(DataError, match="permission denied"),
                OutputFolder(locked, IDENTITY),
            ):
                pass
        finally:
            locked.chmod(0o755)


def test_an_interrupted_run_is_finished_and_cut_files_never_count(tmp_path):
    out_dir = tmp_path / "out"
    plan = planned(out_dir)
    with OutputFolder(out_dir, IDENTITY) as out:
        predict(out, plan, out.plan(plan)[:2])
    # as a kill leaves it: a temporary file beside its final name, the lock of a dead process
    cut = out_dir / "masks" / f".c{PARTIAL}99999.png"
    cut.write_bytes(b"ha")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (out_dir / LOCK).write_text(dead)
    before = snapshot(out_dir)
    with OutputFolder(out_dir, IDENTITY) as out:
        todo = out.plan(plan)
        assert todo == ["c"] and out.skipped == 2 and not cut.exists()
        predict(out, plan, todo)
    after = snapshot(out_dir)
    assert {k: v for k, v in after.items() if k in before and k != MANIFEST} == {
        k: v for k, v in before.items() if k in after and k != MANIFEST
    }  # what was complete is untouched
    assert "masks/c.png" in after and not (out_dir / LOCK).exists()


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    out_dir = tmp_path / "out"
    plan = planned(out_dir)
    with OutputFolder(out_dir, IDENTITY) as out:
        predict(out, plan, out.plan(plan))
    before = snapshot(out_dir)
    other = {**IDENTITY, "tta": "flip"}
    with (
        OutputFolder(out_dir, other) as out,
        pytest.raises(DataError, match="of another run or other settings; set overwrite"),
    ):
        out.plan(plan)
    assert snapshot(out_dir) == before
    with OutputFolder(out_dir, other, overwrite=True) as out:
        assert out.plan(plan) == ["a", "b", "c"]
        predict(out, plan, ["a", "b", "c"], content=b"new")
    assert (out_dir / "masks" / "a.png").read_bytes() == b"new"


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / LOCK).write_text(str(os.getppid()))  # a process that runs
    with (
        OutputFolder(out_dir, IDENTITY) as out,
        pytest.raises(DataError, match=f"in use: process {os.getppid()} is writing there"),
    ):
        out.plan(planned(out_dir))
    assert sorted(p.name for p in out_dir.iterdir()) == [LOCK]


def test_a_full_disk_is_one_error_and_leaves_no_cut_file(tmp_path):
    out_dir = tmp_path / "out"
    plan = planned(out_dir)

    def full(tmp: Path) -> None:
        tmp.write_bytes(b"par")
        raise OSError(errno.ENOSPC, "No space left on device")

    with OutputFolder(out_dir, IDENTITY) as out:
        todo = out.plan(plan)
        predict(out, plan, todo[:1])
        with pytest.raises(DataError, match=r"the disk of .* is full: 2 file\(s\) were written"):
            out.write(plan["b"]["mask"], full)
    assert sorted(p.name for p in (out_dir / "masks").iterdir()) == ["a.png"]
    with OutputFolder(out_dir, IDENTITY) as out:
        assert out.plan(plan) == ["b", "c"]  # the same command finishes
