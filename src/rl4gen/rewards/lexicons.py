"""Small built-in word lexicons (hand-written for Early Modern English as well as modern text)."""

from __future__ import annotations

_POSITIVE = ["love", "loves", "loved", "loving", "lover", "beloved", "sweet", "sweetest", "fair", "fairest", "gentle", "kind", "kindly", "good", "better", "best", "grace", "gracious", "joy", "joyful", "joys", "happy", "happiness", "merry", "mirth", "delight", "delights", "glad", "gladly", "smile", "smiles", "honour", "honest", "noble", "true", "truth", "faith", "faithful", "dear", "dearest", "bless", "blessed", "blessing", "heaven", "heavenly", "beauty", "beautiful", "bright", "peace", "hope", "hopes", "friend", "friends", "friendship", "praise", "worthy", "virtue", "virtuous", "music", "laugh", "laughter", "pleasure", "pleasant", "content", "comfort", "warm", "wise", "pretty", "rich", "free", "thanks", "thank", "welcome", "hail", "brave", "valiant", "win", "won", "glory", "sunshine", "spring", "gold", "golden", "light", "grant", "jest", "jolly", "wonder", "wondrous", "charity", "mercy"]

_NEGATIVE = ["death", "dead", "die", "dies", "died", "dying", "kill", "killed", "murder", "murderer", "blood", "bloody", "hate", "hated", "hatred", "foul", "vile", "villain", "villainy", "curse", "cursed", "damn", "damned", "woe", "grief", "grieve", "sorrow", "sorrows", "sad", "tears", "weep", "weeping", "fear", "afraid", "dread", "horror", "horrible", "evil", "wicked", "sin", "sins", "poison", "poisoned", "war", "wars", "wound", "wounds", "grave", "tomb", "ghost", "hell", "devil", "devils", "fiend", "plague", "pain", "misery", "miserable", "wretch", "wretched", "shame", "shameful", "false", "traitor", "treason", "betray", "cruel", "angry", "rage", "fury", "mad", "madness", "despair", "dark", "darkness", "night", "poor", "sick", "disease", "slave", "beast", "monster", "revenge", "vengeance", "wrath", "ill", "ugly", "base", "fool", "knave", "bitter", "black"]

LEXICONS: dict[str, dict[str, float]] = {
    "sentiment": {**{w: 1.0 for w in _POSITIVE}, **{w: -1.0 for w in _NEGATIVE}},
}
