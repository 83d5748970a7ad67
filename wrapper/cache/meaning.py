"""Whether two questions that embed alike still ask different things: the checks similarity cannot make.

An embedding says two texts are about the same thing; it cannot see that "Is Dr. Okafor accepting new patients?"
and "... Dr. Okonkwo ..." ask about different people (cosine 0.86), nor "Mark it as read" and "... as unread"
(0.92). The semantic layer only compares questions of one bucket (the same slot values: numbers, dates, ids ...),
and then asks `differs` of the nearest one before it serves its answer. Two questions differ when:

- **their names differ**: a capitalised word inside a sentence, a word with inner capitals (`PostgreSQL`) or a word
  after a title (`Dr.`, `Mrs.`) in one that is not a word of the other (a possessive `'s` aside);
- **their counts or dates in words differ** (`three`/`four`, `second`/`third`, `tomorrow`/`friday`, `monthly`/`week`);
- **their polarity differs**: one negates (not, no, never, without, n't ...) an odd number of times and the other
  not; or a word of one has its opposite in the other, by prefix (`read`/`unread`, `agree`/`disagree`,
  `taxable`/`non-taxable`) or from the list of opposites below (`approve`/`reject`, `ascending`/`descending`);
- **each names a thing the other does not**: a word the model's vocabulary spells in three or more pieces
  (`ibuprofen`, `sitagliptin`: names of things, not ways of asking) only in one, and a rare word only in the other;
- **they are one sentence with one word swapped**: at least SKELETON of their words are shared in order, and what
  differs is a single place where a content word was replaced by another (`our marketing team` / `our sales
  team`). That word is the whole difference, and the similarity of the rest says nothing of it. Function words
  (FREE) and verbs of asking (`recommend`/`suggest`, `how do I`/`what are the steps to`) may be swapped. A
  rewording that changes two places or more is left to the embedding.

The word lists were written from a development pair set (tests/data/cache_pairs.yaml) and measured on a held-out
one (cache_pairs_heldout.yaml): bench/results/cache_accuracy.md. A pair these rules keep apart wrongly is a miss,
which costs a provider call; one they let through is a wrong answer, so they lean to keeping apart.
"""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher
from functools import lru_cache

SKELETON = 0.5  # share of words in common, in order, from which any changed content word tells the texts apart

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_TITLES = frozenset("dr mr mrs ms mx prof sir dame rev st".split())
_TITLED = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|Sir|Dame|Rev|St)\.?\s+([A-Z][\w'’-]*)")
_NAME = re.compile(r"(?<![.!?:]\s)(?<!^)(?<![.!?:])\b[A-Z][a-z]+[\w'’-]*|\b[a-zA-Z]+[a-z][A-Z][\w'’-]*")

_NEGATORS = frozenset("not no never none nothing nobody nowhere neither nor without cannot non undo revert rollback"
                      .split())
_NUMBER_WORDS = frozenset("""
zero two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion trillion
dozen dozens half double triple twice thrice
first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth last
""".split())
_DATE_WORDS = frozenset("""
today tonight tomorrow yesterday weekend weekday morning afternoon evening night noon midnight hour day week month
quarter year monday tuesday wednesday thursday friday saturday sunday january february march april june july
august september october november december spring summer autumn winter next previous
""".split())
_DATE_FORMS = {"daily": "day", "nightly": "night", "weekly": "week", "monthly": "month", "quarterly": "quarter",
               "yearly": "year", "annually": "year", "annual": "year", "hourly": "hour", "weekdays": "weekday",
               "weekends": "weekend", "days": "day", "weeks": "week", "months": "month", "years": "year",
               "hours": "hour", "nights": "night", "mornings": "morning", "evenings": "evening", "quarters": "quarter"}
_OPPOSITES = [tuple(pair.split("/")) for pair in """
enable/disable allow/deny allow/block allow/forbid permit/prohibit permit/forbid approve/reject approve/decline
accept/reject accept/decline grant/revoke grant/deny include/exclude add/remove add/delete insert/delete
create/delete open/close start/stop start/end begin/end pause/resume show/hide lock/unlock block/unblock
increase/decrease increase/reduce raise/lower rise/fall raise/cut gain/lose win/lose won/lost profit/loss
higher/lower high/low highest/lowest more/less more/fewer most/least max/min maximum/minimum above/below over/under
before/after early/late earlier/later first/last ascending/descending asc/desc upgrade/downgrade buy/sell
import/export upload/download send/receive inbound/outbound incoming/outgoing internal/external input/output
public/private required/optional mandatory/optional pass/fail passed/failed success/failure succeed/fail
true/false yes/no on/off in/out up/down for/against with/without can/cannot should/shouldn't keep/cancel
keep/delete renew/terminate renew/cancel apply/revert apply/undo merge/split join/leave hire/fire promote/demote
arrive/depart arrival/departure debit/credit income/expense positive/negative valid/invalid legal/illegal
like/dislike love/hate agree/disagree best/worst better/worse good/bad cheap/expensive cheapest/dearest
cheapest/priciest faster/slower fast/slow long/short longer/shorter big/small bigger/smaller large/small
larger/smaller old/new oldest/newest older/newer light/dark left/right north/south east/west full/empty
hot/cold present/absent online/offline connect/disconnect install/uninstall subscribe/unsubscribe
activate/deactivate encrypt/decrypt compress/decompress expand/collapse maximize/minimize allowlist/denylist
whitelist/blacklist mute/unmute arm/disarm freeze/unfreeze follow/unfollow pin/unpin hold/release attach/detach
include/omit always/never all/none everyone/nobody active/inactive visible/hidden edit/view read/write
""".split()]
_PREFIXES = ("un", "dis", "non", "in", "im", "il", "ir", "de", "anti", "mis")
# Verbs and question words that say how to answer rather than what about: a rewording swaps them freely
# (`recommend`/`suggest`, `how do I`/`what are the steps to`).
_REQUEST_VERBS = frozenset("""
get fetch pull retrieve obtain find check look see send forward email mail write draft compose prepare create make
set build put generate produce run execute explain describe tell show list give recommend suggest advise propose
reschedule move change update modify edit alter adjust fix resolve sort handle process do help assist teach learn
know mean say render translate rewrite convert work figure calculate compute determine estimate want wish need like
require summarize summarise outline walk plan organize organise arrange book schedule
what which how much many step process procedure method
""".split())
# Words a rewording adds, drops or swaps without changing what is asked: articles, pronouns, auxiliaries, courtesy.
_FREE = frozenset("""
a an the this that these those some any few several please kindly thanks thank just also really actually then so
now here
could can would will shall may might must do does did done doing is are was were be been being am have has had
i me my mine myself you your yours yourself we us our ours it its they them their i'm i'd i've i'll you're
you've we're we've it's there's that's what's let's let to of at by as into about tell give show help know want
need like ok okay hi hello hey there is get got go going way
""".split())


def differs(a: str, b: str) -> str | None:
    """Why two questions of one bucket ask different things (a short reason), or None when nothing tells them apart."""
    a, b = unicodedata.normalize("NFKC", a), unicodedata.normalize("NFKC", b)
    words_a, words_b = _words(a), _words(b)
    set_a, set_b = set(words_a), set(words_b)
    if _names(a) - set_b or _names(b) - set_a:
        return "name"
    if _counted(words_a, _NUMBER_WORDS) != _counted(words_b, _NUMBER_WORDS):
        return "number"
    if _dates(words_a) != _dates(words_b):
        return "date"
    if _negations(words_a) % 2 != _negations(words_b) % 2:
        return "negation"
    stems_a, stems_b = {_stem(w) for w in set_a}, {_stem(w) for w in set_b}
    if _opposed(stems_a, stems_b - stems_a) or _opposed(stems_b, stems_a - stems_b):
        return "opposite"  # `on` here, `off` only there (though `on` may be there too: "switch off ... on my plan")
    new_a = {w for w in set_a if _stem(w) not in stems_b}
    new_b = {w for w in set_b if _stem(w) not in stems_a}
    if _rare(new_a, 3) and _rare(new_b, 2) or _rare(new_b, 3) and _rare(new_a, 2):
        return "entity"
    return _changed_content(words_a, words_b)


def _words(text: str) -> list[str]:
    """Its words, case folded, a possessive `'s` dropped (`Hamlet's plot` names Hamlet)."""
    return [w.casefold().replace("’", "'").removesuffix("'s") for w in _WORD.findall(text)]


def _names(text: str) -> set[str]:
    found = {m.group(1) for m in _TITLED.finditer(text)} | set(_NAME.findall(text))
    return {w for name in found for w in _words(name)} - _TITLES


def _counted(words: list[str], vocabulary: frozenset) -> list[str]:
    return sorted(w for w in words if w in vocabulary)


def _dates(words: list[str]) -> set[str]:
    return {_DATE_FORMS.get(w, w) for w in words} & _DATE_WORDS


def _negations(words: list[str]) -> int:
    return sum(1 for w in words if w in _NEGATORS or w.endswith("n't"))


@lru_cache(maxsize=4096)
def _stem(word: str) -> str:
    """A crude English stem, enough to see `resetting`, `resets` and `reset` as one word."""
    word = word.removesuffix("'s")
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiousl":
        word = word[:-1]
    return word.removesuffix("e") if len(word) > 3 else word


@lru_cache(maxsize=1)
def _tokenizer():
    from tokenizers import Tokenizer

    from wrapper.cache.embedding import model_dir

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


@lru_cache(maxsize=8192)
def _pieces(word: str) -> int:
    return len(_tokenizer().encode(word, add_special_tokens=False).tokens)


def _rare(words: set[str], pieces: int) -> bool:
    """A word the model's vocabulary spells in `pieces` or more parts (`ibuprofen`: ib ##up ##ro ##fen) is a name of
    something, not a way of asking: one such word in each text, not in the other, names two different things."""
    return any(w.isalpha() and _pieces(w) >= pieces for w in words)


def _opposites() -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    for x, y in _OPPOSITES:
        table.setdefault(_stem(x), set()).add(_stem(y))
        table.setdefault(_stem(y), set()).add(_stem(x))
    return table


_OPPOSITE = _opposites()


def _opposed(here: set[str], only_there: set[str]) -> bool:
    for word in here:
        if _OPPOSITE.get(word, set()) & only_there:
            return True
        for prefix in _PREFIXES:  # `unread` here, `read` there
            if word.startswith(prefix) and len(word) - len(prefix) >= 3 and word[len(prefix):] in only_there:
                return True
    return False


def _changed_content(words_a: list[str], words_b: list[str]) -> str | None:
    matcher = SequenceMatcher(None, words_a, words_b, autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    if 2 * same < SKELETON * (len(words_a) + len(words_b)):
        return None  # a rewording: the embedding judges it
    changes, removed, added = [], set(), set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            here = {_stem(w) for w in words_a[i1:i2] if w not in _FREE}
            there = {_stem(w) for w in words_b[j1:j2] if w not in _FREE}
            changes.append((here, there))
            removed |= here
            added |= there
    moved = removed & added  # a word said elsewhere in the other text
    changed = [(here - moved, there - moved) for here, there in changes]
    changed = [(here, there) for here, there in changed if here or there]
    if len(changed) == 1:
        here, there = changed[0]
        if here and there and not (here | there) <= _REQUEST_STEMS:
            return "wording"  # one word swapped for another, the rest the same: that word is the difference
    return None


_REQUEST_STEMS = frozenset(_stem(w) for w in _REQUEST_VERBS)
