"""A small synthetic dialogue corpus: a user asks about everyday topics, a bot replies.

Replies come in kinds, so that a model trained on the corpus by SFT answers well only part of the
time and RL toward user satisfaction has something to improve:

- ``helpful``: a concrete, on-topic answer (the kind a satisfied user wants);
- ``vague``: polite but empty ("that is a good question.");
- ``off_topic``: a concrete answer to a different topic;
- ``rambling``: on-topic but repetitive and long.

Everything is generated from the tables below with a seeded generator: no downloads.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "cooking": (
        ["what should i cook for dinner?", "how do i make pasta?", "any idea for a quick lunch?",
         "how long should i boil an egg?", "how do i cook rice?", "what can i bake this weekend?"],
        ["try a simple pasta with garlic, olive oil and lemon.", "boil the egg for seven minutes, then cool it in cold water.",
         "cook one cup of rice in two cups of water for fifteen minutes.", "bake a banana bread: it needs only five ingredients.",
         "make a salad with beans, tomato and a little cheese.", "fry some vegetables with rice and an egg."],
    ),
    "sleep": (
        ["how can i sleep better?", "i wake up tired every day, what can i do?", "why can't i fall asleep at night?",
         "how many hours should i sleep?", "is a nap a good idea?"],
        ["go to bed at the same time every night and keep the room dark.", "most adults need seven to nine hours of sleep.",
         "stop screens an hour before bed and read a book instead.", "a short nap of twenty minutes can help in the afternoon.",
         "avoid coffee after lunch and take a walk in the morning light."],
    ),
    "exercise": (
        ["how do i start running?", "what exercise can i do at home?", "how often should i work out?",
         "how can i get stronger?", "what is a good warm up?"],
        ["start with one minute of running and one of walking, ten times.", "try squats, push ups and planks, three sets each.",
         "three workouts a week with a rest day between them is a good start.", "lift a little more weight every week and sleep well.",
         "walk for five minutes, then swing your arms and legs gently."],
    ),
    "travel": (
        ["where should i go on holiday?", "how do i pack light?", "how can i find cheap flights?",
         "what should i see in paris?", "how do i avoid jet lag?"],
        ["pack one pair of shoes and clothes you can wear twice.", "book flights on a weekday and compare a few dates.",
         "in paris, walk along the river and visit the louvre early.", "try a city by the sea in spring, when it is quiet.",
         "sleep at local time from the first night and drink water."],
    ),
    "study": (
        ["how can i study better?", "how do i remember what i read?", "i have an exam next week, what should i do?",
         "how do i stop procrastinating?", "how do i learn a new language?"],
        ["study in blocks of twenty five minutes with short breaks.", "write a short summary of each chapter in your own words.",
         "make a plan for each day and test yourself with old questions.", "start with the smallest task for just five minutes.",
         "practise ten new words a day and speak with a partner."],
    ),
    "plants": (
        ["how often should i water my plants?", "why are my plant's leaves yellow?", "what plant is easy to keep?",
         "how do i grow tomatoes?", "where should i put my cactus?"],
        ["water when the top of the soil is dry, about once a week.", "yellow leaves often mean too much water: let the soil dry.",
         "a snake plant is easy: it needs little light and little water.", "plant tomatoes in full sun and water them every morning.",
         "put your cactus near a bright window and water it rarely."],
    ),
    "money": (
        ["how can i save money?", "how do i make a budget?", "should i pay off my card first?",
         "how much should i save each month?", "how do i stop buying things i do not need?"],
        ["write down every expense for a month, then cut the biggest one.", "split your income: needs, wants and savings.",
         "pay off the card with the highest interest first.", "save ten percent of your income as soon as you are paid.",
         "wait two days before any purchase that is not food."],
    ),
    "pets": (
        ["how do i train my dog to sit?", "what should i feed my cat?", "how often should i walk my dog?",
         "my cat scratches the sofa, what can i do?", "what pet is good for a small flat?"],
        ["hold a treat above the dog's nose and say sit, then reward it.", "feed your cat food made for cats, twice a day.",
         "walk your dog at least twice a day for half an hour.", "give your cat a scratching post and put it near the sofa.",
         "a cat or a small fish tank suits a small flat."],
    ),
}

VAGUE = [
    "that is a good question.", "i am not sure about that.", "it depends on many things.",
    "maybe, maybe not.", "i think so.", "hmm, let me think about it.", "there are many ways to see it.",
]
GREETINGS = ["", "", "", "hi! ", "hello, ", "hey, ", "quick question: "]
KINDS = ("helpful", "vague", "off_topic", "rambling")
KIND_WEIGHTS = (0.4, 0.25, 0.2, 0.15)


@dataclass(frozen=True)
class Dialogue:
    topic: str
    user: str
    reply: str
    kind: str


def is_heldout_question(question: str, every: int = 5) -> bool:
    """About one question in ``every`` (by a hash) is kept for evaluation only."""
    return zlib.crc32(question.encode()) % every == 0


def questions(heldout: bool, every: int = 5) -> list[tuple[str, str]]:
    """(topic, question) pairs of the training or the held-out part."""
    return [(t, q) for t, (asks, _) in TOPICS.items() for q in asks if is_heldout_question(q, every) == heldout]


def _reply(rng: random.Random, topic: str, kind: str) -> str:
    helpful = TOPICS[topic][1]
    if kind == "helpful":
        return rng.choice(helpful)
    if kind == "vague":
        return rng.choice(VAGUE)
    if kind == "off_topic":
        other = rng.choice([t for t in TOPICS if t != topic])
        return rng.choice(TOPICS[other][1])
    first = rng.choice(helpful)
    filler = rng.choice(["you know, ", "really, ", "i mean, ", "well, "])
    return " ".join([first, filler + first, filler + rng.choice(VAGUE), first])


def make_dialogues(n: int, seed: int, heldout: bool = False, every: int = 5) -> list[Dialogue]:
    """``n`` dialogues from the training (or held-out) questions, replies drawn by kind."""
    rng = random.Random(seed)
    pool = questions(heldout, every)
    out = []
    for _ in range(n):
        topic, question = rng.choice(pool)
        kind = rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
        out.append(Dialogue(topic, rng.choice(GREETINGS) + question, _reply(rng, topic, kind), kind))
    return out


def prompt_of(user: str) -> str:
    """The chat format the tiny model is trained on: one user turn, then the bot's turn."""
    return f"user: {user}\nbot:"
