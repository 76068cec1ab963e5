import multiprocessing as mp

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.store import ArrayStore, check_session_id, new_session_id


def test_round_trip_and_metadata(tmp_path):
    store = ArrayStore(tmp_path)
    sid = new_session_id()
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    store.put_image(sid, "ab" * 16, image, {"name": "x"})
    got = store.get_image(sid, "ab" * 16)
    np.testing.assert_array_equal(got, image)
    assert got.dtype == np.uint16
    assert store.get_meta(sid, "ab" * 16) == {"name": "x"}
    assert store.has_image(sid, "ab" * 16)


def test_sessions_are_isolated(tmp_path):
    store = ArrayStore(tmp_path)
    alice, bob = new_session_id(), new_session_id()
    store.put_image(alice, "cd" * 16, np.ones((2, 2)), {})
    assert not store.has_image(bob, "cd" * 16)
    with pytest.raises(InputError, match="no longer on the server"):
        store.get_image(bob, "cd" * 16)


@pytest.mark.parametrize("bad", [None, "", "../etc", "ABC", "0" * 31, 12])
def test_malformed_session_ids_are_refused(bad):
    with pytest.raises(InputError, match="session_id"):
        check_session_id(bad)


def test_malformed_image_id_is_refused(tmp_path):
    store = ArrayStore(tmp_path)
    with pytest.raises(InputError, match="image_id"):
        store.get_image(new_session_id(), "../../x")


def _write_from_other_process(directory, sid):
    ArrayStore(directory).put_image(sid, "ef" * 16, np.full((4, 4), 7, dtype=np.uint8), {"by": "child"})


def test_another_process_sees_the_same_store(tmp_path):
    sid = new_session_id()
    proc = mp.get_context("spawn").Process(target=_write_from_other_process, args=(str(tmp_path), sid))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    store = ArrayStore(tmp_path)
    assert store.get_image(sid, "ef" * 16)[0, 0] == 7
    assert store.get_meta(sid, "ef" * 16) == {"by": "child"}


def test_size_limit_evicts(tmp_path):
    store = ArrayStore(tmp_path, size_limit=3 * 2**20)
    sid = new_session_id()
    for i in range(8):
        store.put_image(sid, f"{i:032x}", np.zeros(2**20, dtype=np.uint8) + i, {})
    assert store.volume() < 6 * 2**20
    assert store.has_image(sid, f"{7:032x}")
    assert not store.has_image(sid, f"{0:032x}")
