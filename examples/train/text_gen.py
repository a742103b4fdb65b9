"""Makes English sentences for synthesis from fixed word lists and templates, with a seeded RNG.

Only letters, apostrophes and spaces: the model's alphabet. Half of the sentences follow simple
grammar templates, the rest are random word sequences, so the model learns spelling, not a
language model.
"""
import random

DET = "the a this that my your his her our their every some one each no another any".split()
ADJ = """big small old new young long short good bad great little high low early late hard easy
strong weak warm cold hot cool dark bright clean dirty quiet loud happy sad rich poor full empty
heavy light fast slow soft rough sweet bitter fresh green red blue yellow black white brown grey
pink purple golden silver wooden broken open closed simple strange famous careful clever brave
calm busy lazy angry gentle honest kind proud wild tall wide deep narrow thin thick round flat
sharp smooth wet dry real true certain public private local foreign ancient modern final whole
tiny huge lovely ugly pretty friendly lonely curious nervous serious tired hungry thirsty""".split()
NOUN = """man woman child boy girl friend teacher doctor driver farmer king queen baker sailor
student mother father sister brother uncle aunt neighbour family people dog cat horse bird fish
cow sheep mouse lion tiger bear wolf fox rabbit duck house home room door window wall floor roof
garden kitchen table chair bed lamp clock book letter paper pen box bag cup glass plate bottle
bread milk water tea coffee cheese apple orange lemon cake soup rice egg meat sugar salt car bus
train ship boat plane bicycle road street bridge river lake sea ocean island mountain hill forest
tree flower grass leaf stone rock sand field farm village town city country world sun moon star
sky cloud rain snow wind storm fire light night morning evening day week month year summer winter
spring autumn school office shop market church hospital station library museum park game song
story music picture film word name voice question answer idea plan problem reason money price
market job work party meeting journey holiday dinner lunch breakfast coat hat shoe shirt dress
key ring phone computer machine engine wheel map ticket gift garden island castle tower palace
wall fence gate path corner edge island valley desert beach harbour captain soldier painter
writer singer dancer pilot nurse lawyer judge thief guard stranger visitor guest crowd army team
""".split()
NAME = """john mary peter susan james linda robert sarah david emma thomas anna michael lucy daniel
kate paul alice george helen william laura henry grace edward clara oliver rose jack ellen""".split()
VERB_T = """saw found took made gave kept left held brought bought sold sent told asked helped
opened closed moved carried pushed pulled watched heard loved liked wanted needed used painted
washed cleaned cooked ate drank read wrote drew built broke fixed lost won caught threw chose
visited followed answered called met knew forgot remembered noticed counted measured covered
filled emptied lifted dropped hid showed taught learned""".split()
VERB_I = """slept walked ran jumped laughed smiled cried waited arrived left stayed returned
danced sang swam climbed fell rose shouted listened worked played travelled rested agreed
disappeared appeared stopped started continued""".split()
VERB_BASE = """see find take make give keep hold bring buy sell send tell ask help open close
move carry push pull watch hear love like want need use paint wash clean cook eat drink read
write draw build fix lose win catch throw choose visit follow answer call meet know forget
remember notice count measure cover fill lift drop hide show teach learn""".split()
ADV = """quickly slowly quietly loudly carefully happily sadly suddenly finally often never
always sometimes usually soon later today yesterday tomorrow again together alone early late
outside inside upstairs downstairs away back here there almost nearly really""".split()
PREP = "in on under over near behind beside across through into from to with without after before during around along".split()
AUX = "will can could should would might must may".split()
PRON = "i you he she we they it".split()
CONJ = "and but so because while when although until".split()
EXTRA = """don't can't won't isn't didn't it's i'm you're we're they're that's there's what's
let's wasn't aren't haven't couldn't wouldn't shouldn't what where when why how who which
yes no not very too also only just still even first second third last next other same
many much more most few less least all both half several enough once twice one two three
four five six seven eight nine ten eleven twelve twenty thirty hundred thousand million
about above against between among beyond toward within upon because whether however therefore
perhaps maybe please thank thanks hello goodbye sorry welcome morning afternoon tonight
something nothing everything anything someone everyone nobody somewhere everywhere nowhere
""".split()

VOCAB = sorted(set(DET + ADJ + NOUN + NAME + VERB_T + VERB_I + VERB_BASE + ADV + PREP + AUX
                   + PRON + CONJ + EXTRA))


def _np(r):
    if r.random() < 0.2:
        return r.choice(NAME)
    n = r.choice(NOUN)
    if r.random() < 0.5:
        n = r.choice(ADJ) + " " + n
    return r.choice(DET) + " " + n


def _clause(r):
    k = r.randrange(6)
    if k == 0:
        s = f"{_np(r)} {r.choice(VERB_T)} {_np(r)}"
    elif k == 1:
        s = f"{_np(r)} {r.choice(VERB_I)} {r.choice(PREP)} {_np(r)}"
    elif k == 2:
        s = f"{r.choice(PRON)} {r.choice(AUX)} {r.choice(VERB_BASE)} {_np(r)}"
    elif k == 3:
        s = f"{_np(r)} {r.choice(VERB_I)} {r.choice(ADV)}"
    elif k == 4:
        s = f"{r.choice(PRON)} {r.choice(VERB_T)} {_np(r)} {r.choice(PREP)} {_np(r)}"
    else:
        s = f"{r.choice(EXTRA)} {_np(r)} {r.choice(VERB_T)} {r.choice(EXTRA)}"
    return s


def sentence(r, max_words=22):
    """One sentence: a template sentence or a random word sequence."""
    if r.random() < 0.5:
        s = _clause(r)
        while r.random() < 0.45 and len(s.split()) < max_words - 8:
            s += " " + r.choice(CONJ) + " " + _clause(r)
    else:
        s = " ".join(r.choice(VOCAB) for _ in range(r.randint(2, max_words)))
    return " ".join(s.split()[:max_words])


def sentences(seed, n, exclude=()):
    """n distinct sentences from a seeded RNG, none of them in `exclude`."""
    r = random.Random(seed)
    seen = set(exclude)
    out = []
    while len(out) < n:
        s = sentence(r)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def edit_distance(a, b):
    """Levenshtein distance between two sequences (for character error rates)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


if __name__ == "__main__":
    print(len(VOCAB), "words")
    for s in sentences(1, 8):
        print(s)
