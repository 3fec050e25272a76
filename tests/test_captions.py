"""Captions from tags by category."""

from e6ingest.captions import CaptionSpec, build_tags, rewrite_tag

DANBOORU_POST_1 = {
    "general": ["1girl", "solo", "cat_ears", ";p"],
    "artist": ["kyogoku_shin"],
    "character": ["kousaka_tamaki"],
    "copyright": ["to_heart_(series)", "to_heart_2"],
    "meta": ["bad_id", "commentary"],
}


def test_danbooru_default_order_and_rewriting():
    caption = build_tags("danbooru", DANBOORU_POST_1, CaptionSpec())
    assert caption == (
        "kyogoku shin, kousaka tamaki, to heart (series), to heart 2, 1girl, solo, "
        "cat ears, ;p, bad id, commentary"
    )


def test_e621_default_order():
    tags = {
        "general": ["anthro", "solo"],
        "species": ["red_panda"],
        "artist": ["fleurfurr"],
        "copyright": ["nintendo"],
        "character": ["fox_mccloud"],
        "meta": ["hi_res"],
    }
    assert build_tags("e621", tags, CaptionSpec()) == (
        "fleurfurr, nintendo, fox mccloud, red panda, anthro, solo, hi res"
    )


def test_emoticons_keep_their_underscores():
    spec = CaptionSpec()
    assert [rewrite_tag(t, spec) for t in ("^_^", ">_<", "o_o", "long_hair")] == [
        "^_^", ">_<", "o_o", "long hair",
    ]  # fmt: skip


def test_options():
    spec = CaptionSpec(order=("character", "general"), underscores_to_spaces=False, separator=" ")
    assert build_tags("danbooru", DANBOORU_POST_1, spec) == "kousaka_tamaki 1girl solo cat_ears ;p"
    repeated = {"general": ["solo", "solo"], "meta": ["solo"]}
    assert build_tags("danbooru", repeated, CaptionSpec()) == "solo"
