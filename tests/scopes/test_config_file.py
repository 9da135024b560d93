"""config_file: in-place edits of a real config.ini that keep comments and order, written atomically."""

import os
import stat

import pytest

from apiserver.config import load_config
from apiserver.config_file import edit_text, format_value, set_values

ORIGINAL = """\
; apiserver configuration
; (comments and order must survive)

[soap]
enabled = true    ; the API toggle
max_body_size=1048576

# anvil
[anvil]
limit = 20
whitelist = 127.0.0.1, 10.0.0.0/8

[frontend]
bind = 127.0.0.1
"""


@pytest.fixture
def config_file(tmp_path):
    """A real config.ini with comments, odd spacing and inline comments, mode 0640."""
    path = tmp_path / "config.ini"
    path.write_text(ORIGINAL, encoding="utf-8")
    os.chmod(path, 0o640)
    return str(path)


def read(path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_existing_key_keeps_spacing_comment_and_order(config_file):
    """Changing a key rewrites only its value; every other byte stays."""
    set_values(config_file, [("soap", "enabled", "false"), ("anvil", "limit", "5")])
    expected = ORIGINAL.replace("enabled = true    ; the API toggle", "enabled = false    ; the API toggle")
    assert read(config_file) == expected.replace("limit = 20", "limit = 5")
    config = load_config(config_file)
    assert (config.get("soap", "enabled"), config.get("anvil", "limit")) == (False, 5)


def test_new_key_goes_after_its_section_and_new_section_at_end(config_file):
    """A missing key is added after the section's last key; a missing section is appended."""
    set_values(config_file, [("anvil", "ttl", "60"), ("session", "ttl", "120")])
    text = read(config_file)
    assert "whitelist = 127.0.0.1, 10.0.0.0/8\nttl = 60\n\n[frontend]" in text
    assert text.endswith("bind = 127.0.0.1\n\n[session]\nttl = 120\n")
    assert load_config(config_file).get("session", "ttl") == 120


def test_write_keeps_mode_and_leaves_no_temp_file(config_file):
    """The replacement has the original's permissions and no temporary file remains."""
    set_values(config_file, [("frontend", "bind", "::1")])
    assert stat.S_IMODE(os.stat(config_file).st_mode) == 0o640
    assert os.listdir(os.path.dirname(config_file)) == ["config.ini"]


def test_symlinked_config_stays_a_link(config_file, tmp_path):
    """config.ini linked from elsewhere: the linked file is replaced, the link stays a link."""
    link = tmp_path / "linked.ini"
    link.symlink_to(config_file)
    set_values(str(link), [("anvil", "limit", "9")])
    assert link.is_symlink() and "limit = 9\n" in read(config_file)
    assert sorted(os.listdir(tmp_path)) == ["config.ini", "linked.ini"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_owner_and_group_are_kept(config_file):
    """A config.ini owned by another account keeps its owner and group after an edit by root."""
    os.chown(config_file, 65534, 65534)
    set_values(config_file, [("anvil", "limit", "8")])
    info = os.stat(config_file)
    assert (info.st_uid, info.st_gid) == (65534, 65534)


def test_failed_check_leaves_original_untouched(config_file):
    """When the check of the candidate file fails, the original and its inode are unchanged."""
    inode = os.stat(config_file).st_ino
    seen = []

    def check(candidate):
        seen.append(read(candidate))
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        set_values(config_file, [("anvil", "limit", "1")], check=check)
    assert "limit = 1\n" in seen[0]
    assert read(config_file) == ORIGINAL
    assert os.stat(config_file).st_ino == inode
    assert os.listdir(os.path.dirname(config_file)) == ["config.ini"]


def test_rename_replaces_inode(config_file):
    """A successful write is a rename of a new file, never an in-place truncate."""
    inode = os.stat(config_file).st_ino
    set_values(config_file, [("anvil", "limit", "7")])
    assert os.stat(config_file).st_ino != inode


@pytest.mark.parametrize("value, reason", [
    ("a\nb", "single line"), ("x ; y", "comment"), (" padded", "white space"),
])
def test_values_that_cannot_be_one_ini_value_are_refused(value, reason):
    """Multi-line values, embedded comments and padding are refused before anything is written."""
    with pytest.raises(ValueError, match=reason):
        edit_text(ORIGINAL, "soap", "enabled", value)


def test_crlf_files_stay_crlf():
    """A file with Windows line ends gets its new line with the same ends."""
    text = "[soap]\r\nenabled = true\r\n"
    assert edit_text(text, "soap", "max_body_size", "2048") == "[soap]\r\nenabled = true\r\nmax_body_size = 2048\r\n"


def test_format_value_spells_ini_values():
    """Booleans, lists and null are written the way config.ini spells them."""
    assert [format_value(v) for v in (True, False, ["a", "b"], None, 5)] == ["true", "false", "a,b", "", "5"]


@pytest.mark.parametrize("value", [
    ";starts-like-a-comment", "#hash", "a;b", "a=b", "x:y", "%(home)s", "[soap]", "caf\u00e9", "a\tb",
    "form\x0cfeed", "line\u2028separator", "next\x85line", "bell\x07",
])
def test_every_written_value_reads_back_as_written_or_is_refused(tmp_path, value):
    """What edit_text writes, start-up reads back exactly; what it cannot write that way it refuses."""
    path = tmp_path / "config.ini"
    path.write_text(ORIGINAL, encoding="utf-8")
    try:
        text = edit_text(ORIGINAL, "mail", "sender", value)
    except ValueError:
        return
    path.write_text(text, encoding="utf-8")
    assert load_config(str(path)).get("mail", "sender") == value


def test_lines_split_where_configparser_splits(tmp_path):
    """A form feed or U+2028 in a key's comment is no line end: the edit keeps the line whole."""
    text = "[mail]\nsender = a@example.com ; note\x0cwith\u2028odd breaks\n"
    edited = edit_text(text, "mail", "sender", "b@example.com")
    assert edited == text.replace("a@example.com", "b@example.com")
    path = tmp_path / "config.ini"
    path.write_text(edited, encoding="utf-8")
    assert load_config(str(path)).get("mail", "sender") == "b@example.com"
