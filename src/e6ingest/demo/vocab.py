"""A synthetic tag vocabulary with real-looking names and Zipf-like frequencies."""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import accumulate

_COLOURS = [
    "black",
    "white",
    "red",
    "blue",
    "green",
    "yellow",
    "pink",
    "purple",
    "orange",
    "brown",
    "grey",
    "aqua",
]
_PARTS = [
    "hair",
    "eyes",
    "fur",
    "body",
    "skin",
    "tail",
    "ears",
    "wings",
    "nose",
    "horns",
    "sclera",
    "clothing",
]
_ITEMS = [
    "shirt",
    "skirt",
    "dress",
    "thighhighs",
    "gloves",
    "boots",
    "hat",
    "ribbon",
    "bow",
    "collar",
    "jacket",
    "scarf",
    "sweater",
    "shorts",
    "pants",
    "socks",
    "necklace",
    "earrings",
    "bracelet",
    "belt",
    "cape",
    "hoodie",
]
_POSES = [
    "standing",
    "sitting",
    "lying",
    "kneeling",
    "looking_at_viewer",
    "looking_back",
    "smile",
    "open_mouth",
    "blush",
    "closed_eyes",
    "one_eye_closed",
    "tongue_out",
    "hand_on_hip",
    "arms_up",
    "from_side",
    "from_behind",
    "upper_body",
    "full_body",
    "cowboy_shot",
    "portrait",
    "close-up",
]

GENERAL_HEAD = {
    "danbooru": [
        "1girl",
        "solo",
        "long_hair",
        "breasts",
        "looking_at_viewer",
        "blush",
        "smile",
        "short_hair",
        "open_mouth",
        "bangs",
        "simple_background",
        "white_background",
        "multiple_girls",
        "1boy",
        "skirt",
        "thighhighs",
        "^_^",
        ":3",
        ">_<",
        "o_o",
        "solo_focus",
        "comic",
        "monochrome",
        "greyscale",
        "animal_ears",
    ],
    "e621": [
        "anthro",
        "solo",
        "male",
        "female",
        "fur",
        "clothing",
        "simple_background",
        "tail",
        "duo",
        "looking_at_viewer",
        "smile",
        "text",
        "biped",
        "standing",
        "nude",
        "open_mouth",
        "feral",
        ":3",
        "^_^",
        "solo_focus",
        "monochrome",
    ],
}
SPECIES = [
    "mammal",
    "canid",
    "canine",
    "fox",
    "wolf",
    "domestic_dog",
    "felid",
    "feline",
    "domestic_cat",
    "dragon",
    "scalie",
    "reptile",
    "avian",
    "bird",
    "lagomorph",
    "rabbit",
    "equid",
    "horse",
    "mustelid",
    "otter",
    "ursid",
    "bear",
    "procyonid",
    "raccoon",
    "ailurid",
    "red_panda",
    "hyena",
    "bovid",
    "goat",
    "deer",
    "pokemon_(species)",
    "eeveelution",
    "sergal",
    "protogen",
    "hybrid",
]
# Species implications, as e621 has them: a post tagged fox is tagged canine, canid, mammal.
IMPLIES = {
    "canid": "mammal", "canine": "canid", "fox": "canine", "wolf": "canine",
    "domestic_dog": "canine", "felid": "mammal", "feline": "felid", "domestic_cat": "feline",
    "dragon": "scalie", "reptile": "scalie", "bird": "avian", "lagomorph": "mammal",
    "rabbit": "lagomorph", "equid": "mammal", "horse": "equid", "mustelid": "mammal",
    "otter": "mustelid", "ursid": "mammal", "bear": "ursid", "procyonid": "mammal",
    "raccoon": "procyonid", "ailurid": "mammal", "red_panda": "ailurid", "hyena": "mammal",
    "bovid": "mammal", "goat": "bovid", "deer": "mammal", "eeveelution": "pokemon_(species)",
}  # fmt: skip
# e621's tag category numbers (its database export), by e6ingest's category name.
E621_CATEGORY_NUMBERS = {"general": 0, "artist": 1, "copyright": 3, "character": 4,
                         "species": 5, "meta": 7, "lore": 8}  # fmt: skip


def implied(tags: list[str]) -> list[str]:
    """``tags`` with every tag they imply (transitively), as the sites add them."""
    out = list(tags)
    for tag in tags:
        while tag in IMPLIES:
            tag = IMPLIES[tag]
            if tag not in out:
                out.append(tag)
    return sorted(out)


COPYRIGHT = {
    "danbooru": [
        "original",
        "touhou",
        "fate_(series)",
        "fate/grand_order",
        "kantai_collection",
        "hololive",
        "genshin_impact",
        "blue_archive",
        "idolmaster",
        "pokemon",
        "arknights",
        "azur_lane",
        "to_heart_(series)",
        "vocaloid",
        "umamusume",
    ],
    "e621": [
        "nintendo",
        "pokemon",
        "sonic_the_hedgehog_(series)",
        "disney",
        "my_little_pony",
        "five_nights_at_freddy's",
        "undertale",
        "warcraft",
        "blizzard_entertainment",
        "zootopia",
        "helluva_boss",
        "mythology",
        "patreon",
    ],
}
CHARACTER = {
    "danbooru": [
        "hatsune_miku",
        "hakurei_reimu",
        "kirisame_marisa",
        "astolfo_(fate)",
        "artoria_pendragon_(fate)",
        "saber_(fate)",
        "gawr_gura",
        "kousaka_tamaki",
        "remilia_scarlet",
        "flandre_scarlet",
        "izayoi_sakuya",
        "frieren",
        "admiral_(kancolle)",
        "producer_(idolmaster)",
        "yuzuhara_konomi",
    ],
    "e621": [
        "judy_hopps",
        "nick_wilde",
        "lucario",
        "sonic_the_hedgehog",
        "tails_(sonic)",
        "krystal_(star_fox)",
        "fox_mccloud",
        "legoshi_(beastars)",
        "loona_(helluva_boss)",
        "toriel",
        "sans_(undertale)",
        "twilight_sparkle_(mlp)",
        "fleurfurr",
        "renamon",
    ],
}
META = {
    "danbooru": [
        "highres",
        "absurdres",
        "commentary",
        "bad_id",
        "bad_link",
        "translated",
        "commentary_request",
        "lowres",
        "official_art",
        "jpeg_artifacts",
        "tagme",
    ],
    "e621": [
        "hi_res",
        "absurd_res",
        "digital_media_(artwork)",
        "2023",
        "2024",
        "2022",
        "watermark",
        "signature",
        "comic",
        "english_text",
        "sketch",
    ],
}
LORE = ["gay_(lore)", "lesbian_(lore)", "trans_woman_(lore)", "male_(lore)", "female_(lore)"]
_SYLLABLES = [
    "ka",
    "ri",
    "no",
    "to",
    "mi",
    "sa",
    "ya",
    "shi",
    "ru",
    "ne",
    "ko",
    "ha",
    "ta",
    "zu",
    "ki",
    "ro",
    "mo",
]


def _generated_general(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        kind = rng.random()
        if kind < 0.4:
            name = f"{rng.choice(_COLOURS)}_{rng.choice(_PARTS)}"
        elif kind < 0.7:
            name = f"{rng.choice(_COLOURS)}_{rng.choice(_ITEMS)}"
        elif kind < 0.9:
            name = rng.choice(_POSES) + ("" if rng.random() < 0.5 else f"_{rng.choice(_ITEMS)}")
        else:
            name = f"holding_{rng.choice(_ITEMS)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _artists(rng: random.Random, count: int) -> list[str]:
    out = []
    for i in range(count):
        parts = rng.randint(2, 4)
        name = "".join(rng.choice(_SYLLABLES) for _ in range(parts))
        out.append(name if rng.random() < 0.7 else f"{name}_{rng.randint(1, 99)}")
        out[-1] = out[-1] if out[-1] not in out[:-1] else f"{out[-1]}_{i}"
    return out


@dataclass(frozen=True)
class Category:
    """The tags of one category and their cumulative Zipf weights."""

    tags: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def zipf(cls, tags: list[str], exponent: float = 1.1) -> Category:
        weights = [1.0 / (rank**exponent) for rank in range(1, len(tags) + 1)]
        return cls(tuple(tags), tuple(accumulate(weights)))

    def sample(self, rng: random.Random, count: int) -> list[str]:
        """Up to ``count`` distinct tags, frequent ones more likely."""
        if count <= 0:
            return []
        picks = rng.choices(self.tags, cum_weights=self.cumulative, k=count * 2)
        return list(dict.fromkeys(picks))[:count]


def vocabulary(site: str, seed: int) -> dict[str, Category]:
    """Per-category tag vocabularies for ``site`` (``danbooru`` or ``e621``)."""
    rng = random.Random(f"vocab-{site}-{seed}")
    general = GENERAL_HEAD[site] + _generated_general(rng, 400)
    vocab = {
        "general": Category.zipf(general),
        "artist": Category.zipf(_artists(rng, 120), 0.8),
        "character": Category.zipf(CHARACTER[site]),
        "copyright": Category.zipf(COPYRIGHT[site]),
        "meta": Category.zipf(META[site]),
    }
    if site == "e621":
        vocab["species"] = Category.zipf(SPECIES)
        vocab["lore"] = Category.zipf(LORE)
    return vocab


# How many tags a post has per category: (low, high) inclusive.
TAG_COUNTS = {
    "danbooru": {"general": (12, 45), "artist": (1, 1), "character": (0, 2),
                 "copyright": (0, 2), "meta": (0, 3)},
    "e621": {"general": (15, 60), "artist": (0, 2), "character": (0, 2), "copyright": (0, 2),
             "species": (1, 3), "meta": (1, 3), "lore": (0, 1)},
}  # fmt: skip


def post_tags(vocab: dict[str, Category], site: str, rng: random.Random) -> dict[str, list[str]]:
    """A random post's tags by category."""
    seen: set[str] = set()
    tags: dict[str, list[str]] = {}
    for category, (lo, hi) in TAG_COUNTS[site].items():
        picked = [t for t in vocab[category].sample(rng, rng.randint(lo, hi)) if t not in seen]
        if category == "species":
            picked = [t for t in implied(picked) if t not in seen]
        seen.update(picked)
        tags[category] = sorted(picked)
    return tags
