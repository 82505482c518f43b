"""storage.safe_key is injective (two different ids never share a key) and every key is one safe component."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fer_ray import storage

PLAIN = re.compile(r"[A-Za-z0-9._-]+")


def assert_safe(key: str) -> None:
    assert 0 < len(key) <= 150, key
    assert key.isascii() and "/" not in key and "\\" not in key and "\x00" not in key, key
    assert not key.startswith(".") and ".." not in key and key not in (".", ".."), key


# Ids a reviewer would try: unicode, separators, dots, empty-ish, very long, ids shaped like encoded keys
# (both the old "-<8 hex>" form and the current "~<16 hex>" form), near-duplicates differing in one character.
hexes = st.text("0123456789abcdef", min_size=8, max_size=16)
tricky = st.one_of(
    st.text(max_size=40),
    st.text("ab._-/ ~\\é\x00", max_size=12),
    st.sampled_from(["", ".", "..", "...", "_", "-", "~", "./a", "a/..", " ", "\t", "a b", "a_b", "a/b", "a\\b"]),
    st.builds(lambda a, h: f"{a}-{h}", st.text("xy _/", min_size=1, max_size=4), hexes),
    st.builds(lambda a, h: f"{a}~{h}", st.text("xy _/", min_size=1, max_size=4), hexes),
    st.builds(lambda n, c: "v" * n + c, st.integers(100, 300), st.sampled_from(["", "a", "b", " ", "/"])),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(tricky, min_size=2, max_size=30))
def test_distinct_ids_never_share_a_key(ids):
    keys = {storage.safe_key(i): i for i in ids}
    assert len(keys) == len(ids), sorted(ids)
    for key in keys:
        assert_safe(key)


@settings(max_examples=300, deadline=None)
@given(tricky)
@example("x y").via("the old collision")
@example("x_y-" + hashlib.sha1(b"x y").hexdigest()[:8]).via("the old collision's plain twin")
@example("x_y~" + hashlib.sha256(b"x y").hexdigest()[:16]).via("an id shaped like today's key of 'x y'")
def test_encoded_key_never_equals_a_plain_id(video_id):
    key = storage.safe_key(video_id)
    assert_safe(key)
    if storage.KEY_MARK in key:  # encoded: no id is its own key there, so no plain id can reach it
        assert storage.safe_key(key) != key
    else:
        assert key == video_id and PLAIN.fullmatch(key)


def test_old_collision_is_gone():
    """Before: 'x y' -> 'x_y-<sha1[:8]>' and the id 'x_y-<sha1[:8]>' passed through unchanged: one key, two ids."""
    old_shape = "x_y-" + hashlib.sha1(b"x y").hexdigest()[:8]
    assert storage.safe_key(old_shape) == old_shape  # plain ids keep their keys
    assert storage.safe_key("x y") != old_shape
    lookalike = storage.safe_key("x y")
    assert storage.safe_key(lookalike) != lookalike  # an id shaped like an encoded key is encoded itself
    assert len({storage.safe_key(i) for i in ("x y", "x/y", "x_y", "x\\y", "x\ty", old_shape, lookalike)}) == 7


@pytest.mark.parametrize("video_id", ["video_01", "clip-3.mp4", "tw_TW01", "Video_01", "pyfeat_single_face",
                                      "10-60-1280x720_right", "a" * 120])
def test_ordinary_ids_keep_their_keys(video_id):
    assert storage.safe_key(video_id) == video_id


@pytest.mark.parametrize("video_id", ["", ".", "..", "a" * 121, "_x", "x.", "..x", "a..b", "ü", "a/b", "~"])
def test_unsafe_ids_are_encoded_with_64_bit_hash(video_id):
    key = storage.safe_key(video_id)
    assert_safe(key)
    prefix, digest = key.rsplit(storage.KEY_MARK, 1)
    assert re.fullmatch(r"[0-9a-f]{16}", digest) and storage.KEY_MARK not in prefix
