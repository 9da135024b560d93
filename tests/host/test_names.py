"""Host-level names of sites' groups and users."""

import pytest

from apiserver.host import names


def test_group_and_user_names_follow_apiscp():
    """Site 12's group is admin12 and its user bob is bob.12 (prefixed when a prefix is set)."""
    assert names.group_name(12) == "admin12"
    assert names.host_user_name(12, "bob") == "bob.12"
    assert names.group_name(12, "t1") == "t1-admin12"
    assert names.host_user_name(12, "bob", "t1") == "t1-bob.12"
    assert names.site_dir_name(12) == "site12" and names.admin_link_name(12) == "admin12"


def test_names_are_unique_across_sites_and_users():
    """A dotted user name in one site never collides with a plain one in another."""
    made = {names.host_user_name(site, user) for site in (1, 2, 12, 21) for user in ("bob", "bob.2", "bob.1", "b")}
    assert len(made) == 16


def test_long_names_fit_in_32_characters_and_stay_distinct():
    """A 32-character user name is shortened with a digest: at most 32 characters, still unique."""
    a, b = "a" * 31 + "x", "a" * 31 + "y"
    first, second = names.host_user_name(123456, a, "t0123456789"), names.host_user_name(123456, b, "t0123456789")
    assert len(first) <= 32 and len(second) <= 32 and first != second
    assert first.endswith(".123456") and first.startswith("t0123456789-aaa")


@pytest.mark.parametrize("bad", [0, -1, True, "3", 1.5])
def test_a_site_number_must_be_a_positive_integer(bad):
    """Anything but a positive integer is refused as a site number."""
    with pytest.raises(ValueError):
        names.group_name(bad)


def test_prefix_rules():
    """A prefix is empty or a lower-case letter then letters or digits, at most 10 characters."""
    assert names.prefix_problem("") is None and names.prefix_problem("t0abc") is None
    for bad in ("T1", "1a", "a-b", "abcdefghijk", "a.b"):
        assert names.prefix_problem(bad)
