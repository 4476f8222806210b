"""constcl_zoo.inference.clips: the one copy of which decoded frames a clip takes (pretraining views wrap around,
evaluation and key-frame clips repeat the nearest frame), as every caller used it before it was shared."""

from __future__ import annotations

import pytest

from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.inference.clips import centred_start, clip_indices, clip_span


def test_span_and_the_two_ways_past_the_end():
    assert clip_span(16, 2) == 31 and clip_span(1, 5) == 1
    assert clip_indices(15, 4, 2, 20, past_end="wrap") == [15, 17, 19, 1]  # the official _sample_or_pad
    assert clip_indices(15, 4, 2, 20, past_end="clamp") == [15, 17, 19, 19]
    assert clip_indices(-3, 4, 2, 20, past_end="clamp") == [0, 0, 1, 3]
    assert clip_indices(-3, 4, 2, 20, past_end="clamp", first=2) == [2, 2, 2, 3]  # a streaming buffer's oldest
    with pytest.raises(InvalidArgumentError, match="past_end"):
        clip_indices(0, 4, 2, 20, past_end="pad")


def test_a_clip_centred_on_a_key_frame():
    # frame num_frames // 2 of the clip is the key frame (the localizer's clips, in training and in localize())
    for key, nf, stride in [(4, 4, 2), (9, 4, 2), (10, 5, 2), (0, 1, 1), (7, 8, 1)]:
        idx = clip_indices(centred_start(key, nf, stride), nf, stride, 1000, past_end="clamp")
        assert len(idx) == nf and idx[nf // 2] == key and idx == list(range(idx[0], idx[-1] + 1, stride))
    assert clip_indices(centred_start(2, 4, 2), 4, 2, 10, past_end="clamp") == [0, 0, 2, 4]
    assert clip_indices(centred_start(9, 4, 2), 4, 2, 10, past_end="clamp") == [5, 7, 9, 9]
