"""The one reader of boolean text: both vocabularies, case and white space, and what it refuses."""

from apiserver.booleans import BOOLEAN_WORDS, XSD_BOOLEAN, parse_boolean


def test_words_people_type_are_read():
    """config.ini and cpcmd words: true/1/yes/on and false/0/no/off, in any case, with spaces around."""
    assert [parse_boolean(w) for w in ("true", " YES ", "On", "1")] == [True] * 4
    assert [parse_boolean(w) for w in ("false", "No", " off", "0")] == [False] * 4
    assert parse_boolean("maybe", BOOLEAN_WORDS) is None


def test_xsd_vocabulary_takes_only_true_false_one_zero():
    """xsd:boolean and XML-RPC allow true/1/false/0; yes/on are no booleans there."""
    words = ("true", "TRUE", "1", "false", "0")
    assert [parse_boolean(w, XSD_BOOLEAN) for w in words] == [True, True, True, False, False]
    assert [parse_boolean(w, XSD_BOOLEAN) for w in ("yes", "on", "", "2")] == [None] * 4
