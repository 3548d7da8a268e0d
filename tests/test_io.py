import os

import pytest

from fewbit._io import atomic_open, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file_with_usual_mode(tmp_path):
    path = tmp_path / "a" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").read_text().strip().startswith("{")


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_read_regular_file_refuses_fifos_devices_and_oversized_files(tmp_path):
    from fewbit._io import read_regular_file

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a plain read of a FIFO with no writer would block forever
    with pytest.raises(ValueError, match="not a regular file"):
        read_regular_file(fifo, 100)
    with pytest.raises(ValueError, match="not a regular file"):
        read_regular_file("/dev/zero", 100)  # a read that never ends
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(ValueError, match="101 bytes, more than the 100"):
        read_regular_file(big, 100)
    assert read_regular_file(big, 101) == b"x" * 101
    (tmp_path / "link").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="not a regular file"):
        read_regular_file(tmp_path / "link", 100)


def test_atomic_write_over_a_directory_names_it(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_text(tmp_path, "x")
    assert info.value.filename == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp file left


def test_json_never_holds_nan(tmp_path):
    from fewbit._io import finite_or_none, non_finite_path

    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()
    assert non_finite_path({"a": [1.0, {"b": float("inf")}]}) == "a.1.b"
    assert non_finite_path({"a": [1.0, 2]}) is None
    assert finite_or_none(float("nan")) is None and finite_or_none(1.5) == 1.5 and finite_or_none("x") == "x"


def _nodes(tmp_path):
    """A FIFO, a symbolic link, and (as root) a character device like /dev/null, each in tmp_path."""
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "target.txt").write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target.txt")
    nodes = {"a FIFO": (fifo, stat.S_ISFIFO), "a symbolic link": (link, stat.S_ISLNK)}
    if os.geteuid() == 0:
        dev = tmp_path / "null"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        nodes["a character device"] = (dev, stat.S_ISCHR)
    return nodes


def test_an_output_that_is_a_device_fifo_or_link_is_refused_and_kept(tmp_path):
    from fewbit._io import OutputError, atomic_write_bytes
    from fewbit.errors import FewbitError

    for kind, (path, still) in _nodes(tmp_path).items():
        with pytest.raises(OutputError, match=f"exists and is {kind}; fewbit writes only new or regular files"):
            atomic_write_bytes(path, b"replacement")
        assert still(os.lstat(path).st_mode), kind  # the node itself is untouched
        assert issubclass(OutputError, FewbitError)
    assert (tmp_path / "target.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_outputs_that_are_not_regular_files_are_refused_before_any_work(tmp_path, capsys):
    from fewbit.cli import main

    for kind, (path, still) in _nodes(tmp_path).items():
        for argv in (["export", "--model", "omniglot-conv4-w2", "--format", "onnx", "--out", str(path)],
                     ["data", "show", "glyphs", "--out", str(path)]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"exists and is {kind}" in err, err
            assert still(os.lstat(path).st_mode)
