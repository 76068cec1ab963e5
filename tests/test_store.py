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
    store = ArrayStore(tmp_path, size_limit=3 * 2**20, quota=3 * 2**20)
    sid = new_session_id()
    for i in range(8):
        store.put_image(sid, f"{i:032x}", np.zeros(2**20, dtype=np.uint8) + i, {})
    assert store.volume() < 6 * 2**20
    assert store.has_image(sid, f"{7:032x}")
    assert not store.has_image(sid, f"{0:032x}")


MB = 2**20


def _image(i, mb=1):
    return np.full(mb * MB, i, dtype=np.uint8)


def test_an_upload_over_quota_evicts_only_the_uploaders_own_oldest_images(tmp_path):
    # issue 11 item 6: six big uploads of one user filled the store and evicted everyone's
    store = ArrayStore(tmp_path, size_limit=40 * MB, quota=3 * MB)
    alice, bob = new_session_id(), new_session_id()
    store.put_image(bob, "b0" * 16, _image(9), {"name": "bob.tif"}, owner="bob")
    store.set_current(bob, "b0" * 16)
    removed = []
    for i in range(6):
        removed += store.put_image(alice, f"{i:032x}", _image(i), {"name": f"a{i}.tif"},
                                   owner="alice")
    assert removed == ["a0.tif", "a1.tif", "a2.tif"]  # her own, oldest first
    assert [store.has_image(alice, f"{i:032x}") for i in range(6)] == [False] * 3 + [True] * 3
    assert store.has_image(bob, "b0" * 16)
    assert store.get_image(bob, "b0" * 16)[0] == 9
    assert store.usage("alice") == 3 * MB and store.usage("bob") == MB


def test_an_image_larger_than_the_quota_is_refused_and_nothing_is_removed(tmp_path):
    store = ArrayStore(tmp_path, size_limit=40 * MB, quota=2 * MB)
    sid = new_session_id()
    store.put_image(sid, "a1" * 16, _image(1), {}, owner="alice")
    with pytest.raises(InputError, match="quota of 2 MB"):
        store.put_image(sid, "a2" * 16, _image(2, mb=3), {}, owner="alice")
    assert store.has_image(sid, "a1" * 16)
    assert store.usage("alice") == MB


def test_the_quota_is_per_owner_not_per_session(tmp_path):
    store = ArrayStore(tmp_path, size_limit=40 * MB, quota=2 * MB)
    tab1, tab2 = new_session_id(), new_session_id()
    store.put_image(tab1, "a1" * 16, _image(1), {}, owner="alice")
    store.put_image(tab2, "a2" * 16, _image(2), {}, owner="alice")
    store.put_image(tab2, "a3" * 16, _image(3), {}, owner="alice")
    assert not store.has_image(tab1, "a1" * 16)
    assert store.has_image(tab2, "a2" * 16) and store.has_image(tab2, "a3" * 16)
    # reloading the same image replaces its entry, it is not counted twice
    store.put_image(tab2, "a3" * 16, _image(3), {}, owner="alice")
    assert store.usage("alice") == 2 * MB and store.has_image(tab2, "a2" * 16)


def test_a_full_store_never_evicts_another_owners_current_image(tmp_path):
    # images may use 80 % of 10 MB: 8 MB; four owners of 2 MB each fill it
    store = ArrayStore(tmp_path, size_limit=10 * MB, quota=2 * MB)
    sessions = {}
    for k, owner in enumerate(["a", "b", "c", "d"]):
        sid = sessions[owner] = new_session_id()
        store.put_image(sid, f"{k:02x}" * 16, _image(k, mb=2), {}, owner=owner)
        store.set_current(sid, f"{k:02x}" * 16)
    late = new_session_id()
    with pytest.raises(InputError, match="store is full"):
        store.put_image(late, "ee" * 16, _image(5), {}, owner="e")
    assert all(store.has_image(sessions[o], f"{k:02x}" * 16) for k, o in enumerate("abcd"))
    # an owner whose image nobody shows any more (idle past protect_s) makes room
    idle = ArrayStore(tmp_path, size_limit=10 * MB, quota=2 * MB, protect_s=0)
    assert idle.put_image(late, "ee" * 16, _image(5), {}, owner="e") == []
    assert idle.has_image(late, "ee" * 16)
    assert not idle.has_image(sessions["a"], "00" * 16)  # the oldest went
    assert idle.has_image(sessions["d"], "03" * 16)


def test_two_processes_share_the_quota(tmp_path):
    store = ArrayStore(tmp_path, size_limit=40 * MB, quota=2 * MB)
    sid = new_session_id()
    proc = mp.get_context("spawn").Process(target=_put_as_alice, args=(str(tmp_path), sid))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    store.put_image(sid, "cc" * 16, _image(3), {}, owner="alice")
    assert store.usage("alice") == 2 * MB
    assert not store.has_image(sid, "aa" * 16) and store.has_image(sid, "bb" * 16)


def _put_as_alice(directory, sid):
    store = ArrayStore(directory, size_limit=40 * MB, quota=2 * MB)
    store.put_image(sid, "aa" * 16, _image(1), {}, owner="alice")
    store.put_image(sid, "bb" * 16, _image(2), {}, owner="alice")


def test_the_latest_recipe_is_kept_per_session(tmp_path):
    # issue 11 item 7: image ids are content hashes, so a recipe kept per image was shared
    store = ArrayStore(tmp_path)
    mine, theirs = new_session_id(), new_session_id()
    store.put_recipe(mine, "ab" * 16, {"v": "mine"})
    store.put_recipe(theirs, "ab" * 16, {"v": "theirs"})
    assert store.latest_recipe(mine, "ab" * 16) == {"v": "mine"}
    assert store.latest_recipe(theirs, "ab" * 16) == {"v": "theirs"}
    assert store.latest_recipe(new_session_id(), "ab" * 16) is None


def test_a_session_id_bound_to_a_user_is_refused_for_another(tmp_path):
    from pipeline.store import session_belongs_to

    sid = new_session_id("alice", "s3cret")
    check_session_id(sid)  # the same shape as a local session id
    assert session_belongs_to(sid, "alice", "s3cret")
    assert not session_belongs_to(sid, "bob", "s3cret")
    assert not session_belongs_to(sid, "alice", "another secret")
    assert not session_belongs_to(new_session_id(), "alice", "s3cret")
    assert not session_belongs_to(sid[:16] + "0" * 16, "alice", "s3cret")
    assert not session_belongs_to(None, "alice", "s3cret")
    with pytest.raises(InputError, match="secret"):
        new_session_id("alice", None)


def test_the_loader_makes_room_from_the_uploaders_own_images_and_says_so(tmp_path):
    from callbacks import loading
    from callbacks.services import Services
    from pipeline.config import Config

    # coins 116 kB, camera and moon 262 kB each (uint8): two fit in 430 kB, not three
    services = Services.create(Config(state_dir=tmp_path / "state", data_dir=tmp_path,
                                      user_quota_gb=430e3 / 1024**3))
    mine, theirs = new_session_id(), new_session_id()
    other = loading.load_image(services, theirs, None, "coins", None, None, None).meta
    coins = loading.load_image(services, mine, None, "coins", None, None, None).meta
    loading.load_image(services, mine, None, "camera", None, None, None)
    out = loading.load_image(services, mine, None, "moon", None, None, None)
    assert out.level == "info"
    assert "your oldest images were removed from the server: coins" in out.message
    assert not services.store.has_image(mine, coins["id"])
    assert services.store.has_image(theirs, other["id"])  # the same image, another owner
    with pytest.raises(InputError, match="no longer on the server"):
        services.run(mine, coins["id"], {})


def test_explore_reads_its_own_sessions_recipe_not_anothers(tmp_path):
    # issue 11 item 7: the notebook's Explorer read a recipe any session could overwrite
    from app import explore

    image = np.zeros((32, 40), np.uint8)
    image[8:24, 10:30] = 200
    explorer = explore(image, state_dir=tmp_path, serve=False)
    store = explorer.app._pipex_services.store
    mine = dict(explorer.recipe(), markers={"vmin": 50.0, "vmax": 150.0})
    store.put_recipe(explorer.session_id, explorer.image_id, mine)
    # someone else on the same image (its id is a content hash: anyone can name it)
    store.put_recipe(new_session_id(), explorer.image_id,
                     dict(mine, markers={"vmin": 1.0, "vmax": 2.0}))
    assert explorer.recipe()["markers"] == {"vmin": 50.0, "vmax": 150.0}
    # every page of explore()'s app uses the Explorer's session
    layout = explorer.app.server.test_client().get("/_dash-layout").get_data(as_text=True)
    assert explorer.session_id in layout


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int64])
def test_images_are_stored_without_a_copy_and_read_back_mapped(tmp_path, dtype):
    """An image is streamed to an .npy file (never pickled whole: a 2 GB stack must not
    need 2 GB more) and read back mapped copy-on-write: a request that writes to its array
    never changes the stored image."""
    import tracemalloc

    store = ArrayStore(tmp_path)
    sid = new_session_id()
    rows = 32 * 2**20 // (1000 * np.dtype(dtype).itemsize) + 1  # > 32 MB: 4 MB chunks
    image = (np.arange(rows * 1000).reshape(rows, 1000) % 251).astype(dtype)
    tracemalloc.start()
    store.put_image(sid, "ab" * 8, image, {"name": "x"})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * 2**22, peak  # a 4 MB chunk or two at a time, never a copy
    got = store.get_image(sid, "ab" * 8)
    assert type(got) is np.ndarray and got.dtype == image.dtype
    np.testing.assert_array_equal(got, image)
    got[0, 0] = 99  # a private page: the stored image is unchanged
    np.testing.assert_array_equal(store.get_image(sid, "ab" * 8), image)
    # a store written before images were files (pickled arrays) is still read
    store._cache.set(store._key(sid, "cd" * 8, "array"), image)
    np.testing.assert_array_equal(store.get_image(sid, "cd" * 8), image)


def test_reading_an_image_does_not_parse_python(tmp_path, monkeypatch):
    """np.load parses an .npy header with ast.literal_eval, which CPython 3.11 does not
    allow from several threads at once (a SystemError seen in CI when two requests read
    images together): the store reads its own headers."""
    import ast

    store = ArrayStore(tmp_path)
    sid = new_session_id()
    image = np.arange(60, dtype=np.float32).reshape(6, 10)
    store.put_image(sid, "ab" * 8, image, {})

    def refuse(*_a, **_k):
        raise AssertionError("ast.literal_eval called")

    monkeypatch.setattr(ast, "literal_eval", refuse)
    np.testing.assert_array_equal(store.get_image(sid, "ab" * 8), image)
