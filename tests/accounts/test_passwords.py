"""Password hashing: PBKDF2 format, SHA512-crypt test vectors, policy, generated passwords."""

from __future__ import annotations

import string

import pytest

from apiserver.accounts import passwords

# Ulrich Drepper's SHA-crypt specification, SHA-512 test vectors (setting, key, result).
SHA512_CRYPT_VECTORS = [
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("$6$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("$6$rounds=77777$short", "we have a short salt string but not a short password",
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"),
    ("$6$rounds=123456$asaltof16chars..", "a short string",
     "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."),
]


@pytest.mark.parametrize("setting,key,expected", SHA512_CRYPT_VECTORS)
def test_sha512_crypt_matches_specification_vectors(setting, key, expected):
    """The pure-Python SHA512-crypt reproduces every published test vector."""
    assert passwords.sha512_crypt(key.encode(), setting) == expected


@pytest.mark.parametrize("setting,key,expected", SHA512_CRYPT_VECTORS[:3])
def test_legacy_hashes_verify_and_need_rehash(setting, key, expected):
    """A seed hash accepts its password, refuses others and is marked for upgrade."""
    assert passwords.verify_password(key, expected)
    assert not passwords.verify_password(key + "x", expected)
    assert passwords.needs_rehash(expected, 1000)


def test_pbkdf2_hash_is_self_describing_and_salted():
    """New hashes name scheme and iterations, differ per salt and verify only the right password."""
    first = passwords.hash_password("correct horse", 1500)
    second = passwords.hash_password("correct horse", 1500)
    assert first.startswith("$pbkdf2-sha512$1500$") and first != second
    assert passwords.verify_password("correct horse", first)
    assert not passwords.verify_password("correct horsE", first)
    assert not passwords.needs_rehash(first, 1500)
    assert passwords.needs_rehash(first, 2000)


@pytest.mark.parametrize("stored", [None, "", "plaintext", "$pbkdf2-sha512$x$y$z", "$pbkdf2-sha512$1000$!!$!!",
                                    "$6$rounds=abc$salt$hash", "$pbkdf2-sha512$0$c2FsdA$aGFzaA"])
def test_malformed_stored_hashes_never_verify(stored):
    """Garbage in the password column refuses every password instead of raising."""
    assert passwords.verify_password("anything", stored) is False


def test_overlong_password_is_refused_without_hashing():
    """A password past the limit fails verification and the policy (SHA512-crypt is quadratic in length)."""
    huge = "a" * (passwords.MAX_PASSWORD_LENGTH + 1)
    assert passwords.verify_password(huge, SHA512_CRYPT_VECTORS[0][2]) is False
    assert "too long" in passwords.policy_violation(huge, 7)


def test_policy_names_the_minimum_length():
    """A short password is refused with a message naming the minimum and the actual length."""
    assert passwords.policy_violation("abc", 7) == "password too short: it must have at least 7 characters, it has 3"
    assert passwords.policy_violation("abcdefg", 7) is None
    assert "NUL" in passwords.policy_violation("abc\x00defg", 7)


def test_generated_passwords_are_16_alphanumerics_and_random():
    """Generated passwords use a-zA-Z0-9, 16 characters unless asked otherwise, and do not repeat."""
    generated = {passwords.generate_password() for _ in range(200)}
    assert len(generated) == 200
    allowed = set(string.ascii_letters + string.digits)
    assert all(len(p) == 16 and set(p) <= allowed for p in generated)
    assert len(passwords.generate_password(30)) == 30
