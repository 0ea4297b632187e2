"""Seeded English -> French parallel corpus about numbers, quantities, dates and times.

The English side writes every number as digits ("I have 97 apples", "at 7:45 pm", "March 21");
the French side spells it out with ``num2words(n, lang="fr")`` inside hand-written templates, so
a model has to learn the number words, gender ("une pomme", "vingt et une pommes"), plural
agreement ("trois voitures rouges"), adjective position ("deux petites tables"), elision
("j'ai", "d'une", "d'eau"), dates ("le premier mai", "le vingt et un mars") and the 24-hour
clock ("à dix-neuf heures quarante-cinq").

Everything is lower case except "I", names, and English month and day names (French writes
them in lower case). ``generate_pairs(n, seed)`` is deterministic for a given seed and Python
version (it only uses ``random.Random``, lists and dicts).
"""

from __future__ import annotations

import random
import re

from num2words import num2words

# --------------------------------------------------------------------------- numbers

_UN = re.compile(r"(^|[ -])un$")


def fr_num(n: int, fem: bool = False) -> str:
    """Cardinal in French words; feminine turns a final "un" into "une" (vingt et une, cent une)."""
    words = num2words(n, lang="fr")
    if fem:
        words = _UN.sub(r"\1une", words)
    return words


def fr_ordinal(n: int, fem: bool = False) -> str:
    """French ordinal: premier/première, deuxième, vingt et unième, quatre-vingtième, deux centième."""
    if n == 1:
        return "première" if fem else "premier"
    words = num2words(n, lang="fr")
    if words.endswith("vingts") or words.endswith("cents"):
        words = words[:-1]  # num2words gives "quatre-vingtsième"; the ordinal drops the s
    if words.endswith("cinq"):
        return words + "uième"
    if words.endswith("neuf"):
        return words[:-1] + "vième"
    if words.endswith("e"):
        return words[:-1] + "ième"
    return words + "ième"


def en_ordinal(n: int) -> str:
    if 11 <= n % 100 <= 13:
        return f"{n}th"
    return f"{n}" + {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def elide_de(word: str) -> str:
    """"de" + word, elided before a vowel or mute h ("d'une", "d'eau", "d'oranges")."""
    return ("d'" + word) if _starts_with_vowel(word) else ("de " + word)


def _starts_with_vowel(word: str) -> bool:
    # "onze" and "huit" never elide ("de onze", "de huit"); "homme", "huile", "heure" do.
    if word.startswith(("onze", "onzième", "huit")):
        return False
    return word[:1] in "aeéèêiîoôœuh"


# --------------------------------------------------------------------------- vocabulary

# (en singular, en plural, fr singular, fr plural, gender, category)
NOUNS = [
    # food
    ("apple", "apples", "pomme", "pommes", "f", "food"),
    ("banana", "bananas", "banane", "bananes", "f", "food"),
    ("orange", "oranges", "orange", "oranges", "f", "food"),
    ("lemon", "lemons", "citron", "citrons", "m", "food"),
    ("egg", "eggs", "œuf", "œufs", "m", "food"),
    ("cake", "cakes", "gâteau", "gâteaux", "m", "food"),
    ("tomato", "tomatoes", "tomate", "tomates", "f", "food"),
    ("strawberry", "strawberries", "fraise", "fraises", "f", "food"),
    ("potato", "potatoes", "pomme de terre", "pommes de terre", "f", "food"),
    ("carrot", "carrots", "carotte", "carottes", "f", "food"),
    ("pear", "pears", "poire", "poires", "f", "food"),
    ("cookie", "cookies", "biscuit", "biscuits", "m", "food"),
    ("onion", "onions", "oignon", "oignons", "m", "food"),
    ("sandwich", "sandwiches", "sandwich", "sandwichs", "m", "food"),
    # objects
    ("book", "books", "livre", "livres", "m", "object"),
    ("car", "cars", "voiture", "voitures", "f", "object"),
    ("chair", "chairs", "chaise", "chaises", "f", "object"),
    ("table", "tables", "table", "tables", "f", "object"),
    ("pen", "pens", "stylo", "stylos", "m", "object"),
    ("pencil", "pencils", "crayon", "crayons", "m", "object"),
    ("bag", "bags", "sac", "sacs", "m", "object"),
    ("key", "keys", "clé", "clés", "f", "object"),
    ("bottle", "bottles", "bouteille", "bouteilles", "f", "object"),
    ("box", "boxes", "boîte", "boîtes", "f", "object"),
    ("cup", "cups", "tasse", "tasses", "f", "object"),
    ("glass", "glasses", "verre", "verres", "m", "object"),
    ("plate", "plates", "assiette", "assiettes", "f", "object"),
    ("lamp", "lamps", "lampe", "lampes", "f", "object"),
    ("shirt", "shirts", "chemise", "chemises", "f", "object"),
    ("hat", "hats", "chapeau", "chapeaux", "m", "object"),
    ("shoe", "shoes", "chaussure", "chaussures", "f", "object"),
    ("ball", "balls", "ballon", "ballons", "m", "object"),
    ("bike", "bikes", "vélo", "vélos", "m", "object"),
    ("phone", "phones", "téléphone", "téléphones", "m", "object"),
    ("computer", "computers", "ordinateur", "ordinateurs", "m", "object"),
    ("ticket", "tickets", "billet", "billets", "m", "object"),
    ("candle", "candles", "bougie", "bougies", "f", "object"),
    ("knife", "knives", "couteau", "couteaux", "m", "object"),
    ("newspaper", "newspapers", "journal", "journaux", "m", "object"),
    ("umbrella", "umbrellas", "parapluie", "parapluies", "m", "object"),
    ("house", "houses", "maison", "maisons", "f", "object"),
    ("boat", "boats", "bateau", "bateaux", "m", "object"),
    ("letter", "letters", "lettre", "lettres", "f", "object"),
    ("watch", "watches", "montre", "montres", "f", "object"),
    # animals
    ("cat", "cats", "chat", "chats", "m", "animal"),
    ("dog", "dogs", "chien", "chiens", "m", "animal"),
    ("horse", "horses", "cheval", "chevaux", "m", "animal"),
    ("bird", "birds", "oiseau", "oiseaux", "m", "animal"),
    ("cow", "cows", "vache", "vaches", "f", "animal"),
    ("mouse", "mice", "souris", "souris", "f", "animal"),
    ("sheep", "sheep", "mouton", "moutons", "m", "animal"),
    ("fish", "fish", "poisson", "poissons", "m", "animal"),
    ("duck", "ducks", "canard", "canards", "m", "animal"),
    ("rabbit", "rabbits", "lapin", "lapins", "m", "animal"),
    ("hen", "hens", "poule", "poules", "f", "animal"),
    ("goat", "goats", "chèvre", "chèvres", "f", "animal"),
    # people
    ("child", "children", "enfant", "enfants", "m", "people"),
    ("student", "students", "étudiant", "étudiants", "m", "people"),
    ("girl", "girls", "fille", "filles", "f", "people"),
    ("boy", "boys", "garçon", "garçons", "m", "people"),
    ("friend", "friends", "ami", "amis", "m", "people"),
    ("brother", "brothers", "frère", "frères", "m", "people"),
    ("sister", "sisters", "sœur", "sœurs", "f", "people"),
    ("person", "people", "personne", "personnes", "f", "people"),
    ("woman", "women", "femme", "femmes", "f", "people"),
    ("man", "men", "homme", "hommes", "m", "people"),
]

# (en, fr m sg, fr f sg, fr m pl, fr f pl, position, m sg before a vowel)
_ADJ = {
    "red": ("red", "rouge", "rouge", "rouges", "rouges", "after", None),
    "green": ("green", "vert", "verte", "verts", "vertes", "after", None),
    "blue": ("blue", "bleu", "bleue", "bleus", "bleues", "after", None),
    "black": ("black", "noir", "noire", "noirs", "noires", "after", None),
    "white": ("white", "blanc", "blanche", "blancs", "blanches", "after", None),
    "yellow": ("yellow", "jaune", "jaune", "jaunes", "jaunes", "after", None),
    "grey": ("grey", "gris", "grise", "gris", "grises", "after", None),
    "brown": ("brown", "marron", "marron", "marron", "marron", "after", None),
    "heavy": ("heavy", "lourd", "lourde", "lourds", "lourdes", "after", None),
    "expensive": ("expensive", "cher", "chère", "chers", "chères", "after", None),
    "clean": ("clean", "propre", "propre", "propres", "propres", "after", None),
    "broken": ("broken", "cassé", "cassée", "cassés", "cassées", "after", None),
    "fresh": ("fresh", "frais", "fraîche", "frais", "fraîches", "after", None),
    "small": ("small", "petit", "petite", "petits", "petites", "before", None),
    "big": ("big", "grand", "grande", "grands", "grandes", "before", None),
    "pretty": ("pretty", "joli", "jolie", "jolis", "jolies", "before", None),
    "young": ("young", "jeune", "jeune", "jeunes", "jeunes", "before", None),
    "old": ("old", "vieux", "vieille", "vieux", "vieilles", "before", "vieil"),
    "new": ("new", "nouveau", "nouvelle", "nouveaux", "nouvelles", "before", "nouvel"),
    "beautiful": ("beautiful", "beau", "belle", "beaux", "belles", "before", "bel"),
}

ADJ_BY_CATEGORY = {
    "food": ["red", "green", "yellow", "small", "big", "fresh", "expensive"],
    "object": ["red", "green", "blue", "black", "white", "yellow", "grey", "brown", "heavy",
               "expensive", "clean", "broken", "small", "big", "pretty", "old", "new", "beautiful"],
    "animal": ["black", "white", "brown", "grey", "small", "big", "old", "young", "beautiful"],
    "people": ["young", "old"],
}

# (en, fr, person, gender) - person: 1s, 2p (vous), 3s, 1p, 3p
SUBJECTS = [
    ("I", "je", "1s", "m"),
    ("you", "vous", "2p", "m"),
    ("he", "il", "3s", "m"),
    ("she", "elle", "3s", "f"),
    ("we", "nous", "1p", "m"),
    ("they", "ils", "3p", "m"),
    ("Marie", "Marie", "3s", "f"),
    ("Paul", "Paul", "3s", "m"),
    ("Sophie", "Sophie", "3s", "f"),
    ("Thomas", "Thomas", "3s", "m"),
    ("my brother", "mon frère", "3s", "m"),
    ("my sister", "ma sœur", "3s", "f"),
    ("my father", "mon père", "3s", "m"),
    ("my mother", "ma mère", "3s", "f"),
    ("the teacher", "le professeur", "3s", "m"),
    ("the children", "les enfants", "3p", "m"),
]
_P = ("1s", "2p", "3s", "1p", "3p")

# English verb (base, 3rd person singular, past), French forms per person, participle, categories
VERBS = [
    (("have", "has", None), ("ai", "avez", "a", "avons", "ont"), None, ("food", "object", "animal", "people")),
    (("see", "sees", "saw"), ("vois", "voyez", "voit", "voyons", "voient"), "vu", ("food", "object", "animal", "people")),
    (("buy", "buys", "bought"), ("achète", "achetez", "achète", "achetons", "achètent"), "acheté", ("food", "object", "animal")),
    (("want", "wants", None), ("veux", "voulez", "veut", "voulons", "veulent"), None, ("food", "object", "animal")),
    (("sell", "sells", "sold"), ("vends", "vendez", "vend", "vendons", "vendent"), "vendu", ("food", "object", "animal")),
    (("eat", "eats", "ate"), ("mange", "mangez", "mange", "mangeons", "mangent"), "mangé", ("food",)),
    (("find", "finds", "found"), ("trouve", "trouvez", "trouve", "trouvons", "trouvent"), "trouvé", ("object", "animal")),
    (("carry", "carries", "carried"), ("porte", "portez", "porte", "portons", "portent"), "porté", ("food", "object")),
    (("need", "needs", None), ("ai besoin", "avez besoin", "a besoin", "avons besoin", "ont besoin"), None, ("food", "object")),
]
AVOIR = ("ai", "avez", "a", "avons", "ont")
ETRE = ("suis", "êtes", "est", "sommes", "sont")
EN_BE = {"1s": "am", "2p": "are", "3s": "is", "1p": "are", "3p": "are"}

PLACES = {
    "food": [("in the kitchen", "dans la cuisine"), ("in the fridge", "dans le frigo"), ("in the bag", "dans le sac"),
             ("on the table", "sur la table"), ("in the basket", "dans le panier")],
    "object": [("in the room", "dans la chambre"), ("in the kitchen", "dans la cuisine"), ("in the car", "dans la voiture"),
               ("on the table", "sur la table"), ("in the shop", "dans le magasin"), ("in the garage", "dans le garage")],
    "animal": [("in the garden", "dans le jardin"), ("in the park", "dans le parc"), ("on the farm", "à la ferme"),
               ("in the field", "dans le champ"), ("near the river", "près de la rivière")],
    "people": [("in the park", "dans le parc"), ("in the room", "dans la salle"), ("at the party", "à la fête"),
               ("in the class", "dans la classe"), ("on the bus", "dans le bus"), ("in the street", "dans la rue")],
}

MONTHS = [("January", "janvier", 31), ("February", "février", 28), ("March", "mars", 31), ("April", "avril", 30),
          ("May", "mai", 31), ("June", "juin", 30), ("July", "juillet", 31), ("August", "août", 31),
          ("September", "septembre", 30), ("October", "octobre", 31), ("November", "novembre", 30),
          ("December", "décembre", 31)]
WEEKDAYS = [("Monday", "lundi"), ("Tuesday", "mardi"), ("Wednesday", "mercredi"), ("Thursday", "jeudi"),
            ("Friday", "vendredi"), ("Saturday", "samedi"), ("Sunday", "dimanche")]

# events: (en, fr, gender) - used with durations and start times
EVENTS = [("the film", "le film"), ("the meeting", "la réunion"), ("the trip", "le voyage"), ("the class", "le cours"),
          ("the concert", "le concert"), ("the game", "le match"), ("the flight", "le vol"), ("the party", "la fête"),
          ("the show", "le spectacle"), ("the exam", "l'examen")]

# duration units: (en sg, en pl, fr sg, fr pl, gender)
UNITS_TIME = [("minute", "minutes", "minute", "minutes", "f"), ("hour", "hours", "heure", "heures", "f"),
              ("day", "days", "jour", "jours", "m"), ("week", "weeks", "semaine", "semaines", "f"),
              ("month", "months", "mois", "mois", "m"), ("year", "years", "an", "ans", "m")]

# mass nouns: (en, fr, measures that fit, drinkable)
MASS = [("sugar", "sucre", ("gram", "kilo", "box", "bag", "spoon"), False),
        ("flour", "farine", ("gram", "kilo", "bag", "spoon"), False),
        ("rice", "riz", ("gram", "kilo", "box", "bag"), False),
        ("butter", "beurre", ("gram", "kilo", "piece"), False),
        ("milk", "lait", ("liter", "bottle", "cup", "glass"), True),
        ("water", "eau", ("liter", "bottle", "glass"), True),
        ("oil", "huile", ("liter", "bottle", "spoon"), False),
        ("juice", "jus", ("liter", "bottle", "glass"), True),
        ("coffee", "café", ("cup", "gram", "kilo", "bag"), True),
        ("tea", "thé", ("cup", "gram", "box"), True),
        ("chocolate", "chocolat", ("gram", "piece", "box", "cup"), False),
        ("cheese", "fromage", ("gram", "kilo", "piece", "slice"), False),
        ("meat", "viande", ("gram", "kilo", "piece", "slice"), False),
        ("bread", "pain", ("piece", "slice", "kilo"), False),
        ("soup", "soupe", ("liter", "bowl", "spoon"), False)]
# measures: (en sg, en pl, fr sg, fr pl, gender)
MEASURES = {m[0]: m for m in [
    ("gram", "grams", "gramme", "grammes", "m"), ("kilo", "kilos", "kilo", "kilos", "m"),
    ("liter", "liters", "litre", "litres", "m"), ("bottle", "bottles", "bouteille", "bouteilles", "f"),
    ("cup", "cups", "tasse", "tasses", "f"), ("glass", "glasses", "verre", "verres", "m"),
    ("piece", "pieces", "morceau", "morceaux", "m"), ("slice", "slices", "tranche", "tranches", "f"),
    ("box", "boxes", "boîte", "boîtes", "f"), ("bag", "bags", "sac", "sacs", "m"),
    ("spoon", "spoons", "cuillère", "cuillères", "f"), ("bowl", "bowls", "bol", "bols", "m")]}

CITIES = ["Paris", "Lyon", "Marseille", "Nice", "Lille", "Bordeaux", "Toulouse", "Nantes", "Rennes", "Brest"]
DESTINATIONS = [("the station", "la gare"), ("the beach", "la plage"), ("the school", "l'école"),
                ("the airport", "l'aéroport"), ("the village", "le village"), ("the hospital", "l'hôpital")]


# --------------------------------------------------------------------------- helpers


def _subj_verb(subj_fr: str, verb: str) -> str:
    if subj_fr == "je" and _starts_with_vowel(verb):
        return "j'" + verb
    return f"{subj_fr} {verb}"


def _en_verb(person: str, base: str, third: str) -> str:
    return third if person == "3s" else base


def _participle(pp: str, person: str, gender: str) -> str:
    """Past participle agreeing with an être subject."""
    plural = person in ("2p", "1p", "3p")
    return pp + ("e" if gender == "f" else "") + ("s" if plural else "")


class _Gen:
    def __init__(self, rng: random.Random):
        self.r = rng

    # numbers ---------------------------------------------------------------
    def count(self, lo: int = 1) -> int:
        """A count for a noun phrase: many small numbers, every number up to 999 possible."""
        u = self.r.random()
        if u < 0.06:
            n = 1
        elif u < 0.40:
            n = self.r.randint(2, 20)
        elif u < 0.68:
            n = self.r.randint(21, 99)
        else:
            n = self.r.randint(100, 999)
        return max(n, lo)

    # noun phrases ------------------------------------------------------------
    def noun(self, cats=None):
        choices = NOUNS if cats is None else [x for x in NOUNS if x[5] in cats]
        return self.r.choice(choices)

    def np(self, n: int, noun, adj_prob: float = 0.45, det_fr: str | None = None, det_en: str | None = None):
        """(en, fr) for "<n> [adj] <noun>"."""
        en_sg, en_pl, fr_sg, fr_pl, gender, cat = noun
        fem = gender == "f"
        plural = n != 1
        adj = None
        if self.r.random() < adj_prob:
            adj = _ADJ[self.r.choice(ADJ_BY_CATEGORY[cat])]
        en_noun = en_pl if plural else en_sg
        fr_noun = fr_pl if plural else fr_sg
        en = f"{n} {adj[0]} {en_noun}" if adj else f"{n} {en_noun}"
        num = fr_num(n, fem)
        if adj is None:
            fr = f"{num} {fr_noun}"
        else:
            form = adj[1 + (1 if fem else 0) + (2 if plural else 0)]
            if adj[5] == "before":
                if not plural and not fem and adj[6] and _starts_with_vowel(fr_noun):
                    form = adj[6]
                fr = f"{num} {form} {fr_noun}"
            else:
                fr = f"{num} {fr_noun} {form}"
        if det_en:
            en = f"{det_en} {en}"
        if det_fr:
            fr = f"{det_fr} {fr}"
        return en, fr

    # times ---------------------------------------------------------------------
    def clock(self):
        """(en, fr) clock time: "7:45 pm" -> "dix-neuf heures quarante-cinq"."""
        r = self.r
        style = r.random()
        minute = r.choice([0, 0, 0, 15, 30, 45, r.randint(1, 59), r.randint(1, 59), r.randint(1, 59)])
        if style < 0.25:  # 24-hour clock
            hour = r.randint(1, 23)
            en = f"{hour}:{minute:02d}"
            h24 = hour
            special = None
        else:
            hour = r.randint(1, 12)
            ampm = r.choice(["am", "pm"])
            if minute == 0 and r.random() < 0.4:
                en = f"{hour} {ampm}"
            else:
                en = f"{hour}:{minute:02d} {ampm}"
            if hour == 12:
                special = "midi" if ampm == "pm" else "minuit"
                h24 = None
            else:
                special = None
                h24 = hour + (12 if ampm == "pm" else 0)
        if special:
            fr = special
        else:
            fr = f"{fr_num(h24, fem=True)} {'heure' if h24 == 1 else 'heures'}"
        if minute:
            fr += " " + fr_num(minute, fem=True)
        return en, fr

    def date(self, allow_year: bool = True):
        """(en, fr) day and month, sometimes with a year: "March 21" -> "vingt et un mars" (no article)."""
        r = self.r
        m_en, m_fr, days = r.choice(MONTHS)
        d = r.randint(1, days)
        style = r.randrange(4)
        if style == 0:
            en = f"{m_en} {d}"
        elif style == 1:
            en = f"the {en_ordinal(d)} of {m_en}"
        elif style == 2:
            en = f"{m_en} {en_ordinal(d)}"
        else:
            en = f"{d} {m_en}"
        fr = f"{fr_ordinal(1) if d == 1 else fr_num(d)} {m_fr}"
        if allow_year and r.random() < 0.2:
            y = r.randint(1950, 2030)
            en = f"{en}, {y}" if style in (0, 2) else f"{en} {y}"
            fr = f"{fr} {fr_num(y)}"
        return en, fr

    # templates -----------------------------------------------------------------
    def t_verb(self):
        r = self.r
        s_en, s_fr, p, g = r.choice(SUBJECTS)
        (base, third, past), forms, pp, cats = r.choice(VERBS)
        noun = self.noun(cats)
        n = self.count()
        np_en, np_fr = self.np(n, noun)
        fr_verb = forms[_P.index(p)]
        if base == "need":
            np_fr = elide_de(np_fr)
        if past and r.random() < 0.3:
            when = r.choice([("", ""), ("", ""), ("yesterday ", "hier "), ("last week ", "la semaine dernière ")])
            en = f"{when[0]}{s_en} {past} {np_en}"
            fr = f"{when[1]}{_subj_verb(s_fr, AVOIR[_P.index(p)])} {pp} {np_fr}"
            if when[0] == "last week ":
                en = f"{s_en} {past} {np_en} last week"
                fr = f"{_subj_verb(s_fr, AVOIR[_P.index(p)])} {pp} {np_fr} la semaine dernière"
            return en, fr
        return f"{s_en} {_en_verb(p, base, third)} {np_en}", f"{_subj_verb(s_fr, fr_verb)} {np_fr}"

    def t_there(self):
        r = self.r
        noun = self.noun()
        n = self.count()
        np_en, np_fr = self.np(n, noun)
        place_en, place_fr = r.choice(PLACES[noun[5]])
        past = r.random() < 0.25
        if past:
            en = f"there {'was' if n == 1 else 'were'} {np_en} {place_en}"
            fr = f"il y avait {np_fr} {place_fr}"
        else:
            en = f"there {'is' if n == 1 else 'are'} {np_en} {place_en}"
            fr = f"il y a {np_fr} {place_fr}"
        return en, fr

    def t_np(self):
        r = self.r
        noun = self.noun()
        style = r.randrange(6)
        if style <= 1:
            return self.np(self.count(), noun)
        n = self.count(lo=2)
        det = r.choice([("the", "les"), ("these", "ces"), ("my", "mes"), ("your", "vos"), ("our", "nos"),
                        ("their", "leurs"), ("his", "ses"), ("her", "ses")])
        return self.np(n, noun, det_en=det[0], det_fr=det[1])

    def t_question(self):
        r = self.r
        noun = self.noun()
        en_pl, fr_pl = noun[1], noun[3]
        s = r.randrange(3)
        if s == 0:
            return f"how many {en_pl} do you have?", f"combien {elide_de(fr_pl)} avez-vous ?"
        if s == 1:
            return f"how many {en_pl} are there?", f"combien {elide_de(fr_pl)} y a-t-il ?"
        n = self.count(lo=2)
        np_en, np_fr = self.np(n, noun, adj_prob=0.3)
        return f"do you have {np_en}?", f"avez-vous {np_fr} ?"

    def t_age(self):
        r = self.r
        s_en, s_fr, p, g = r.choice(SUBJECTS + [("my grandmother", "ma grand-mère", "3s", "f"),
                                                ("my grandfather", "mon grand-père", "3s", "m"),
                                                ("the dog", "le chien", "3s", "m"), ("the cat", "le chat", "3s", "m")])
        be = "is" if p == "3s" else EN_BE[p]
        if r.random() < 0.15:
            s_en, s_fr, be = "the baby", "le bébé", "is"
            n = r.randint(1, 24)
            return (f"{s_en} {be} {n} {'month' if n == 1 else 'months'} old",
                    f"{s_fr} a {fr_num(n)} mois")
        n = r.randint(1, 110) if r.random() < 0.8 else r.randint(1, 20)
        fr_verb = AVOIR[_P.index(p)]
        return (f"{s_en} {be} {n} {'year' if n == 1 else 'years'} old",
                f"{_subj_verb(s_fr, fr_verb)} {fr_num(n)} {'an' if n == 1 else 'ans'}")

    def t_price(self):
        r = self.r
        cur = r.choice([("euro", "euros", "euro", "euros"), ("euro", "euros", "euro", "euros"),
                        ("dollar", "dollars", "dollar", "dollars")])
        n = self.count() if r.random() < 0.7 else r.randint(1, 50)
        cents = r.randint(1, 99) if r.random() < 0.3 else 0
        if cents:
            amount_en = f"{n}.{cents:02d} {cur[1]}"
            amount_fr = f"{fr_num(n)} {cur[3] if n != 1 else cur[2]} {fr_num(cents)}"
        else:
            amount_en = f"{n} {cur[1] if n != 1 else cur[0]}"
            amount_fr = f"{fr_num(n)} {cur[3] if n != 1 else cur[2]}"
        style = r.randrange(4)
        if style == 0:
            return f"it costs {amount_en}", f"ça coûte {amount_fr}"
        noun = self.noun(("food", "object", "animal"))
        if style == 1:
            k = self.count(lo=2) if r.random() < 0.5 else r.randint(2, 12)
            np_en, np_fr = self.np(k, noun, adj_prob=0.3, det_en="the", det_fr="les")
            return f"{np_en} cost {amount_en}", f"{np_fr} coûtent {amount_fr}"
        det_fr = ("la " if noun[4] == "f" else "le ") if not _starts_with_vowel(noun[2]) else "l'"
        if style == 2:
            return f"the {noun[0]} costs {amount_en}", f"{det_fr}{noun[2]} coûte {amount_fr}"
        s_en, s_fr, p, g = r.choice(SUBJECTS[:6])
        return (f"{s_en} paid {amount_en} for the {noun[0]}",
                f"{_subj_verb(s_fr, AVOIR[_P.index(p)])} payé {amount_fr} pour {det_fr}{noun[2]}")

    def t_temperature(self):
        r = self.r
        n = r.randint(0, 45)
        deg = "degré" if n <= 1 else "degrés"
        s = r.randrange(5)
        if s == 0 and n > 0:
            return f"it is minus {n} degrees", f"il fait moins {fr_num(n)} {deg}"
        if s == 1 and n > 0:
            return f"it is -{n} degrees outside", f"il fait moins {fr_num(n)} {deg} dehors"
        if s == 2:
            return f"the water is at {n} degrees", f"l'eau est à {fr_num(n)} {deg}"
        if s == 3:
            d_en, d_fr = r.choice(WEEKDAYS)
            return f"it will be {n} degrees on {d_en}", f"il fera {fr_num(n)} {deg} {d_fr}"
        return f"it is {n} {'degree' if n == 1 else 'degrees'}", f"il fait {fr_num(n)} {deg}"

    def t_distance(self):
        r = self.r
        n = self.count()
        km_en = "kilometer" if n == 1 else "kilometers"
        km_fr = "kilomètre" if n == 1 else "kilomètres"
        s = r.randrange(5)
        if s == 0:
            c = r.choice(CITIES)
            return f"{c} is {n} {km_en} away", f"{c} est à {fr_num(n)} {km_fr}"
        if s == 1:
            d_en, d_fr = r.choice(DESTINATIONS)
            return f"{d_en} is {n} {km_en} away", f"{d_fr} est à {fr_num(n)} {km_fr}"
        if s == 2:
            s_en, s_fr, p, g = r.choice(SUBJECTS[:6])
            return f"{s_en} ran {n} {km_en}", f"{_subj_verb(s_fr, AVOIR[_P.index(p)])} couru {fr_num(n)} {km_fr}"
        if s == 3:
            noun = self.noun(("object", "animal"))
            det_fr = ("la " if noun[4] == "f" else "le ") if not _starts_with_vowel(noun[2]) else "l'"
            unit = r.choice([("kilo", "kilos", "kilo", "kilos"), ("gram", "grams", "gramme", "grammes")])
            return (f"the {noun[0]} weighs {n} {unit[0] if n == 1 else unit[1]}",
                    f"{det_fr}{noun[2]} pèse {fr_num(n)} {unit[2] if n == 1 else unit[3]}")
        c1, c2 = r.sample(CITIES, 2)
        return (f"from {c1} to {c2} it is {n} {km_en}", f"de {c1} à {c2}, il y a {fr_num(n)} {km_fr}")

    def t_quantity(self):
        r = self.r
        s = r.randrange(4)
        liquids = [m for m in MASS if m[3]]
        mass_en, mass_fr, measures, _ = r.choice(liquids if s == 2 else MASS)
        unit = MEASURES[r.choice([m for m in measures if m in ("cup", "glass", "bottle", "liter")] if s == 2 else measures)]
        n = self.count() if unit[0] in ("gram", "liter", "kilo") or s != 2 else r.randint(1, 12)
        en = f"{n} {unit[0] if n == 1 else unit[1]} of {mass_en}"
        fr = f"{fr_num(n, unit[4] == 'f')} {unit[2] if n == 1 else unit[3]} {elide_de(mass_fr)}"
        if s == 0:
            return en, fr
        s_en, s_fr, p, g = r.choice(SUBJECTS)
        if s == 1:
            forms = ("ai besoin", "avez besoin", "a besoin", "avons besoin", "ont besoin")
            return (f"{s_en} {_en_verb(p, 'need', 'needs')} {en}",
                    f"{_subj_verb(s_fr, forms[_P.index(p)])} {elide_de(fr)}")
        if s == 2:
            forms = ("bois", "buvez", "boit", "buvons", "boivent")
            return (f"{s_en} {_en_verb(p, 'drink', 'drinks')} {en} every day",
                    f"{_subj_verb(s_fr, forms[_P.index(p)])} {fr} par jour")
        forms = ("achète", "achetez", "achète", "achetons", "achètent")
        return f"{s_en} {_en_verb(p, 'buy', 'buys')} {en}", f"{_subj_verb(s_fr, forms[_P.index(p)])} {fr}"

    def t_duration(self):
        r = self.r
        s = r.randrange(6)
        allowed = [("minute", "hour", "day"), ("minute", "hour", "day", "week"), ("day", "week", "month", "year"),
                   ("minute", "hour", "day", "week", "month", "year"), ("minute", "hour", "day", "week", "month", "year"),
                   ("minute", "hour", "day", "week")][s]
        u = r.choice([x for x in UNITS_TIME if x[0] in allowed])
        n = self.count() if u[0] == "minute" and r.random() < 0.5 else r.randint(1, 60)
        if u[0] in ("hour", "day", "week", "month", "year") and r.random() < 0.6:
            n = r.randint(1, 12)
        dur_en = f"{n} {u[0] if n == 1 else u[1]}"
        dur_fr = f"{fr_num(n, u[4] == 'f')} {u[2] if n == 1 else u[3]}"
        if s == 0:
            ev_en, ev_fr = r.choice(EVENTS)
            return f"{ev_en} lasts {dur_en}", f"{ev_fr} dure {dur_fr}"
        s_en, s_fr, p, g = r.choice(SUBJECTS)
        if s == 1:
            return f"{s_en} waited {dur_en}", f"{_subj_verb(s_fr, AVOIR[_P.index(p)])} attendu {dur_fr}"
        if s == 2:
            c = r.choice(CITIES)
            return (f"{s_en} stayed {dur_en} in {c}",
                    f"{_subj_verb(s_fr, ETRE[_P.index(p)])} {_participle('resté', p, g)} {dur_fr} à {c}")
        if s == 3:
            return (f"{s_en} arrived {dur_en} ago",
                    f"{_subj_verb(s_fr, ETRE[_P.index(p)])} {_participle('arrivé', p, g)} il y a {dur_fr}")
        if s == 4:
            return (f"{s_en} worked for {dur_en}",
                    f"{_subj_verb(s_fr, AVOIR[_P.index(p)])} travaillé pendant {dur_fr}")
        ev = r.choice([("the train leaves", "le train part"), ("the bus arrives", "le bus arrive"),
                       ("the film starts", "le film commence"), ("we leave", "nous partons"),
                       ("the shop closes", "le magasin ferme")])
        return f"{ev[0]} in {dur_en}", f"{ev[1]} dans {dur_fr}"

    def t_date(self):
        r = self.r
        d_en, d_fr = self.date()
        s = r.randrange(9)
        if s == 0:
            return d_en, f"le {d_fr}"
        if s == 1:
            return f"on {d_en}", f"le {d_fr}"
        if s == 2:
            return f"my birthday is on {d_en}", f"mon anniversaire est le {d_fr}"
        if s == 3:
            ev_en, ev_fr = r.choice(EVENTS)
            return f"{ev_en} is on {d_en}", f"{ev_fr} est le {d_fr}"
        if s == 4:
            return f"today is {d_en}", f"aujourd'hui, nous sommes le {d_fr}"
        if s == 5:
            w_en, w_fr = r.choice(WEEKDAYS)
            d_en, d_fr = self.date(allow_year=False)
            return f"on {w_en}, {d_en}", f"le {w_fr} {d_fr}"
        if s == 6:
            s_en, s_fr, p, g = r.choice(SUBJECTS)
            forms = ("pars", "partez", "part", "partons", "partent")
            return f"{s_en} {_en_verb(p, 'leave', 'leaves')} on {d_en}", f"{_subj_verb(s_fr, forms[_P.index(p)])} le {d_fr}"
        if s == 7:
            y = r.randint(1900, 2030)
            s_en, s_fr, p, g = r.choice(SUBJECTS[:4] + SUBJECTS[6:])
            return (f"{s_en} {'was' if p != '2p' else 'were'} born in {y}",
                    f"{_subj_verb(s_fr, ETRE[_P.index(p)])} {_participle('né', p, g)} en {fr_num(y)}")
        m_en, m_fr, _ = r.choice(MONTHS)
        y = r.randint(1950, 2030)
        if r.random() < 0.5:
            return f"in {m_en} {y}", f"en {m_fr} {fr_num(y)}"
        return f"in {y}", f"en {fr_num(y)}"

    def t_time(self):
        r = self.r
        c_en, c_fr = self.clock()
        s = r.randrange(9)
        if s == 0:
            return f"it is {c_en}", f"il est {c_fr}"
        if s == 1:
            return f"at {c_en}", f"à {c_fr}"
        if s == 2:
            ev_en, ev_fr = r.choice(EVENTS)
            return f"{ev_en} starts at {c_en}", f"{ev_fr} commence à {c_fr}"
        if s == 3:
            s_en, s_fr, p, g = r.choice(SUBJECTS)
            forms = ("me réveille", "vous réveillez", "se réveille", "nous réveillons", "se réveillent")
            return f"{s_en} {_en_verb(p, 'wake', 'wakes')} up at {c_en}", f"{s_fr} {forms[_P.index(p)]} à {c_fr}"
        if s == 4:
            v = r.choice([("the train leaves", "le train part"), ("the shop opens", "le magasin ouvre"),
                          ("the shop closes", "le magasin ferme"), ("we eat", "nous mangeons"),
                          ("the bus arrives", "le bus arrive"), ("the museum opens", "le musée ouvre")])
            return f"{v[0]} at {c_en}", f"{v[1]} à {c_fr}"
        if s == 5:
            w_en, w_fr = r.choice(WEEKDAYS)
            ev_en, ev_fr = r.choice(EVENTS)
            return f"{ev_en} is on {w_en} at {c_en}", f"{ev_fr} est {w_fr} à {c_fr}"
        if s == 6:
            return f"see you tomorrow at {c_en}", f"à demain, à {c_fr}"
        if s == 7:
            c2_en, c2_fr = self.clock()
            return (f"the shop is open from {c_en} to {c2_en}",
                    f"le magasin est ouvert {elide_de(c_fr)} à {c2_fr}")
        d_en, d_fr = self.date(allow_year=False)
        ev_en, ev_fr = r.choice(EVENTS)
        return f"{ev_en} is on {d_en} at {c_en}", f"{ev_fr} est le {d_fr} à {c_fr}"

    def t_ordinal(self):
        r = self.r
        s = r.randrange(6)
        if s == 0:
            n = r.randint(1, 60)
            return f"on the {en_ordinal(n)} floor", f"au {fr_ordinal(n)} étage"
        if s == 1:
            n = r.randint(1, 12)
            side = r.choice([("left", "gauche"), ("right", "droite")])
            return f"take the {en_ordinal(n)} street on the {side[0]}", f"prenez la {fr_ordinal(n, True)} rue à {side[1]}"
        if s == 2:
            n = r.randint(1, 100)
            return f"it is the {en_ordinal(n)} time", f"c'est la {fr_ordinal(n, True)} fois"
        if s == 3:
            n = r.randint(1, 21)
            return f"in the {en_ordinal(n)} century", f"au {fr_ordinal(n)} siècle"
        if s == 4:
            n = self.count()
            return f"the {en_ordinal(n)} day", f"le {fr_ordinal(n)} jour"
        n = r.randint(1, 50)
        s_en, s_fr, p, g = r.choice(SUBJECTS[:4] + SUBJECTS[6:10])
        return (f"{s_en} finished {en_ordinal(n)}",
                f"{_subj_verb(s_fr, AVOIR[_P.index(p)])} fini {fr_ordinal(n, g == 'f')}")

    def t_math(self):
        r = self.r
        op = r.randrange(4)
        if op == 0:
            a, b = r.randint(0, 500), r.randint(0, 499)
            return f"{a} plus {b} equals {a + b}", f"{fr_num(a)} plus {fr_num(b)} égale {fr_num(a + b)}"
        if op == 1:
            a = r.randint(0, 999)
            b = r.randint(0, a)
            return f"{a} minus {b} equals {a - b}", f"{fr_num(a)} moins {fr_num(b)} égale {fr_num(a - b)}"
        if op == 2:
            a, b = r.randint(0, 31), r.randint(0, 31)
            return f"{a} times {b} equals {a * b}", f"{fr_num(a)} fois {fr_num(b)} égale {fr_num(a * b)}"
        b = r.randint(1, 20)
        c = r.randint(0, 40)
        return f"{b * c} divided by {b} equals {c}", f"{fr_num(b * c)} divisé par {fr_num(b)} égale {fr_num(c)}"

    def t_misc(self):
        r = self.r
        s = r.randrange(10)
        n = self.count() if r.random() < 0.8 else r.randint(0, 999)
        if s == 0:
            return f"{n}", fr_num(n)
        if s == 1:
            return f"number {n}", f"numéro {fr_num(n)}"
        if s == 2:
            return f"open your books at page {n}", f"ouvrez vos livres à la page {fr_num(n)}"
        if s == 3:
            return f"my room number is {n}", f"le numéro de ma chambre est {fr_num(n)}"
        if s == 4:
            return f"take bus {n}", f"prenez le bus {fr_num(n)}"
        if s == 5:
            p = r.randint(1, 100)
            return f"{p} percent of the students", f"{fr_num(p)} pour cent des étudiants"
        if s == 6:
            p = r.randint(1, 100)
            return f"prices went up by {p} percent", f"les prix ont augmenté {elide_de(fr_num(p))} pour cent"
        if s == 7:
            a, b = r.randint(0, 9), r.randint(0, 9)
            return f"the team won {a} to {b}", f"l'équipe a gagné {fr_num(a)} à {fr_num(b)}"
        if s == 8:
            a = r.randint(2, 100)
            b = a + r.randint(1, 100)
            return f"count from {a} to {b}", f"comptez {elide_de(fr_num(a))} à {fr_num(b)}"
        return (f"the house has {n} {'room' if n == 1 else 'rooms'}",
                f"la maison a {fr_num(n, True)} {'pièce' if n == 1 else 'pièces'}")


# (template, weight)
_TEMPLATES = [
    ("t_verb", 24), ("t_there", 7), ("t_np", 8), ("t_question", 2), ("t_age", 5), ("t_price", 6),
    ("t_temperature", 3), ("t_distance", 5), ("t_quantity", 6), ("t_duration", 7), ("t_date", 10),
    ("t_time", 11), ("t_ordinal", 4), ("t_math", 3), ("t_misc", 4),
]


def generate_pairs(n: int, seed: int = 0, max_attempts: int | None = None) -> list[tuple[str, str]]:
    """n distinct (english, french) pairs (distinct by English sentence), in generation order."""
    rng = random.Random(seed)
    gen = _Gen(rng)
    names = [t for t, _ in _TEMPLATES]
    weights = [w for _, w in _TEMPLATES]
    pairs: dict[str, str] = {}
    attempts = 0
    limit = max_attempts or 20 * n
    while len(pairs) < n and attempts < limit:
        attempts += 1
        name = rng.choices(names, weights)[0]
        en, fr = getattr(gen, name)()
        if en in pairs:
            if pairs[en] != fr:
                raise AssertionError(f"ambiguous source {en!r}: {pairs[en]!r} vs {fr!r}")
            continue
        pairs[en] = fr
    return list(pairs.items())


if __name__ == "__main__":
    import sys

    k = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    for en, fr in generate_pairs(k, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0):
        print(f"{en}\t{fr}")
