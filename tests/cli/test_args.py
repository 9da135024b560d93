"""ApisCP argument syntax: what cpcmd turns each shell word into."""

import pytest

from apiserver.cli.args import ArgumentSyntaxError, infer, parse_argument, parse_arguments


@pytest.mark.parametrize("word, value", [
    ("null", None), ("true", True), ("false", False),
    ("42", 42), ("-7", -7), ("0", 0), ("1.5", 1.5), ("2e3", 2000.0),
    ("007", "007"), ("10.1.2.3", "10.1.2.3"), ("1.", "1."),
    ("hello", "hello"), ("a@b.c", "a@b.c"), ("2001:db8::/32", "2001:db8::/32"), ("::1", "::1"),
    ("two words", "two words"), ("key-name", "key-name"), ("", ""), ("NULL", "NULL"),
])
def test_plain_words_are_typed_like_apiscp(word, value):
    """A plain word becomes null/bool/number when it reads as one, else stays the exact string."""
    result = parse_argument(word)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize("word, value", [
    ('"123"', "123"), ("'null'", "null"), ('"two words"', "two words"), ("'it\\'s'", "it's"),
    ('"a\\\\b"', "a\\b"), ('""', ""),
])
def test_quoted_words_are_always_strings(word, value):
    """Quotes force a string and a backslash escapes the next character inside them."""
    assert parse_argument(word) == value


def test_plain_word_outside_brackets_keeps_backslashes():
    """A bare word is verbatim, so Windows-style paths and regexes are not mangled."""
    assert parse_argument("C:\\dir\\n") == "C:\\dir\\n"


@pytest.mark.parametrize("word, value", [
    ("[a,b,c]", ["a", "b", "c"]),
    ("[1,2.5,true,null]", [1, 2.5, True, None]),
    ("[id:1234,key:key-name]", {"id": 1234, "key": "key-name"}),
    ("[ ip : ::1 , gate : UI ]", {"ip": "::1", "gate": "UI"}),
    ("[a:[b:1,c:[1,2]]]", {"a": {"b": 1, "c": [1, 2]}}),
    ("[[1,2],[3]]", [[1, 2], [3]]),
    ("[]", []), ("[:]", {}), ("[ : ]", {}),
    ('["a,b", c\\]d]', ["a,b", "c]d"]),
    ('["k:1":v]', {"k:1": "v"}),
    ('[ip:"2001:db8::1"]', {"ip": "2001:db8::1"}),
    ("[a\\,b]", ["a,b"]), ("[x:]", {"x": ""}), ("[a,,b]", ["a", "", "b"]),
    ("[n:'5']", {"n": "5"}), ("[n:\\5]", {"n": "5"}),
])
def test_lists_and_hashes(word, value):
    """Brackets make lists or hashes, nest, and honour quotes and escapes."""
    assert parse_argument(word) == value


def test_seed_geoip_example():
    """The seed's scope:set auth.geoip-key argument parses to the hash it means."""
    assert parse_argument("[id:1234,key:key-name]") == {"id": 1234, "key": "key-name"}


@pytest.mark.parametrize("word, position, fragment", [
    ("[a:b", 4, "unclosed '['"),
    ("[a,b", 4, "unclosed '['"),
    ("[", 1, "unclosed '['"),
    ('"abc', 4, "unbalanced quote"),
    ("'abc", 4, "unbalanced quote"),
    ('[a:"x]', 6, "unbalanced quote"),
    ("[a:b]x", 5, "text after the closing ']'"),
    ("[a,b:c]", 3, "a list item and a key:value pair"),
    ('[a"b]', 2, "quote"),
    ("[a[b]", 2, "'[' inside a word"),
    ('"a"b', 3, "text after the closing quote"),
    ("[a]]", 3, "text after the closing ']'"),
    ('"abc\\', 5, "backslash"),
])
def test_malformed_input_names_the_position(word, position, fragment):
    """Malformed arguments raise ArgumentSyntaxError with the offset and a readable reason."""
    with pytest.raises(ArgumentSyntaxError) as info:
        parse_argument(word)
    assert info.value.position == position
    assert fragment in str(info.value)
    assert word in str(info.value)


def test_error_message_points_at_the_fault():
    """The message shows the argument and a caret under the faulty character."""
    with pytest.raises(ArgumentSyntaxError) as info:
        parse_argument("[a:b]x")
    lines = str(info.value).splitlines()
    assert lines[1].strip() == "[a:b]x"
    assert lines[2].index("^") == lines[1].index("x")


def test_parse_arguments_names_the_argument_number():
    """With several words, the error says which argument is wrong."""
    assert parse_arguments(["10.1.2.3", "UI"]) == ["10.1.2.3", "UI"]
    with pytest.raises(ArgumentSyntaxError, match="argument 2"):
        parse_arguments(["ok", "[a:b"])


def test_infer_leaves_non_numbers_alone():
    """infer types only exact spellings of null/true/false and numbers."""
    assert infer("True") == "True"
    assert infer("+5") == 5
    assert infer("1e") == "1e"
