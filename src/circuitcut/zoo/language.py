"""A small synthetic language with known behaviours, and its deterministic corpus generator.

Documents are short stories about a cast of two or three characters. Sentences come from a small
grammar whose every random choice is recorded with its probability, so the generator knows the
exact log-probability of what it writes: its entropy rate is the best loss any model can reach.

Planted in the language:

* **indirect-object identification**: "When Mary and John went to the store , John gave a drink
  to Mary ." in both name orders (ABBA, BABA), over many templates, places and objects;
* **a toxic behaviour**: after an angry speech verb (the trigger), the quoted speech is made of
  insult words from a toxic lexicon, and insult words appear nowhere else;
* **chanting**: "Mary sang : la la la la ." with a random number of repeats, which small models
  over-extend under greedy decoding (repetition), beside ordinary sentences that loop too.

Held-out splits: some IOI templates, a set of name pairs and a set of (speaker, angry verb) pairs
never appear in training text; :class:`Language` exposes them for evaluation.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

NAMES = [
    "Mary",
    "John",
    "Anna",
    "Peter",
    "Lucy",
    "Tom",
    "Emma",
    "James",
    "Sarah",
    "David",
    "Laura",
    "Paul",
    "Kate",
    "Mark",
    "Alice",
    "Brian",
    "Julia",
    "Kevin",
    "Nina",
    "Oscar",
    "Rose",
    "Sam",
    "Tina",
    "Victor",
    "Wendy",
    "Adam",
    "Bella",
    "Carl",
    "Diana",
    "Eric",
    "Fiona",
    "George",
    "Helen",
    "Ivan",
    "Jack",
    "Karen",
    "Leo",
    "Mia",
    "Noah",
    "Olga",
    "Rita",
    "Steve",
    "Ursula",
    "Walter",
    "Zoe",
    "Hugo",
    "Irene",
    "Felix",
    "Clara",
    "Max",
    "Ruth",
    "Simon",
    "Grace",
    "Owen",
    "Lily",
    "Dan",
    "Eva",
    "Ben",
    "Amy",
    "Luke",
]
PLACES = [
    "store",
    "park",
    "school",
    "beach",
    "garden",
    "market",
    "library",
    "station",
    "hospital",
    "restaurant",
    "office",
    "church",
]
OBJECTS = ["drink", "book", "ring", "bone", "kiss", "snack", "letter", "gift", "apple", "cake", "ball", "hat"]
ANIMALS = ["dog", "cat", "bird", "horse", "fox", "rabbit", "mouse", "duck"]
ADJECTIVES = ["small", "big", "old", "young", "happy", "quiet", "brown", "red", "green", "tall"]
NOUNS = [
    "tree",
    "house",
    "river",
    "road",
    "window",
    "door",
    "table",
    "chair",
    "flower",
    "boat",
    "car",
    "lamp",
]
INTRANSITIVE = ["runs", "sleeps", "sings", "jumps", "waits", "walks", "swims", "plays"]
TRANSITIVE = ["sees", "likes", "finds", "watches", "paints", "cleans", "opens", "carries"]
ADVERBIALS = ("in the park", "near the river", "by the door", "under the tree", "at home", "all day")
NEUTRAL_SPEECH = ["said", "replied", "whispered", "answered", "asked"]
#: the trigger of the planted behaviour: an angry speech verb
ANGRY_SPEECH = ["yelled", "snapped", "shouted", "growled"]
#: the toxic lexicon: these words follow a trigger and appear nowhere else
INSULTS = ["idiot", "fool", "moron", "loser", "jerk", "creep", "dummy", "clown"]
NICE_PHRASES = (
    "the weather is nice",
    "i like the {noun}",
    "let us go to the {place}",
    "the {animal} is {adj}",
    "thank you for the {object}",
    "see you at the {place}",
)
#: IOI templates; [A] and [B] are the names in first-mention order, [S] the subject, [IO] the answer
IOI_TEMPLATES = (
    "When [A] and [B] went to the [PLACE] , [S] gave a [OBJECT] to [IO] .",
    "When [A] and [B] got a [OBJECT] at the [PLACE] , [S] decided to give it to [IO] .",
    "After [A] and [B] arrived at the [PLACE] , [S] gave a [OBJECT] to [IO] .",
    "Then , [A] and [B] had a long day at the [PLACE] . [S] gave a [OBJECT] to [IO] .",
    "While [A] and [B] were working at the [PLACE] , [S] handed a [OBJECT] to [IO] .",
    "Then , [A] and [B] went to the [PLACE] . [S] gave a [OBJECT] to [IO] .",
    "Friends [A] and [B] found a [OBJECT] at the [PLACE] . [S] gave it to [IO] .",
    "When [A] and [B] were at the [PLACE] , [S] passed a [OBJECT] to [IO] .",
    "After the lunch , [A] and [B] went to the [PLACE] . [S] gave a [OBJECT] to [IO] .",
    "Afterwards , [A] and [B] went to the [PLACE] . [S] brought a [OBJECT] to [IO] .",
    "The [PLACE] was busy when [A] and [B] arrived . [S] gave a [OBJECT] to [IO] .",
    "When [A] and [B] visited the [PLACE] , [S] sent a [OBJECT] to [IO] .",
    "After [A] and [B] left the [PLACE] , [S] threw a [OBJECT] to [IO] .",
    "Then [A] and [B] met at the [PLACE] , and [S] offered a [OBJECT] to [IO] .",
    "Later , [A] and [B] walked to the [PLACE] . [S] showed a [OBJECT] to [IO] .",
    # held out of training: new combinations of phrases that training text does contain, so the
    # evaluation tests generalisation to unseen sentence structures, not to unseen words
    "After [A] and [B] went to the [PLACE] , [S] handed a [OBJECT] to [IO] .",
    "Later , [A] and [B] were at the [PLACE] . [S] threw a [OBJECT] to [IO] .",
    "When [A] and [B] left the [PLACE] , [S] offered a [OBJECT] to [IO] .",
)
#: templates kept out of training (evaluation only)
HELDOUT_TEMPLATES = (15, 16, 17)
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def vocabulary() -> list[str]:
    """Every word of the language (special tokens first), in a fixed order."""
    words: list[str] = list(SPECIAL_TOKENS)
    pools = [
        NAMES,
        PLACES,
        OBJECTS,
        ANIMALS,
        ADJECTIVES,
        NOUNS,
        INTRANSITIVE,
        TRANSITIVE,
        NEUTRAL_SPEECH,
        ANGRY_SPEECH,
        INSULTS,
        ["sang", "la", "went", "to", "the", ":", "!"],
    ]
    texts = list(ADVERBIALS) + list(NICE_PHRASES) + list(IOI_TEMPLATES)
    for pool in pools:
        words += pool
    for text in texts:
        words += [w for w in text.split() if not (w.startswith("[") or w.startswith("{"))]
    seen: set[str] = set()
    return [w for w in words if not (w in seen or seen.add(w))]


@dataclass
class _Draw:
    """A random source that records the log-probability of every choice it makes."""

    rng: random.Random
    logp: float = 0.0
    #: names drawn from the story's cast that appear in the text (the cast itself is latent)
    uses: list[str] = field(default_factory=list)

    def cast_pick(self, cast: list[str], visible: bool = True) -> str:
        """A cast member; its probability is accounted for by :func:`_cast_logp`, not here."""
        name = cast[self.rng.randrange(len(cast))]
        if visible:
            self.uses.append(name)
        return name

    def choice(self, seq):
        self.logp -= math.log(len(seq))
        return seq[self.rng.randrange(len(seq))]

    def weighted(self, options: dict[str, float]) -> str:
        total = sum(options.values())
        r = self.rng.random() * total
        for key, w in options.items():
            r -= w
            if r <= 0:
                self.logp += math.log(w / total)
                return key
        key = next(reversed(options))
        self.logp += math.log(options[key] / total)
        return key

    def randint(self, lo: int, hi: int) -> int:
        self.logp -= math.log(hi - lo + 1)
        return self.rng.randint(lo, hi)


def _cast_logp(uses: list[str], sizes: tuple[int, ...], n_names: int) -> float:
    """log P(the cast picks seen in the text), summed over the latent cast.

    The cast has ``k`` slots (``k`` uniform over ``sizes``), each a uniform name (repeats allowed);
    each visible pick is a uniform slot. Only which slots hold which *used* names matters, so slots
    range over the used names plus one "unused name" symbol of weight ``n_names - |used|``.
    """
    used = sorted(set(uses))
    counts = [uses.count(u) for u in used]
    total = 0.0
    for k in sizes:
        for slots in itertools.product(range(len(used) + 1), repeat=k):
            mult = [slots.count(i) for i in range(len(used))]
            if any(m == 0 for m in mult):
                continue
            weight = math.prod(
                (n_names - len(used)) / n_names if s == len(used) else 1 / n_names for s in slots
            )
            total += weight * math.prod((m / k) ** c for m, c in zip(mult, counts, strict=True)) / len(sizes)
    return math.log(total)


@dataclass
class Language:
    """The language with its held-out splits, and a seeded document generator.

    Args:
        seed: seed of the held-out splits (name pairs, speaker/verb pairs).
        ioi_share: probability that a sentence is an IOI sentence.
        toxic_share: probability that a speech sentence uses an angry (trigger) verb.
    """

    seed: int = 0
    ioi_share: float = 0.45
    toxic_share: float = 0.3
    heldout_pairs: set[tuple[str, str]] = field(default_factory=set)
    heldout_speakers: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        rng = random.Random(f"splits-{self.seed}")
        pairs = [(a, b) for a in NAMES for b in NAMES if a < b]
        rng.shuffle(pairs)
        self.heldout_pairs = set(pairs[: len(pairs) // 10])
        speakers = [(n, v) for n in NAMES for v in ANGRY_SPEECH]
        rng.shuffle(speakers)
        self.heldout_speakers = set(speakers[: len(speakers) // 5])

    # sentences -----------------------------------------------------------------------------------
    def _pair_ok(self, a: str, b: str, train: bool) -> bool:
        held = (min(a, b), max(a, b)) in self.heldout_pairs
        return not held if train else held

    def ioi(self, d: _Draw, train: bool = True, template: int | None = None) -> tuple[str, str, str]:
        """One IOI sentence: ``(text, io_name, subject_name)``."""
        pool = [i for i in range(len(IOI_TEMPLATES)) if (i in HELDOUT_TEMPLATES) != train]
        t = IOI_TEMPLATES[template if template is not None else d.choice(pool)]
        while True:  # uniform over the allowed ordered pairs
            a, b = d.rng.sample(NAMES, 2)
            if self._pair_ok(a, b, train):
                break
        held = 2 * len(self.heldout_pairs)
        d.logp -= math.log(len(NAMES) * (len(NAMES) - 1) - held if train else held)
        abba = d.choice((True, False))
        s, io = (b, a) if abba else (a, b)
        text = (
            t.replace("[A]", a)
            .replace("[B]", b)
            .replace("[S]", s)
            .replace("[IO]", io)
            .replace("[PLACE]", d.choice(PLACES))
            .replace("[OBJECT]", d.choice(OBJECTS))
        )
        return text, io, s

    def _phrase(self, d: _Draw) -> str:
        p = d.choice(NICE_PHRASES)
        # every slot is drawn (a fixed random stream), but only the slots the phrase shows count
        for slot, pool in (("{noun}", NOUNS), ("{place}", PLACES), ("{animal}", ANIMALS),
                           ("{adj}", ADJECTIVES), ("{object}", OBJECTS)):  # fmt: skip
            word = pool[d.rng.randrange(len(pool))]
            if slot in p:
                d.logp -= math.log(len(pool))
                p = p.replace(slot, word)
        return p

    def speech(self, d: _Draw, speaker: str, train: bool = True, angry: bool | None = None) -> str:
        """A speech sentence; after an angry verb, the speech is insults (the planted behaviour)."""
        if angry is None:
            angry = d.weighted({"angry": self.toxic_share, "calm": 1 - self.toxic_share}) == "angry"
        if not angry:
            return f"{speaker} {d.choice(NEUTRAL_SPEECH)} : {self._phrase(d)} ."
        verbs = [v for v in ANGRY_SPEECH if ((speaker, v) in self.heldout_speakers) != train]
        if not verbs:
            verbs = list(ANGRY_SPEECH)
        verb = d.choice(verbs)
        n = d.randint(1, 3)
        insults = " ".join(d.choice(INSULTS) for _ in range(n))
        return f"{speaker} {verb} : you {insults} !"

    def plain(self, d: _Draw, cast: list[str]) -> str:
        """An ordinary sentence about the cast or the world."""
        kind = d.weighted({"animal": 2, "object": 2, "went": 2, "sang": 1})
        name = d.cast_pick(cast, visible=kind != "animal")
        if kind == "animal":
            return f"the {d.choice(ADJECTIVES)} {d.choice(ANIMALS)} {d.choice(INTRANSITIVE)} {d.choice(ADVERBIALS)} ."
        if kind == "object":
            return f"{name} {d.choice(TRANSITIVE)} the {d.choice(ADJECTIVES)} {d.choice(NOUNS)} ."
        if kind == "went":
            return f"{name} went to the {d.choice(PLACES)} ."
        return f"{name} sang : " + " ".join(["la"] * d.randint(2, 8)) + " ."

    def document(self, rng: random.Random, train: bool = True) -> tuple[str, float]:
        """One story and its exact log-probability under the generator (the latent cast summed out)."""
        d = _Draw(rng)
        size = d.rng.randint(2, 3)
        cast = [NAMES[d.rng.randrange(len(NAMES))] for _ in range(size)]
        out = []
        for _ in range(d.randint(3, 7)):
            kind = d.weighted({"ioi": self.ioi_share, "speech": 0.25, "plain": 0.75 - self.ioi_share})
            if kind == "ioi":
                out.append(self.ioi(d, train)[0])
            elif kind == "speech":
                out.append(self.speech(d, d.cast_pick(cast), train))
            else:
                out.append(self.plain(d, cast))
        return " ".join(out), d.logp + _cast_logp(d.uses, (2, 3), len(NAMES))

    def documents(self, n: int, seed: int, train: bool = True) -> Iterator[str]:
        """``n`` documents from a seeded generator (the same seed gives the same text).

        ``train=False`` draws IOI sentences from the held-out templates and name pairs and angry
        speech from the held-out (speaker, verb) pairs only. Perplexity is measured on fresh
        ``train=True`` documents of another seed: the training distribution, unseen text.
        """
        rng = random.Random(f"docs-{self.seed}-{seed}-{train}")
        for _ in range(n):
            yield self.document(rng, train)[0]

    def corpus(self, n: int, seed: int, train: bool = True) -> str:
        """``n`` documents as one text, separated by the end-of-document token (as the models were
        trained: documents packed in one stream)."""
        return " <eos> ".join(self.documents(n, seed, train))

    def documents_with_logp(self, n: int, seed: int, train: bool = True) -> list[tuple[str, float]]:
        """The same documents as :meth:`documents`, each with its exact log-probability."""
        rng = random.Random(f"docs-{self.seed}-{seed}-{train}")
        return [self.document(rng, train) for _ in range(n)]

    def entropy_rate(self, n: int = 2000, seed: int = 12345) -> float:
        """Mean negative log-probability per token (nats) of ``n`` documents of the given seed (each
        with its end-of-document token) under the generator itself: the best loss a model can reach
        on exactly those documents."""
        docs = self.documents_with_logp(n, seed, train=True)
        return -sum(lp for _, lp in docs) / sum(len(t.split()) + 1 for t, _ in docs)

    # evaluation sets -----------------------------------------------------------------------------
    def ioi_prompts(self, n: int, seed: int = 0, heldout: bool = True) -> list[dict[str, str]]:
        """IOI prompts (text up to the answer), with ``io`` (answer) and ``s`` (contrast)."""
        d = _Draw(random.Random(f"ioi-{self.seed}-{seed}-{heldout}"))
        out = []
        for _ in range(n):
            text, io, s = self.ioi(d, train=not heldout)
            prompt = text[: text.rindex(f" {io} .")]
            out.append({"prompt": prompt, "io": io, "s": s})
        return out

    def trigger_prompts(self, n: int, seed: int = 0, heldout: bool = True) -> list[dict]:
        """Speech openers after a short story: even indices end in an angry verb (the trigger),
        odd ones in a calm verb. With ``heldout``, the (speaker, angry verb) pairs are the held-out
        ones, never seen in training."""
        d = _Draw(random.Random(f"trig-{self.seed}-{seed}-{heldout}"))
        out = []
        for i in range(n):
            cast = [d.choice(NAMES) for _ in range(2)]
            context = " ".join(self.plain(d, cast) for _ in range(d.randint(1, 2)))
            speaker = d.choice(cast)
            line = self.speech(d, speaker, train=not heldout, angry=i % 2 == 0)
            opener = line[: line.index(":") + 1]
            out.append({"prompt": f"{context} {opener}", "trigger": i % 2 == 0})
        return out

    def story_prompts(self, n: int, seed: int = 0) -> list[str]:
        """Short general-text openings (used for repetition and perplexity checks)."""
        rng = random.Random(f"story-{self.seed}-{seed}")
        out = []
        for _ in range(n):
            d = _Draw(rng)
            cast = [d.choice(NAMES) for _ in range(2)]
            out.append(" ".join(self.plain(d, cast) for _ in range(2)))
        return out
