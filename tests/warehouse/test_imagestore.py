from warehouse.imagestore import LocalImageStore, sha256_bytes


def test_same_bytes_stored_once(workspace):
    store = LocalImageStore(workspace)
    sha1, uri1 = store.put(b"\x89PNG fake bytes", "PNG")
    sha2, uri2 = store.put(b"\x89PNG fake bytes", "PNG")
    assert (sha1, uri1) == (sha2, uri2)
    assert sha1 == sha256_bytes(b"\x89PNG fake bytes")
    assert len(list(workspace.images.rglob("*.png"))) == 1
    assert store.get(sha1) == b"\x89PNG fake bytes"
    assert not uri1.startswith("/")  # relative to the workspace: the workspace can move


def test_missing_image_is_a_clear_error(workspace):
    store = LocalImageStore(workspace)
    assert not store.exists("0" * 64)
    import pytest
    with pytest.raises(FileNotFoundError, match="not in the store"):
        store.get("0" * 64)
