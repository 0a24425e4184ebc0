"""FileCache: one object per unchanged file and extra key, rebuilt when the file changes, bounded in size."""
import os

import pytest

from pixart_delta.loaders.file_cache import FileCache, clear_all_file_caches


class Builds:
    """A build function that counts its calls and returns a fresh object each time."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return object()


def write(path, data: bytes, mtime_ns: int):
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_same_file_gives_the_same_object(tmp_path):
    cache, build = FileCache(max_entries=2), Builds()
    path = write(tmp_path / "a.bin", b"abc", 10**18)
    first = cache.get(path, (), build)
    assert cache.get(path, (), build) is first
    assert cache.get(tmp_path / "." / "a.bin", (), build) is first    # the same file by another spelling
    assert build.calls == 1


def test_extra_key_separates_objects_of_one_file(tmp_path):
    cache, build = FileCache(max_entries=2), Builds()
    path = write(tmp_path / "a.bin", b"abc", 10**18)
    sd1, sdxl = cache.get(path, "sd1", build), cache.get(path, "sdxl", build)
    assert sd1 is not sdxl and build.calls == 2
    assert cache.get(path, "sd1", build) is sd1 and cache.get(path, "sdxl", build) is sdxl


@pytest.mark.parametrize("change", ["mtime", "size"])
def test_changed_file_is_rebuilt_and_the_old_object_dropped(tmp_path, change):
    cache, build = FileCache(max_entries=4), Builds()
    path = write(tmp_path / "a.bin", b"abc", 10**18)
    old = cache.get(path, (), build)
    if change == "mtime":
        write(path, b"abc", 10**18 + 1)
    else:
        write(path, b"abcd", 10**18)
    new = cache.get(path, (), build)
    assert new is not old and build.calls == 2
    assert cache.values() == [new]
    assert cache.get(path, (), build) is new and build.calls == 2


def test_least_recently_used_is_evicted_at_max_size(tmp_path):
    cache, build = FileCache(max_entries=2), Builds()
    a, b, c = (write(tmp_path / f"{n}.bin", n.encode(), 10**18) for n in "abc")
    obj_a, obj_b = cache.get(a, (), build), cache.get(b, (), build)
    assert cache.get(a, (), build) is obj_a          # a is now the most recently used
    obj_c = cache.get(c, (), build)
    assert len(cache) == 2 and cache.values() == [obj_a, obj_c]
    assert cache.get(a, (), build) is obj_a and build.calls == 3
    assert cache.get(b, (), build) is not obj_b and build.calls == 4    # b was evicted: built again


def test_failed_build_keeps_what_was_cached(tmp_path):
    cache, build = FileCache(max_entries=1), Builds()
    good = write(tmp_path / "good.bin", b"abc", 10**18)
    bad = write(tmp_path / "bad.bin", b"xyz", 10**18)
    obj = cache.get(good, (), build)

    def fails():
        raise ValueError("not a weight file")
    with pytest.raises(ValueError, match="not a weight file"):
        cache.get(bad, (), fails)
    assert cache.values() == [obj]


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        FileCache(max_entries=1).get(tmp_path / "missing.bin", (), Builds())


def test_clear_all_file_caches_empties_every_cache(tmp_path):
    (a, build_a), (b, build_b) = (FileCache(max_entries=2), Builds()), (FileCache(max_entries=1), Builds())
    path = write(tmp_path / "a.bin", b"abc", 10**18)
    first_a, first_b = a.get(path, (), build_a), b.get(path, "x", build_b)
    assert clear_all_file_caches() >= 2     # these two entries, plus whatever other tests' caches hold
    assert len(a) == len(b) == 0
    assert a.get(path, (), build_a) is not first_a and b.get(path, "x", build_b) is not first_b
    assert build_a.calls == build_b.calls == 2
